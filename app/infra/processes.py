"""Child processes of the embedded parts: starting them in their own session, waiting
until they answer, stopping them (and their process group), and the state files under
DATA_DIR/run that let several `groundwork` processes share one running part."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import secrets
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class EmbeddedError(RuntimeError):
    """An embedded part could not be started; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def stop_process(
    pid: int,
    sig: int,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    group: bool = True,
    timeout: float = STOP_TIMEOUT_S,
) -> None:
    """Send `sig` to the process group led by `pid` (or, with `group=False`, to the leader
    alone, which then stops its children itself), wait, then SIGKILL the group if it lingers."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if proc is None and not pid_alive(pid):
            break
        time.sleep(0.05)
    else:
        log.warning("process %s did not stop within %ss; killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=10)
    # Children of the group (Celery pool processes) may outlive their leader briefly.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux: /proc/<pid>/task/*/children)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children.extend(int(c) for c in task.read_text().split())
    return children


def wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    """Until no process of the group is left (killed children take a moment to go)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def wait_until(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log_path: Path):
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"{what} exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    stop_process(proc.pid, signal.SIGKILL, proc)
    raise EmbeddedError(f"{what} did not start within {START_TIMEOUT_S:.0f}s:\n{tail(log_path)}")


class Registry:
    """State files under DATA_DIR/run: which process serves a part and who is using it."""

    def __init__(self, data_dir: Path):
        self.dir = data_dir / "run"
        self.dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        with open(self.dir / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self, name: str) -> dict | None:
        try:
            return json.loads((self.dir / f"{name}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write(self, name: str, state: dict) -> None:
        tmp = self.dir / f"{name}.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.dir / f"{name}.json")

    def remove(self, name: str) -> None:
        (self.dir / f"{name}.json").unlink(missing_ok=True)


def package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it (pgserver's import has effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"the package {name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def run_as_unprivileged_user(pgdata: Path, install_dir: Path) -> pwd.struct_passwd | None:
    """Postgres refuses to run as root. As root, run it as a system user `pgserver` (made if
    missing, as the pgserver package does) that can reach the binaries and owns the data."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("pgserver")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "pgserver"], check=True)
        entry = pwd.getpwnam("pgserver")
    traverse = stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
    for path in [*pgdata.parents, *install_dir.parents]:
        mode = path.stat().st_mode
        if mode & traverse != traverse:
            path.chmod(mode | traverse)
    for path in install_dir.rglob("*"):
        mode = path.stat().st_mode
        if mode & traverse != traverse and not path.is_symlink():
            path.chmod(mode | traverse)
    if pgdata.stat().st_uid != entry.pw_uid:
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    return entry


def secret_file(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16))
    return path.read_text().strip()
