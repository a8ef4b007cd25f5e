"""Starting and stopping a Celery worker process (for `serve`, `ingest --wait`, the evals and
the tests)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from app.config import Settings
from app.infra.processes import EmbeddedError, pid_alive, stop_process, tail, wait_group_gone
from app.jobs import workers_answering

log = logging.getLogger(__name__)
WARM_STOP_S = 60.0  # a pool process hands its documents back within one embedding slice


class WorkerProcess:
    """One `celery worker` child in its own process group, stopped with its pool."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str | None = None,
        env: dict[str, str] | None = None,
        queues: list[str] | None = None,
    ):
        self.settings = settings
        self.queues = queues
        self.name = name or f"groundwork-{uuid.uuid4().hex[:8]}@localhost"
        self.env = {**settings.child_env(), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = settings.data_path / "logs" / "worker.log"

    def start(self, wait: bool = True) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stop_orphans(self.settings)
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app:celery_app",
            "worker",
            "--loglevel",
            self.settings.log_level,
            "--concurrency",
            str(self.settings.worker_concurrency),
            "--hostname",
            self.name,
            "--without-gossip",
            "--without-mingle",
        ]
        if self.queues:
            argv += ["--queues", ",".join(self.queues)]
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._record().write_text(json.dumps({"owner": os.getpid(), "name": self.name}))
        if wait:
            self.wait_ready()
        return self

    def _record(self) -> Path:
        assert self.proc is not None
        return records_folder(self.settings) / f"{self.proc.pid}.json"

    def wait_ready(self, timeout: float = 90.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedError(f"the Celery worker exited:\n{tail(self.log_path)}")
            if self.name in workers_answering(timeout=1.0):
                log.info("worker %s is ready", self.name)
                return
        self.stop()
        raise EmbeddedError(f"the Celery worker did not answer in {timeout:.0f}s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """Celery's warm shutdown: SIGTERM to the main process alone, which stops taking
        tasks and tells its pool processes to hand back the documents they hold (see
        `worker.celery_app`); the group is killed if it lingers past WARM_STOP_S."""
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc.pid, signal.SIGTERM, self.proc, group=False, timeout=WARM_STOP_S)
        if self.proc is not None:
            self._record().unlink(missing_ok=True)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> None:
        """After the worker died: what is left of its group is killed, a new one starts."""
        if self.proc is not None:
            stop_process(self.proc.pid, signal.SIGKILL, self.proc)
            wait_group_gone(self.proc.pid)
            self._record().unlink(missing_ok=True)
        self.start(wait=False)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def records_folder(settings: Settings) -> Path:
    """Where each worker started from this data directory is recorded (pid, the process that
    started it, its name), so that one left behind can be found."""
    folder = settings.data_path / "run" / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _is_worker(pid: int, name: str) -> bool:
    """The process is that Celery worker still (not another that took its pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"celery" in argv and name.encode() in argv


def stop_orphans(settings: Settings) -> list[int]:
    """Stop the workers that processes of this data directory started and left behind (the
    process that started one was killed before it could stop it: `serve` after SIGKILL),
    warm, so that they hand their documents back; a new start then runs one worker, not
    two. Returns their pids."""
    stopped = []
    for record in records_folder(settings).glob("*.json"):
        try:
            pid = int(record.stem)
            info = json.loads(record.read_text())
            owner, name = int(info["owner"]), str(info["name"])
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)
            continue
        if pid_alive(owner):
            continue  # its process still runs it
        if pid_alive(pid) and _is_worker(pid, name):
            log.warning(
                "stopping worker %s (pid %s): the process that started it is gone", name, pid
            )
            stop_process(pid, signal.SIGTERM, group=False, timeout=WARM_STOP_S)
            stopped.append(pid)
        record.unlink(missing_ok=True)
    return stopped
