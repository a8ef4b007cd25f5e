"""Keeping `groundwork serve`'s children running: every second the supervisor looks at each
process it was given (the embedded Postgres, Redis and LLM server it started, and the Celery
worker); one that has died is started again, on the same port, after a back-off that doubles
from 1 s to 30 s while it keeps dying (and starts over once it has run for a minute). Every
restart is logged and counted, and `/healthz` and the admin jobs panel show the counts.

In production (docker compose) the containers' restart policy does this job instead; the app
itself recovers when a part comes back (pooled connections are checked before use, the broker
client reconnects, and work left behind is swept up: `app.infra.sweeps`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0  # running this long after a restart resets the back-off


@dataclass
class Watched:
    name: str
    alive: Callable[[], bool]
    restart: Callable[[], None]
    restarts: int = 0
    failures: int = 0  # restarts that themselves failed
    last_restart: float | None = None  # time.time() of the last successful restart
    last_error: str | None = None
    backoff: float = BACKOFF_FIRST_S
    down_since: float | None = None  # monotonic
    next_try: float = 0.0  # monotonic
    started: float = field(default_factory=time.monotonic)

    def report(self) -> dict[str, object]:
        return {
            "restarts": self.restarts,
            "failed_restarts": self.failures,
            "last_restart": self.last_restart,
            "last_error": self.last_error,
            "down": self.down_since is not None,
        }


class Supervisor:
    def __init__(self) -> None:
        self._watched: dict[str, Watched] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, name: str, alive: Callable[[], bool], restart: Callable[[], None]) -> None:
        with self._lock:
            self._watched[name] = Watched(name, alive, restart)

    def start(self) -> Supervisor:
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (before the children are stopped on purpose)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def report(self) -> dict[str, dict[str, object]]:
        with self._lock:
            return {name: w.report() for name, w in self._watched.items()}

    def _run(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            with self._lock:
                watched = list(self._watched.values())
            for w in watched:
                if self._stop.is_set():
                    return
                self.check(w)

    def check(self, w: Watched) -> None:
        now = time.monotonic()
        try:
            alive = w.alive()
        except Exception:  # noqa: BLE001 - cannot tell: look again next round
            return
        if alive:
            if w.down_since is None and now - w.started > HEALTHY_AFTER_S:
                w.backoff = BACKOFF_FIRST_S
            return
        if w.down_since is None:
            w.down_since = now
            w.next_try = now + (BACKOFF_FIRST_S if w.restarts == 0 else w.backoff)
            log.warning("%s stopped; starting it again in %.0f s", w.name, w.next_try - now)
        if now < w.next_try:
            return
        try:
            w.restart()
        except Exception as err:  # noqa: BLE001 - try again after a longer wait
            w.failures += 1
            w.last_error = f"{type(err).__name__}: {err}"[:300]
            w.backoff = min(BACKOFF_MAX_S, w.backoff * 2)
            w.next_try = time.monotonic() + w.backoff
            log.error("could not restart %s (%s); next try in %.0f s", w.name, err, w.backoff)
            return
        w.restarts += 1
        w.last_restart = time.time()
        down = time.monotonic() - (w.down_since or now)
        log.warning("%s restarted (restart %d, down %.1f s)", w.name, w.restarts, down)
        w.down_since = None
        w.started = time.monotonic()
        w.backoff = min(BACKOFF_MAX_S, w.backoff * 2)


_current: Supervisor | None = None


def current() -> Supervisor | None:
    """The supervisor of this process (`groundwork serve`), if any."""
    return _current


def install(supervisor: Supervisor | None) -> None:
    global _current
    _current = supervisor
