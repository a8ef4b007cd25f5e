"""What every command shares: the one-line error, and the running parts it works against."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

from app.config import Settings, get_settings, use_settings
from app.infra.supervisor import Supervisor

log = logging.getLogger("groundwork")


class CliError(Exception):
    """Printed as one line on stderr; exit status 2."""


@contextlib.contextmanager
def running_parts(
    *, worker: bool = False, llm: bool = False, supervisor: Supervisor | None = None
) -> Iterator[Settings]:
    """Settings whose URLs point at running parts (joined or started), the schema at head,
    Celery configured, and (with `worker`) a worker answering: ours if none does. With a
    `supervisor`, each part this process starts is watched and restarted if it dies."""
    from app import jobs
    from app.db import migrate
    from app.infra.parts import EmbeddedParts
    from app.infra.worker_process import WorkerProcess

    settings = get_settings()
    with EmbeddedParts(settings) as parts:
        resolved = parts.start(llm=llm)
        if supervisor is not None:
            for kind, part in parts.owned():
                supervisor.watch(
                    kind.name, part.alive, functools.partial(parts.restart, kind, part)
                )
        use_settings(resolved)
        migrate(resolved)
        jobs.configure(resolved)
        own_worker = None
        if worker and not jobs.workers_answering():
            log.info("no worker answers; starting one")
            own_worker = WorkerProcess(resolved).start()
        try:
            yield resolved
        finally:
            if own_worker is not None:
                own_worker.stop()
