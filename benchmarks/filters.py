"""What a metadata filter costs at 100,000 chunks: p50/p95 of each search mode through the real
search entry point with no filter and with a label filter that keeps 10 chunks, 1%, 10% and
50% of them (each query run under every filter in turn), and the time spent resolving the
filter to documents in SQL and in each retriever. One run; prints a table.

The corpus is benchmarks/search.py's synthetic one (each chunk joins sentences of two SciFact
abstracts; ten chunks a document) with its HNSW index, but the abstracts' vectors are random
unit vectors instead of embeddings (embedding 5,183 abstracts takes minutes here and the cost
of a filter does not depend on them); the queries are SciFact claims, embedded for real.

    .venv/bin/python benchmarks/filters.py [--queries N] [--large N]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from sqlalchemy import select, text

from app.db import session_scope
from app.models import Document
from app.retrieval.filters import Filters
from app.retrieval.lexical_store import lexical_index
from app.retrieval.search import search
from benchmarks.common import SCIFACT, fresh_parts, load_corpus, machine, table
from benchmarks.search import load, synthesize

MODES = ("bm25", "dense", "hybrid")


def label_documents(collection_id: int, shares: dict[str, int]) -> None:
    """Label the first N documents of the collection (by id) with each label."""
    with session_scope() as s:
        ids = list(
            s.scalars(
                select(Document.id)
                .where(Document.collection_id == collection_id)
                .order_by(Document.id)
            )
        )
        for label, n in shares.items():
            s.execute(
                text("UPDATE documents SET labels = labels || CAST(:l AS text) WHERE id <= :last"),
                {"l": label, "last": ids[n - 1]},
            )
        s.execute(text("ANALYZE documents"))


def interleaved(
    queries: list[str], mode: str, cases: list[tuple[str, Filters | None]]
) -> list[list[str]]:
    """Each query under every filter in turn (so that whatever else the machine is doing
    weighs on every filter alike): per filter, p50 and p95 of the whole search, its p50 over
    the unfiltered one's, and the p50 of resolving the filter and of each retriever."""
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    stages: dict[str, dict[str, list[float]]] = {name: {} for name, _ in cases}
    with session_scope() as s:
        for _, filters in cases:
            search(s, queries[0], mode=mode, filters=filters)  # warm-up
        for q in queries:
            for name, filters in cases:
                started = time.perf_counter()
                result = search(s, q, mode=mode, filters=filters)
                times[name].append((time.perf_counter() - started) * 1000)
                for stage in ("filters", "bm25", "dense"):
                    ms = result.timings.get(f"{stage}_ms")
                    if ms is not None:
                        stages[name].setdefault(stage, []).append(ms)
    base = float(np.median(times[cases[0][0]]))
    rows = []
    for name, _ in cases:
        p50, p95 = np.percentile(times[name], [50, 95])
        split = ", ".join(f"{k} {np.median(v):.1f}" for k, v in stages[name].items())
        rows.append([mode, name, f"{p50:.1f}", f"{p95:.1f}", f"{p50 / base:.2f}", split])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=100, help="queries timed per row")
    parser.add_argument("--large", type=int, default=100_000, help="chunks in the corpus")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    corpus = load_corpus(SCIFACT)
    with open(SCIFACT / "queries.jsonl") as f:
        queries = [json.loads(line)["text"] for line in f][: args.queries]
    texts = [f"{d['title']}. {d['text']}" for d in corpus]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(texts), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    documents = args.large // 10
    shares = {  # label: documents (ten chunks each)
        "ten": 1,
        "one-percent": documents // 100,
        "ten-percent": documents // 10,
        "half": documents // 2,
    }
    with fresh_parts() as settings:
        large_texts, large_vectors = synthesize(texts, vectors, args.large)
        started = time.perf_counter()
        (collection_id,) = load(
            large_texts, large_vectors, "bench-filters", settings.embedding_model, [args.large]
        )
        label_documents(collection_id, shares)
        loaded_s = time.perf_counter() - started
        print(f"loaded {args.large:,} chunks in {loaded_s:.0f}s", file=sys.stderr)
        with session_scope() as s, lexical_index().synced(s):
            pass  # load BM25 before timing
        rows = []
        cases: list[tuple[str, Filters | None]] = [("none", None)]
        cases += [
            (f"{n * 10:,} chunks ({n * 10 * 100 / args.large:g}%)", Filters(labels=[label]))
            for label, n in shares.items()
        ]
        for mode in MODES:
            rows += interleaved(queries, mode, cases)
            print(f"  {mode} done", file=sys.stderr)
    print(f"machine: {machine()}")
    print(
        f"queries: the first {len(queries)} SciFact claims; model {settings.embedding_model}; "
        f"k={settings.search_k}; fusion {settings.fusion_method}; reranker off"
    )
    print(
        table(
            f"Search with a label filter, {args.large:,} chunks (ms)",
            ["mode", "filter keeps", "p50", "p95", "p50 / unfiltered", "p50 of stages"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
