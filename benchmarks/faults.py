"""Recovery from faults: `groundwork serve` (embedded parts, no LLM) ingests a folder of
Markdown documents while one part is killed with SIGKILL in the middle (the Celery worker
with its pool, Redis, the Postgres postmaster), or while serve itself is stopped (Ctrl-C)
and started again three times. For each fault it prints how long until every document was
indexed, and how many ended failed or were indexed more than once.

    python benchmarks/faults.py [--docs 60] [--faults worker,redis,postgres,restarts]

`tests/infra/test_faults.py` runs the same scenarios and asserts on their figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from app.infra.processes import child_pids, free_port  # noqa: E402
from benchmarks.common import machine, table  # noqa: E402

FAULTS = ("worker", "redis", "postgres", "restarts")
COLLECTION = "faults"
SETTLE_TIMEOUT_S = 600.0
BUSY = ("parsing", "chunking", "embedding")

WORDS = (
    "ledger", "invoice", "harbour", "lantern", "meadow", "orchard", "quarry", "ribbon",
    "saddle", "timber", "velvet", "walnut", "anchor", "basket", "candle", "dragon", "engine",
    "falcon", "glacier", "hammer", "island", "jacket", "kettle", "ladder", "marble", "needle",
    "oyster", "parcel", "quartz", "rocket", "signal", "tunnel", "umbrella", "violin", "window",
    "yellow",
)  # fmt: skip


def make_documents(directory: Path, count: int, paragraphs: int = 12) -> None:
    """`count` Markdown files of about 12 chunks each (deterministic text)."""
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        body = [f"# Report {n}\n"]
        for p in range(paragraphs):
            words = [WORDS[(n * 7 + p * 13 + i * 3) % len(WORDS)] for i in range(150)]
            body.append(f"## Part {p}\n\n" + " ".join(words) + ".\n")
        (directory / f"report-{n:03d}.md").write_text("\n".join(body))


def child_env(data_dir: Path) -> dict[str, str]:
    # The parts of its own, and the default limits (a test session sets short ones).
    own = ("DATABASE_URL", "REDIS_URL", "LLM_BASE_URL", "DATA_DIR", "TASK_TIME_LIMIT_S")
    env = {k: v for k, v in os.environ.items() if k not in (*own, "BROKER_VISIBILITY_TIMEOUT_S")}
    env.update(DATA_DIR=str(data_dir), LOG_LEVEL="INFO", WORKER_CONCURRENCY="2")
    return env


@dataclass
class Serve:
    """`groundwork serve --no-llm` in a process of its own, under its own DATA_DIR."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> Serve:
        log = open(self.data_dir / "serve.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--no-llm", "--port", str(self.port)],
            env=child_env(self.data_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited:\n{self.log_tail()}"
            try:
                health = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).json()
                if health["worker"]["status"] == "ok":
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"serve did not come up:\n{self.log_tail()}")

    def stop(self, timeout: float = 180.0) -> None:
        """Ctrl-C, as a person would, and wait for everything to stop."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=timeout)
        self.proc = None

    def kill_everything(self) -> None:
        """After a failed run: nothing may outlive it."""
        for name in ("postgres", "redis"):
            pid = self.part_pid(name)
            if pid:
                os.killpg(pid, signal.SIGKILL)
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)

    def part(self, name: str) -> dict:
        return json.loads((self.data_dir / "run" / f"{name}.json").read_text())

    def part_pid(self, name: str) -> int | None:
        try:
            return int(self.part(name)["pid"])
        except (OSError, KeyError, ValueError):
            return None

    def worker_pid(self) -> int:
        assert self.proc is not None
        for pid in child_pids(self.proc.pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"celery" in cmdline:
                return pid
        raise LookupError("no worker process under serve")

    def log_tail(self, lines: int = 30) -> str:
        text = (self.data_dir / "serve.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def statuses(self) -> dict[str, int]:
        """Documents of the collection by status (empty while the database is down)."""
        url = self.part("postgres")["url"]
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                rows = conn.execute(
                    "SELECT d.status, count(*) FROM documents d JOIN collections c "
                    "ON c.id = d.collection_id WHERE c.name = %s GROUP BY d.status",
                    (COLLECTION,),
                ).fetchall()
        except psycopg.OperationalError:
            return {}
        return {status: int(n) for status, n in rows}

    def indexed_twice(self) -> int:
        """Documents with more than one successful ingestion attempt."""
        with psycopg.connect(self.part("postgres")["url"]) as conn:
            return int(
                conn.execute(
                    "SELECT count(*) FROM (SELECT document_id FROM ingestion_attempts "
                    "WHERE outcome = 'indexed' GROUP BY document_id HAVING count(*) > 1) t"
                ).fetchone()[0]
            )


def ingest(serve: Serve, folder: Path) -> None:
    """`groundwork ingest` (no --wait): the files are stored and their jobs sent."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "ingest", str(folder), "--collection", COLLECTION],
        env=child_env(serve.data_dir),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def wait_until(check, timeout: float, poll: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(poll)
    return False


def run(fault: str, root: Path, docs: int = 60) -> dict:
    """One scenario; returns its figures."""
    data_dir = root / fault
    data_dir.mkdir(parents=True, exist_ok=True)
    folder = root / f"{fault}-documents"
    make_documents(folder, docs)
    serve = Serve(data_dir).start()
    try:
        ingest(serve, folder)

        def midway() -> bool:
            s = serve.statuses()
            return 1 <= s.get("indexed", 0) <= docs * 2 // 3

        mid_ingest = wait_until(midway, timeout=300)
        pending_at_fault = docs - serve.statuses().get("indexed", 0)
        faulted = time.monotonic()
        if fault == "worker":
            os.killpg(serve.worker_pid(), signal.SIGKILL)  # the main process and its pool
        elif fault in ("redis", "postgres"):
            pid = serve.part_pid(fault)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
        elif fault == "restarts":
            for _ in range(3):  # each time while documents are being worked on
                serve.stop()
                serve.start()
                wait_until(lambda: any(serve.statuses().get(s) for s in BUSY), timeout=60)
        else:
            raise ValueError(f"unknown fault {fault!r}")

        def settled() -> bool:
            s = serve.statuses()
            return sum(s.values()) == docs and s.get("indexed", 0) + s.get("failed", 0) == docs

        done = wait_until(settled, timeout=SETTLE_TIMEOUT_S, poll=0.5)
        recovery_s = time.monotonic() - faulted
        final = serve.statuses()
        twice = serve.indexed_twice()
        serve.stop()
    except BaseException:
        serve.kill_everything()
        raise
    return {
        "fault": fault,
        "documents": docs,
        "mid_ingest": mid_ingest,
        "pending_at_fault": pending_at_fault,
        "settled": done,
        "recovery_s": round(recovery_s, 1),
        "indexed": final.get("indexed", 0),
        "failed": final.get("failed", 0),
        "statuses": final,
        "indexed_twice": twice,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=60)
    parser.add_argument("--faults", default=",".join(FAULTS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="groundwork-faults-") as tmp:
        for fault in args.faults.split(","):
            r = run(fault, Path(tmp), args.docs)
            rows.append(
                [
                    r["fault"],
                    r["documents"],
                    r["pending_at_fault"],
                    r["recovery_s"],
                    r["indexed"],
                    r["failed"],
                    r["indexed_twice"],
                ]
            )
    print(f"machine: {machine()}")
    print(
        table(
            f"Recovery: {args.docs} Markdown documents (~12 chunks each) through "
            "`groundwork ingest`, one fault in the middle",
            [
                "fault",
                "documents",
                "pending at the fault",
                "s until all indexed",
                "indexed",
                "failed",
                "indexed twice",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
