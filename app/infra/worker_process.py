"""Starting and stopping a Celery worker process (for `serve`, `ingest --wait`, the evals and
the tests)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import uuid

from app.config import Settings
from app.infra.processes import EmbeddedError, stop_process, tail, wait_group_gone
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
        if wait:
            self.wait_ready()
        return self

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
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> None:
        """After the worker died: what is left of its group is killed, a new one starts."""
        if self.proc is not None:
            stop_process(self.proc.pid, signal.SIGKILL, self.proc)
            wait_group_gone(self.proc.pid)
        self.start(wait=False)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
