"""The background sweep every web process runs: it sends jobs left in the outbox (the broker
was down at their commit, or they were due later), asks again for documents whose work was
lost (`app.documents.reconcile`), asks for fusion calibrations that are out of date
(`app.retrieval.calibration`), forgets old sent jobs and answer traces past
TRACE_RETENTION_DAYS, and folds the metrics files of ended processes into their archives.
Each step is its own unit of work and takes the rows it works on with SKIP LOCKED (or
deletes what any process may delete), so any number of processes may sweep at once; a step
that fails (the database or broker is down) is tried again next round."""

from __future__ import annotations

import logging
import threading
import time

from app import jobs
from app.config import Settings
from app.conversations.store import prune_traces
from app.db import session_scope
from app.documents.reconcile import reconcile
from app.monitoring import files
from app.retrieval.calibration import request_calibrations

log = logging.getLogger(__name__)

DISPATCH_EVERY_S = 2.0
RECONCILE_EVERY_S = 10.0
CALIBRATE_EVERY_S = 60.0
PRUNE_EVERY_S = 3600.0
TIDY_METRICS_EVERY_S = 60.0


def calibrate_once(settings: Settings) -> list[int]:
    with session_scope(settings) as session:
        return request_calibrations(session)


def prune_once(settings: Settings) -> int:
    with session_scope(settings) as session:
        return jobs.prune(session) + prune_traces(session, settings.trace_retention_days)


def tidy_metrics_once(settings: Settings) -> int:
    return files.tidy(settings.metrics_path)


def dispatch_once(settings: Settings) -> int:
    with session_scope(settings) as session:
        return jobs.dispatch(session)


def reconcile_once(settings: Settings) -> list[int]:
    with session_scope(settings) as session:
        queue_idle = not jobs.unsent_due(session) and jobs.queue_depth(settings) == 0
        found = reconcile(session, queue_idle=queue_idle)
    if found:
        log.warning("asked again for %d document(s) whose work was lost: %s", len(found), found)
    return found


class Sweeper:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        steps = [
            (DISPATCH_EVERY_S, dispatch_once),
            (RECONCILE_EVERY_S, reconcile_once),
            (CALIBRATE_EVERY_S, calibrate_once),
            (PRUNE_EVERY_S, prune_once),
            (TIDY_METRICS_EVERY_S, tidy_metrics_once),
        ]
        last = dict.fromkeys(range(len(steps)), time.monotonic())
        while not self._stop.wait(DISPATCH_EVERY_S / 2):
            for i, (every, step) in enumerate(steps):
                if time.monotonic() - last[i] < every:
                    continue
                last[i] = time.monotonic()
                try:
                    step(self.settings)
                except Exception as err:  # noqa: BLE001 - down for now: next round
                    log.warning("sweep step %s failed: %s", step.__name__, err)
