"""The cost curve to a million chunks: synthetic chunks (texts made of SciFact's sentences,
vectors made of their embeddings, as benchmarks/search.py does) written straight into a fresh
Postgres with COPY, not embedded. For each size: the time to write them and to build the
HNSW index, Postgres's size, and hybrid search p50/p95 once warm; and for two new web
processes, their BM25 load (time and peak resident memory) and first query: the first on a
machine that has no BM25 snapshot yet (it builds the index from Postgres and writes one),
the second a restart (it maps the snapshot). Prints one table.

    .venv/bin/python benchmarks/scale.py [--sizes 100000,300000,1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from sqlalchemy import text

from app.config import get_settings
from app.db import session_scope
from app.ingest.embed import get_embedder
from app.ingest.index import DocumentChunks, create_vector_index, replace_chunks
from app.models import Collection, Document, IndexGeneration
from app.retrieval.search import search
from app.retrieval.tokenize import tokenize
from benchmarks.common import ROOT, SCIFACT, fresh_parts, load_corpus, machine, table
from benchmarks.search import synthesize

PER_DOCUMENT = 10
WRITE_BATCH = 20_000

# A new web process: load the BM25 index (from a snapshot, else from Postgres) and answer
# one hybrid search; it waits for the snapshot it writes, if any, before it ends.
COLD = """
import json, sys, threading, time
started = time.perf_counter()
from app.config import get_settings
from app.db import session_scope
from app.retrieval.lexical_store import lexical_index
from app.retrieval.search import search
with session_scope() as s:
    t = time.perf_counter()
    with lexical_index().synced(s):
        pass
    load = time.perf_counter() - t
    t = time.perf_counter()
    search(s, sys.argv[1], mode="hybrid")
    first = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking process (here the
# benchmark itself, holding every synthetic chunk), VmHWM starts again with the new program.
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
rss = int(status["VmHWM"].split()[0]) / 1024
for thread in threading.enumerate():
    if thread is not threading.current_thread() and thread.daemon:
        thread.join()
print(json.dumps({"load_s": load, "first_query_s": first, "rss_mb": rss,
                  "from": lexical_index().loaded_from}))
"""


def write(
    texts: list[str],
    vectors: np.ndarray,
    start: int,
    generation: IndexGeneration,
    collection_id: int,
    model: str,
) -> None:
    """Chunks [start, start + len) in documents of PER_DOCUMENT, in one transaction."""
    with session_scope() as s:
        documents = [
            Document(collection_id=collection_id, filename=f"d{start + i}.md",
                     title=f"d{start + i}", content_type="text/markdown", size_bytes=1,
                     sha256=f"{start + i:064d}", status="indexed")
            for i in range(0, len(texts), PER_DOCUMENT)
        ]  # fmt: skip
        s.add_all(documents)
        s.flush()
        batch = []
        for n, doc in enumerate(documents):
            rows = []
            for i in range(n * PER_DOCUMENT, min(len(texts), (n + 1) * PER_DOCUMENT)):
                rows.append({"ordinal": i % PER_DOCUMENT, "text": texts[i],
                             "lexemes": " ".join(tokenize(texts[i])), "heading_path": [],
                             "page_start": None, "page_end": None, "char_start": 0,
                             "char_end": len(texts[i])})  # fmt: skip
            span = vectors[n * PER_DOCUMENT : n * PER_DOCUMENT + len(rows)]
            batch.append(DocumentChunks(doc.id, collection_id, rows, span))
        generation = s.merge(generation)
        replace_chunks(s, generation, batch)


def measure(
    size: int, texts: list[str], vectors: np.ndarray, queries: list[str], models: Path
) -> list:
    with fresh_parts() as settings:
        model = settings.embedding_model
        with session_scope() as s:
            collection = Collection(name="scale")
            generation = IndexGeneration(
                embedding_model=model,
                dimension=vectors.shape[1],
                chunk_tokens=200,
                chunk_overlap_tokens=32,
                state="live",
            )
            s.add_all([collection, generation])
            s.flush()
            collection_id = collection.id
            s.expunge(generation)
        big_texts, big_vectors = synthesize(texts, vectors, size)
        started = time.perf_counter()
        for at in range(0, size, WRITE_BATCH):
            write(big_texts[at : at + WRITE_BATCH], big_vectors[at : at + WRITE_BATCH], at,
                  generation, collection_id, model)  # fmt: skip
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        with session_scope() as s:
            s.execute(text("SET maintenance_work_mem = '4GB'"))
            s.execute(text("SET max_parallel_maintenance_workers = 1"))
            create_vector_index(s, generation.id, vectors.shape[1])
        hnsw_s = time.perf_counter() - started
        with session_scope() as s:
            s.execute(text("ANALYZE chunks"))
            index_mb = (
                s.scalar(text(f"SELECT pg_relation_size('chunks_embedding_g{generation.id}')"))
                / 2**20
            )
            db_mb = s.scalar(text("SELECT pg_database_size(current_database())")) / 2**20
        # the model as this process exported it: the new processes time BM25, not an export
        env = {**settings.child_env(), "MODEL_CACHE_DIR": str(models)}
        cold, warm = (
            json.loads(
                subprocess.run([sys.executable, "-c", COLD, queries[0]], env=env, cwd=ROOT,
                               capture_output=True, text=True, check=True, timeout=3600).stdout
            )
            for _ in range(2)
        )  # fmt: skip
        assert (cold["from"], warm["from"]) == ("database", "snapshot"), (cold, warm)
        snapshot_mb = (
            sum(f.stat().st_size for f in (settings.data_path / "bm25").rglob("*") if f.is_file())
            / 2**20
        )
        times = []
        with session_scope() as s:
            search(s, queries[0], mode="hybrid")  # this process's own load
            for q in queries:
                t = time.perf_counter()
                search(s, q, mode="hybrid")
                times.append((time.perf_counter() - t) * 1000)
        p50, p95 = np.percentile(times, [50, 95])
    return [f"{size:,}", f"{write_s:.0f}", f"{hnsw_s:.0f}", f"{index_mb:,.0f}", f"{db_mb:,.0f}",
            f"{cold['load_s']:.1f} / {warm['load_s']:.2f}",
            f"{cold['rss_mb']:,.0f} / {warm['rss_mb']:,.0f}",
            f"{cold['first_query_s']:.2f} / {warm['first_query_s']:.2f}",
            f"{snapshot_mb:,.0f}", f"{p50:.1f}", f"{p95:.1f}"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    corpus = load_corpus(SCIFACT)
    texts = [f"{d['title']}. {d['text']}" for d in corpus]
    vectors = get_embedder().encode(texts, 64)
    models = get_settings().model_cache_path
    lines = (SCIFACT / "queries.jsonl").read_text().splitlines()
    queries = [json.loads(line)["text"] for line in lines][: args.queries]
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows.append(measure(size, texts, vectors, queries, models))
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"machine: {machine()}")
    print(f"input: synthetic chunks from {len(texts)} SciFact abstracts, {args.queries} claims")
    print(table(
        "Scale (seconds, MB; a / b: a new web process with no BM25 snapshot / a restart)",
        ["chunks", "write s", "HNSW build s", "HNSW MB", "Postgres MB", "BM25 load s",
         "web peak RSS MB", "first query s", "snapshot MB", "hybrid p50 ms",
         "hybrid p95 ms"],
        rows,
    ))  # fmt: skip


if __name__ == "__main__":
    main()
