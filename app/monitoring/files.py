"""The metrics directory: read whole by a scrape, tidied of processes that ended.

What a process that ended counted still counts (a counter must not go down because a pool
process was replaced), so its counter, histogram and summary files are added into one
archive file per kind (`counter_archive.db`, …) and removed; its live gauges are removed, as
prometheus_client's `mark_process_dead` does. Only processes of this host are judged (in
docker compose another container's processes cannot be seen from here; their files stay and
keep counting). A scrape holds a shared lock on the directory and a tidy-up an exclusive one,
so that no scrape sees a file both in the archive and on its own.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

from app.infra.processes import pid_alive
from app.monitoring.metrics import parse_process_id, this_host

log = logging.getLogger(__name__)
ARCHIVE = "archive"
LOCK_FILE = ".lock"


@contextmanager
def locked(path: Path, *, exclusive: bool) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK_FILE, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ended(identifier: str) -> bool:
    """Whether the process that wrote files under this identifier has ended (this host's
    processes only; an archive or a foreign name is never judged)."""
    parsed = parse_process_id(identifier)
    if parsed is None:
        return False
    host, pid = parsed
    return host == this_host() and pid != os.getpid() and not pid_alive(pid)


def _of_ended(path: Path) -> dict[str, list[Path]]:
    """Files of ended processes, by kind (`counter`, `histogram`, `gauge_livesum`, …)."""
    found: dict[str, list[Path]] = defaultdict(list)
    for file in sorted(path.glob("*.db")):
        kind, _, identifier = file.stem.rpartition("_")
        if kind and identifier != ARCHIVE and _ended(identifier):
            found[kind].append(file)
    return found


def tidy(path: Path) -> int:
    """Fold the files of ended processes into the archives; returns how many files went."""
    if not path.is_dir():
        return 0
    gone = 0
    with locked(path, exclusive=True):
        for kind, files in _of_ended(path).items():
            if kind.startswith("gauge_"):
                if not kind.startswith("gauge_live"):
                    continue  # min, max, all…: kept with their pid, as prometheus_client does
            else:
                _fold(path / f"{kind}_{ARCHIVE}.db", files)
            for file in files:
                file.unlink(missing_ok=True)
                gone += 1
    if gone:
        log.info("folded the metrics of %d file(s) of ended processes", gone)
    return gone


def forget_ended(path: Path) -> int:
    """At `serve`'s start: drop the archives and what ended processes counted, so that the
    counters start again (Prometheus reads a restart as a reset). Processes still running (a
    worker of the command line) keep theirs."""
    if not path.is_dir():
        return 0
    gone = 0
    with locked(path, exclusive=True):
        for files in _of_ended(path).values():
            for file in files:
                file.unlink(missing_ok=True)
                gone += 1
        for archive in path.glob(f"*_{ARCHIVE}.db"):
            archive.unlink(missing_ok=True)
            gone += 1
    return gone


def _fold(archive: Path, files: list[Path]) -> None:
    """archive += files, written whole beside it and renamed over it (a crash leaves the old
    archive or the new one; one between the rename and the removal of the files counts those
    files twice, which Prometheus reads as a jump, never as a reset)."""
    totals: dict[str, float] = defaultdict(float)
    for source in [archive, *files] if archive.exists() else files:
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(source)):
            totals[key] += value
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    merged = MmapedDict(str(partial))
    try:
        for key, value in totals.items():
            merged.write_value(key, value, 0.0)
    finally:
        merged.close()
    os.replace(partial, archive)
