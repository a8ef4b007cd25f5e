"""The Celery application of the workers: configured from the settings (the same
configuration every sending process uses, `app.jobs.celery_config`), with the task
registrations of `worker.tasks`."""

from __future__ import annotations

import contextlib
import os
import resource
import signal

from celery import Celery
from celery.signals import worker_process_init, worker_shutting_down

from app import jobs
from app.config import get_settings
from app.infra.processes import child_pids
from app.ingest.attempts import request_stop
from app.monitoring import metrics

# Sent by the worker's main process to its pool processes when it shuts down (Celery's own
# signals: SIGTERM and SIGINT stop the main process, SIGUSR1 is the soft time limit).
HAND_BACK_SIGNAL = signal.SIGUSR2

celery_app = Celery("groundwork", include=["worker.tasks"])
celery_app.conf.update(jobs.celery_config(get_settings()))
jobs.configure(get_settings())  # what the tasks send goes through the same broker
# Counters under DATA_DIR/metrics, where the web app's /metrics reads them; each pool process
# forked from here writes files of its own.
metrics.setup(get_settings())


@worker_process_init.connect
def _init_worker_process(**_: object) -> None:
    # Each pool process opens its own database connections after the fork.
    from app.db import dispose_engines
    from app.runtime import share_cores

    settings = get_settings()
    dispose_engines()
    jobs.configure(settings)  # a broker connection of its own, after the fork
    share_cores(settings.worker_concurrency)
    signal.signal(HAND_BACK_SIGNAL, request_stop)
    if settings.worker_memory_limit_mb:
        # A file that makes a parser allocate without bound fails with MemoryError in this
        # process (one document) instead of taking the machine's memory.
        ceiling = settings.worker_memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))


@worker_shutting_down.connect
def _hand_back(**_: object) -> None:
    """A warm shutdown waits for the tasks running; each pool process is told to stop at its
    next checkpoint and hand its documents back, so that stopping takes seconds, not a whole
    batch, and is never recorded as a crash."""
    for pid in child_pids(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, HAND_BACK_SIGNAL)
