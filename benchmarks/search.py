"""Search speed: p50/p95 latency of each mode through the real search entry point at the
SciFact size and at 100,000 chunks; dense search limited to a few collections of the 100,000,
exact scan against filtered HNSW; and BM25 queries/s against rank-bm25 on the same chunks (with
the scores checked equal), and BM25's first query after a removal. One run; prints tables.

The SciFact-size corpus is SciFact's abstracts (one chunk each, embedded for real). The
100,000-chunk corpus is made from them so that embedding time does not dominate: each chunk
joins sentences of two abstracts, and its vector is the normalised mean of theirs plus noise.

    .venv/bin/python benchmarks/search.py [--limit-docs N] [--queries N]
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
from rank_bm25 import BM25Plus
from sqlalchemy import insert, select, text

from app.config import get_settings
from app.db import session_scope
from app.ingest.embed import get_embedder
from app.ingest.index import create_vector_index
from app.models import Chunk, Collection, Document, IndexGeneration
from app.retrieval import dense
from app.retrieval.lexical import BM25Index
from app.retrieval.lexical_store import lexical_index
from app.retrieval.search import search
from app.retrieval.tokenize import tokenize
from benchmarks.common import SCIFACT, fresh_parts, load_corpus, machine, table

MODES = ("bm25", "dense", "hybrid")


def synthesize(texts: list[str], vectors: np.ndarray, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sentences = [t.split(". ") for t in texts]
    out_texts, out_vectors = [], np.empty((n, vectors.shape[1]), dtype=np.float32)
    for i in range(n):
        a, b = rng.integers(0, len(texts), 2)
        sa, sb = sentences[a], sentences[b]
        out_texts.append(". ".join(sa[: max(1, len(sa) // 2)] + sb[len(sb) // 2 :]))
        v = vectors[a] + vectors[b] + rng.normal(0, 0.02, vectors.shape[1])
        out_vectors[i] = v / np.linalg.norm(v)
    return out_texts, out_vectors


def load(
    texts: list[str], vectors: np.ndarray, name: str, model: str, groups: list[int]
) -> list[int]:
    """Chunks straight into Postgres (ten per document) and a fresh live generation with its
    HNSW index built over them. The chunks go to one collection per group (`groups`: their
    sizes, in order). Returns the collection ids."""
    with session_scope() as s:
        s.execute(text("UPDATE index_generations SET state = 'retired' WHERE state = 'live'"))
        collections = [Collection(name=f"{name}-{i}") for i in range(len(groups))]
        s.add_all(collections)
        generation = IndexGeneration(
            embedding_model=model,
            dimension=vectors.shape[1],
            chunk_tokens=200,
            chunk_overlap_tokens=32,
            state="live",
        )
        s.add(generation)
        s.flush()
        owner = np.repeat([c.id for c in collections], groups)
        doc_ids = []
        for start in range(0, len(texts), 10):
            doc = Document(
                collection_id=int(owner[start]),
                filename=f"d{start}.md",
                title=f"d{start}",
                content_type="text/markdown",
                size_bytes=1,
                sha256=f"{start:064d}",
                status="indexed",
            )
            s.add(doc)
            doc_ids.append(doc)
        s.flush()
        rows = [
            {
                "document_id": doc_ids[i // 10].id,
                "generation_id": generation.id,
                "collection_id": int(owner[i]),
                "ordinal": i % 10,
                "text": t,
                "lexemes": " ".join(tokenize(t)),
                "heading_path": [],
                "char_start": 0,
                "char_end": len(t),
                "embedding": v,
                "embedding_model": model,
            }
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
        ]
        for start in range(0, len(rows), 2000):
            s.execute(insert(Chunk), rows[start : start + 2000])
        s.execute(text("SET maintenance_work_mem = '1GB'"))
        create_vector_index(s, generation.id, vectors.shape[1])
        s.execute(text("ANALYZE chunks"))
        return [c.id for c in collections]


def latencies(queries: list[str], collection_ids: list[int]) -> dict[str, list[str]]:
    """Per mode: p50 and p95 of the whole search, and the p50 of each stage it reports."""
    out = {}
    with session_scope() as s:
        for mode in MODES:
            search(s, queries[0], mode=mode, collections=collection_ids)  # warm-up
            times, stages = [], {}
            for q in queries:
                started = time.perf_counter()
                result = search(s, q, mode=mode, collections=collection_ids)
                times.append((time.perf_counter() - started) * 1000)
                for stage, ms in result.timings.items():
                    stages.setdefault(stage.removesuffix("_ms"), []).append(ms)
            p50, p95 = np.percentile(times, [50, 95])
            split = ", ".join(f"{k} {np.median(v):.1f}" for k, v in stages.items())
            out[mode] = [f"{p50:.1f}", f"{p95:.1f}", split]
    return out


def filtered_dense(
    query_vectors: np.ndarray, collection_ids: list[int], groups: list[int], depth: int
) -> list[list[object]]:
    """Dense search limited to the first 1, 2, ... collections (the rest of the index left
    out): p50/p95 of an exact scan and of a filtered HNSW scan (ef_search raised with the
    selectivity up to pgvector's 1,000, then exact when it comes back short), the HNSW scan's
    recall@depth against the exact scan, and which of the two `dense.scan_plan` picks."""
    rows = []
    total = sum(groups)
    ef_search = get_settings().hnsw_ef_search
    plan = dense.scan_plan
    forced = {
        "exact": lambda *a: None,
        "hnsw": lambda *a: min(dense.EF_SEARCH_MAX, dense.filtered_ef(*a)),
    }
    with session_scope() as s:
        generation = s.scalars(select(IndexGeneration).where(IndexGeneration.state == "live")).one()
        for n in range(1, len(groups)):
            allowed, allowed_rows = collection_ids[:n], sum(groups[:n])
            times: dict[str, list[float]] = {"exact": [], "hnsw": []}
            recall = []
            for v in query_vectors:
                found = {}
                for path, choose in forced.items():
                    dense.scan_plan = choose  # type: ignore[assignment]
                    started = time.perf_counter()
                    try:
                        found[path] = dense.dense_search(
                            s,
                            v,
                            generation_id=generation.id,
                            dimension=generation.dimension,
                            depth=depth,
                            ef_search=ef_search,
                            allowed=allowed,
                            allowed_rows=allowed_rows,
                            total_rows=total,
                        )
                    finally:
                        dense.scan_plan = plan
                    times[path].append((time.perf_counter() - started) * 1000)
                exact = {c for c, _ in found["exact"]}
                recall.append(len(exact & {c for c, _ in found["hnsw"]}) / len(exact))
            picked = plan(depth, ef_search, allowed_rows, total)
            rows.append(
                [
                    f"{allowed_rows:,} of {total:,}",
                    *(f"{np.percentile(times[p], q):.1f}" for p in times for q in (50, 95)),
                    f"{np.mean(recall):.3f}",
                    "exact" if picked is None else f"HNSW, ef_search {picked}",
                ]
            )
    return rows


def bm25_versus_rank_bm25(
    tokens: list[list[str]], queries: list[str], sample: int, allowed: list[int] | None = None
) -> list[object]:
    """Our queries/s on an index built just now, against rank-bm25's over the same chunks
    (the first `sample` queries), and the largest score difference. With `allowed`, the
    chunks are spread over three collections and ours searches only those given; rank-bm25
    then holds just their chunks."""
    ours = BM25Index()
    ours.add((i, i, 1 + i % 3, t) for i, t in enumerate(tokens))
    visible = [i for i in range(len(tokens)) if allowed is None or 1 + i % 3 in allowed]
    reference = BM25Plus([tokens[i] for i in visible])
    query_tokens = [tokenize(q) for q in queries]
    started = time.perf_counter()
    for q in query_tokens:
        ours.search(q, 10, allowed)
    qps = len(query_tokens) / (time.perf_counter() - started)
    started = time.perf_counter()
    expected = [reference.get_scores(q) for q in query_tokens[:sample]]
    ref_qps = sample / (time.perf_counter() - started)
    worst = 0.0
    for q, want in zip(query_tokens, expected, strict=False):
        found = ours.matches(q, allowed)
        got = dict(zip(found.ids.tolist(), found.scores.tolist(), strict=True))
        diff = np.abs(np.array([got.get(i, found.least) for i in visible]) - want)
        worst = max(worst, float(diff.max()))
    return [
        f"{len(tokens):,}",
        "all" if allowed is None else f"{len(visible):,} ({len(allowed)} of 3 collections)",
        f"{qps:.0f}",
        f"{ref_qps:.2f}",
        f"{qps / ref_qps:.0f}x",
        f"{worst:.1e}",
    ]


def after_removals(tokens: list[list[str]], queries: list[str], removals: int = 10) -> list[str]:
    """BM25 query time (ms) on an index built just now, and of the first query after each of
    `removals` documents (ten chunks each) is removed: a removal must not cost the next query
    a pass over the whole index."""
    index = BM25Index()
    index.add((i, i // 10, 1, t) for i, t in enumerate(tokens))
    query_tokens = [tokenize(q) for q in queries]

    def timed(q: list[str]) -> float:
        started = time.perf_counter()
        index.search(q, 10)
        return (time.perf_counter() - started) * 1000

    steady = [timed(q) for q in query_tokens]
    first = []
    for i in range(removals):
        index.remove_documents([i * 997 % (len(tokens) // 10)])
        first.append(timed(query_tokens[i % len(query_tokens)]))
    return [
        f"{len(tokens):,}",
        f"{np.median(steady):.1f}",
        f"{np.median(first):.1f}",
        f"{max(first):.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit-docs", type=int, default=None, help="fewer SciFact abstracts")
    parser.add_argument("--queries", type=int, default=200, help="queries timed per mode")
    parser.add_argument("--large", type=int, default=100_000, help="chunks in the large corpus")
    parser.add_argument(
        "--reference-sample",
        type=int,
        default=10,
        help="queries run through rank-bm25 at the large size",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    corpus = load_corpus(SCIFACT, args.limit_docs)
    with open(SCIFACT / "queries.jsonl") as f:
        claims = [json.loads(line)["text"] for line in f]
    queries = claims[: args.queries]
    texts = [f"{d['title']}. {d['text']}" for d in corpus]

    with fresh_parts() as settings:
        embedder = get_embedder(settings.embedding_model)
        started = time.perf_counter()
        vectors = embedder.encode(texts, 64)
        embed_s = time.perf_counter() - started
        large_texts, large_vectors = synthesize(texts, vectors, args.large)
        rows, qps_rows = [], []
        large_groups = [g * args.large // 100 for g in (1, 4, 5, 10, 30)]
        large_groups.append(args.large - sum(large_groups))
        for label, (t, v), groups in (
            ("SciFact", (texts, vectors), [len(texts)]),
            ("synthetic", (large_texts, large_vectors), large_groups),
        ):
            started = time.perf_counter()
            collection_ids = load(t, v, f"bench-{label}", settings.embedding_model, groups)
            load_s = time.perf_counter() - started
            with session_scope() as s, lexical_index().synced(s):
                pass  # load BM25 before timing
            for mode, figures in latencies(queries, collection_ids).items():
                rows.append([f"{label} ({len(t):,} chunks)", mode, *figures])
            print(f"loaded {label}: {len(t):,} chunks in {load_s:.0f}s", file=sys.stderr)
        query_vectors = embedder.encode(queries, 64)
        filter_rows = filtered_dense(query_vectors, collection_ids, large_groups, depth=100)
        tokens = [tokenize(t) for t in texts]
        large_tokens = [tokenize(t) for t in large_texts]
        qps_rows.append(bm25_versus_rank_bm25(tokens, queries, len(queries)))
        qps_rows.append(bm25_versus_rank_bm25(large_tokens, queries, args.reference_sample))
        qps_rows.append(bm25_versus_rank_bm25(large_tokens, queries, args.reference_sample, [1, 2]))
        removal_row = after_removals(large_tokens, queries)

    print(f"machine: {machine()}")
    print(
        f"queries: the first {len(queries)} SciFact claims; model {settings.embedding_model}; "
        f"k={settings.search_k}; fusion {settings.fusion_method}; reranker off; embedding "
        f"{len(texts)} abstracts took {embed_s:.0f}s"
    )
    print(
        table(
            "Search latency (ms) through app.retrieval.search.search",
            ["corpus", "mode", "p50", "p95", "p50 of each stage"],
            rows,
        )
    )
    print(
        table(
            "Dense search limited to some collections (ms; depth 100): exact scan vs filtered HNSW",
            [
                "chunks searched",
                "exact p50",
                "exact p95",
                "HNSW p50",
                "HNSW p95",
                "HNSW recall",
                "search picks",
            ],
            filter_rows,
        )
    )
    print(
        table(
            "BM25 queries/s, this index vs rank-bm25 BM25Plus, same chunks and tokens",
            ["chunks", "searched", "ours q/s", "rank-bm25 q/s", "speed-up", "max |score diff|"],
            qps_rows,
        )
    )
    print(
        table(
            "BM25 query time (ms) after a removal, index built just now",
            ["chunks", "p50, no removal", "p50, first after a removal", "max, first after one"],
            [removal_row],
        )
    )


if __name__ == "__main__":
    main()
