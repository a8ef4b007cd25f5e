"""What `groundwork ingest --wait` shows while it waits."""

from __future__ import annotations

import io

from app.cli.progress import ProgressLine, duration
from app.documents.bulk import Tally


def test_a_terminal_gets_one_line_redrawn_with_bar_rate_time_left_and_failures():
    out = io.StringIO()
    line = ProgressLine(out, tty=True)
    line(Tally(total=100, settled=0, failed=0, chunks=0))
    line.started -= 10  # ten seconds later
    line(Tally(total=100, settled=40, failed=2, chunks=380))
    text = out.getvalue()
    assert text.count("\r") == 2 and "\n" not in text  # redrawn in place
    last = text.split("\r")[-1]
    assert "[" + "#" * 9 + "." * 15 + "]" in last
    assert "40/100 documents, 380 chunks, 4.0 documents/s, 15s left, 2 failed" in last
    line(Tally(total=100, settled=100, failed=2, chunks=950))
    assert out.getvalue().endswith("\n")  # the finished line stays


def test_logs_get_a_plain_line_now_and_then_and_at_the_end():
    out = io.StringIO()
    line = ProgressLine(out, tty=False)
    for settled in range(0, 50, 10):
        line(Tally(total=50, settled=settled, failed=0, chunks=settled * 9))
    line(Tally(total=50, settled=50, failed=0, chunks=450))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all(x.startswith("ingest: ") for x in lines)
    assert "\r" not in out.getvalue() and lines[-1].startswith("ingest: 50/50 documents")


def test_durations_read_naturally():
    assert [duration(s) for s in (5, 75, 3725)] == ["5s", "1m15s", "1h02m"]
