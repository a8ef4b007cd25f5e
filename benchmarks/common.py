"""Shared helpers for the benchmarks: the machine, a table printer, SciFact loading, and a
fresh set of embedded parts (or the ones named by DATABASE_URL / REDIS_URL)."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.config import Settings, use_settings
from app.db import migrate
from app.infra.parts import EmbeddedParts

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(line.split()[1]) // 1024 // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem = 0
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB, Python {platform.python_version()}"


def table(title: str, header: list[str], rows: list[list[object]]) -> str:
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    out = [
        f"\n{title}",
        line.format(*cells[0]),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    out += [line.format(*r) for r in cells[1:]]
    return "\n".join(out)


def load_corpus(directory: Path, limit: int | None = None) -> list[dict]:
    docs = []
    with open(directory / "corpus.jsonl") as f:
        for line in f:
            docs.append(json.loads(line))
            if limit and len(docs) >= limit:
                break
    return docs


@contextmanager
def fresh_parts(**overrides: object) -> Iterator[Settings]:
    """Embedded Postgres and Redis under a new temporary directory, migrated."""
    with tempfile.TemporaryDirectory(prefix="groundwork-bench-") as tmp:
        base = Settings(_env_file=None, data_dir=Path(tmp), **overrides)  # type: ignore[call-arg]
        with EmbeddedParts(base) as parts:
            settings = parts.start()
            use_settings(settings)
            migrate(settings)
            from app import jobs

            jobs.configure(settings)
            yield settings
