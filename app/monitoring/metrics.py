"""The Prometheus metrics every process records, in prometheus_client's multiprocess mode.

Each process (the web processes, the Celery worker and each of its pool processes) writes its
counters and histograms to files of its own under `DATA_DIR/metrics`, memory-mapped, named
`<kind>_<host>-<pid>.db`; GET /metrics in any web process adds up the files of all of them
(`app.monitoring.exposition`). The host is in the name because in docker compose the web and
worker containers share that directory, and their process ids overlap.

`setup(settings)` turns recording on in a process: the web app (`create_app`) and the worker
(`worker.celery_app`) call it; before it, and in processes that never call it (the CLI's own
searches, the evals), the `record_*` functions do nothing. Pool processes forked after it
write files of their own (prometheus_client notices the new process id).
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from prometheus_client import Counter, Histogram, values

from app.config import Settings

_HOST = re.sub(r"[^A-Za-z0-9.]+", "-", socket.gethostname()).strip("-") or "host"

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SEARCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
EMBED_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)


def process_id() -> str:
    """This process's part of its file names: host and pid (no underscore: prometheus_client
    splits file names at underscores)."""
    return f"{_HOST}-{os.getpid()}"


def parse_process_id(identifier: str) -> tuple[str, int] | None:
    host, _, pid = identifier.rpartition("-")
    return (host, int(pid)) if host and pid.isdigit() else None


def this_host() -> str:
    return _HOST


class Metrics:
    """The metric families this product records (the gauges are read at scrape time, in
    `app.monitoring.exposition`)."""

    def __init__(self, path: Path):
        self.path = path
        self.http = Histogram(
            "groundwork_http_request_duration_seconds",
            "HTTP requests, by route template, method and status, until the response ended.",
            ["route", "method", "status"],
            buckets=HTTP_BUCKETS,
            registry=None,
        )
        self.search = Histogram(
            "groundwork_search_duration_seconds",
            "Searches by mode, and each stage of them (total: the whole search).",
            ["mode", "stage"],
            buckets=SEARCH_BUCKETS,
            registry=None,
        )
        self.embed = Histogram(
            "groundwork_embed_seconds",
            "One call of the embedding model, by what it embedded (query, chunks, sentences).",
            ["kind"],
            buckets=EMBED_BUCKETS,
            registry=None,
        )
        self.embed_texts = Counter(
            "groundwork_embed_texts_total",
            "Texts embedded, by kind.",
            ["kind"],
            registry=None,
        )
        self.ingest = Counter(
            "groundwork_ingest_documents_total",
            "Documents that went through ingestion, by outcome (indexed, failed, rejected, "
            "skipped, busy, gone, superseded, handed_back).",
            ["outcome"],
            registry=None,
        )
        self.first_token = Histogram(
            "groundwork_llm_time_to_first_token_seconds",
            "From sending a request to the LLM to its first token, by purpose (answer, rewrite).",
            ["purpose"],
            buckets=TTFT_BUCKETS,
            registry=None,
        )
        self.tokens = Counter(
            "groundwork_llm_tokens_total",
            "LLM tokens by purpose and kind: completion tokens as the server counted them (or "
            "the chunks it streamed), prompt tokens when the server reports usage.",
            ["purpose", "kind"],
            registry=None,
        )
        self.answers = Counter(
            "groundwork_answers_total",
            "Answers by outcome: answered, abstained, truncated, error, stopped.",
            ["outcome"],
            registry=None,
        )


_lock = threading.Lock()
_current: Metrics | None = None


def setup(settings: Settings) -> Metrics:
    """Record this process's metrics under `settings.metrics_path` from now on."""
    global _current
    with _lock:
        path = settings.metrics_path
        if _current is not None and _current.path == path:
            return _current
        path.mkdir(parents=True, exist_ok=True)
        # A library variable, like those of app/__init__.py: prometheus_client opens each
        # process's files in this directory.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
        # Chosen here rather than from the environment at import time, so that the order of
        # imports does not matter, and with the host in each file's name.
        values.ValueClass = values.MultiProcessValue(process_id)
        _current = Metrics(path)
        return _current


def current() -> Metrics | None:
    return _current


def sample_names() -> set[str]:
    """Every sample name the recorded families expose (histograms' _bucket, _sum, _count;
    counters' _total), and the gauges read at scrape time."""
    from app.monitoring.exposition import GAUGES

    names = set(GAUGES)
    for family in (
        "groundwork_http_request_duration_seconds",
        "groundwork_search_duration_seconds",
        "groundwork_embed_seconds",
        "groundwork_llm_time_to_first_token_seconds",
    ):
        names |= {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    names |= {
        "groundwork_embed_texts_total",
        "groundwork_ingest_documents_total",
        "groundwork_llm_tokens_total",
        "groundwork_answers_total",
    }
    return names


# -- recording (no-ops until setup) ----------------------------------------------------------


def record_request(route: str, method: str, status: int, seconds: float) -> None:
    if (m := _current) is not None:
        m.http.labels(route, method, str(status)).observe(seconds)


def record_search(mode: str, timings_ms: Mapping[str, float]) -> None:
    """A search's stage times, as `Clock` keeps them (`bm25_ms`, …, `total_ms`)."""
    if (m := _current) is not None:
        for name, ms in timings_ms.items():
            m.search.labels(mode, name.removesuffix("_ms")).observe(ms / 1000)


def record_embed(kind: str, texts: int, seconds: float) -> None:
    if (m := _current) is not None:
        m.embed.labels(kind).observe(seconds)
        m.embed_texts.labels(kind).inc(texts)


def record_ingested(outcomes: Iterable[str]) -> None:
    if (m := _current) is not None:
        for outcome in outcomes:
            m.ingest.labels(outcome.replace(" ", "_")).inc()


def record_first_token(purpose: str, seconds: float) -> None:
    if (m := _current) is not None:
        m.first_token.labels(purpose).observe(seconds)


def record_tokens(purpose: str, completion: int, prompt: int | None) -> None:
    if (m := _current) is not None:
        if completion:
            m.tokens.labels(purpose, "completion").inc(completion)
        if prompt:
            m.tokens.labels(purpose, "prompt").inc(prompt)


def record_answer(outcome: str) -> None:
    if (m := _current) is not None:
        m.answers.labels(outcome).inc()
