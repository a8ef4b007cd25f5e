"""What `groundwork ingest --wait` shows while it waits: on a terminal, one line redrawn in
place (a bar, documents and chunks done, the rate, the time left, failures so far); otherwise
a plain line every PLAIN_EVERY_S seconds, so that logs stay readable. Progress goes to
stderr; with --json, stdout holds only the final JSON object."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from app.documents.bulk import Tally

BAR = 24
PLAIN_EVERY_S = 10.0


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressLine:
    def __init__(self, stream: TextIO | None = None, tty: bool | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.first: Tally | None = None
        self.last_plain = 0.0

    def describe(self, now: Tally) -> str:
        if self.first is None:
            self.first = now
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = (now.settled - self.first.settled) / elapsed
        left = f", {duration(now.pending / rate)} left" if rate > 0 and now.pending else ""
        failed = f", {now.failed} failed" if now.failed else ""
        return (
            f"{now.settled:,}/{now.total:,} documents, {now.chunks:,} chunks, "
            f"{rate:.1f} documents/s{left}{failed}"
        )

    def __call__(self, now: Tally) -> None:
        text = self.describe(now)
        if self.tty:
            filled = BAR * now.settled // max(now.total, 1)
            bar = "#" * filled + "." * (BAR - filled)
            end = "\n" if not now.pending else ""
            self.stream.write(f"\r[{bar}] {text}\x1b[K{end}")
            self.stream.flush()
        elif not now.pending or time.monotonic() - self.last_plain >= PLAIN_EVERY_S:
            self.last_plain = time.monotonic()
            self.stream.write(f"ingest: {text}\n")
            self.stream.flush()
