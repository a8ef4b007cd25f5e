"""Ingestion throughput: the SciFact corpus through the real pipeline (store, queue, Celery
worker, parse, chunk, embed, index) against bare embedding of the same texts with the same
model and batch size, in the same run. Prints one table.

    .venv/bin/python benchmarks/ingest.py [--limit N]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from app.collections.service import create_collection
from app.db import session_scope
from app.documents import service
from app.documents.bulk import ingest_files, wait_settled
from app.infra.worker_process import WorkerProcess
from app.ingest.chunk import context_prefix
from app.ingest.embed import get_embedder
from app.models import Chunk, Document
from benchmarks.common import SCIFACT, fresh_parts, load_corpus, machine, table


def as_markdown(doc: dict) -> tuple[str, bytes]:
    return f"{doc['_id']}.md", f"# {doc['title']}\n\n{doc['text']}\n".encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=SCIFACT)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    corpus = load_corpus(args.corpus, args.limit)
    files = [as_markdown(d) for d in corpus]

    with fresh_parts() as settings:
        batch = settings.embed_batch_size
        # 1. The pipeline: one Celery worker, as `make run` starts it; its model is loaded
        #    (one warm-up document) before the clock starts.
        with WorkerProcess(settings):
            with session_scope() as s:
                collection = create_collection(s, "warmup")
                warm = service.add_document(s, collection, "w.md", b"# Warm\n\nup", 2**20)
                service.enqueue(s, [warm.document])
            wait_settled([warm.document.id], poll_s=0.25)

            started = time.perf_counter()
            sources = [(name, len(data), lambda data=data: data) for name, data in files]
            ids = ingest_files("scifact", sources, settings)  # as `groundwork ingest` does
            submitted_s = time.perf_counter() - started
            wait_settled(ids, poll_s=0.25)
            pipeline_s = time.perf_counter() - started

        with session_scope() as s:
            indexed = s.scalar(
                select(func.count()).where(Document.id.in_(ids), Document.status == "indexed")
            )
            rows = s.execute(
                select(Document.title, Chunk.heading_path, Chunk.text)
                .join(Document, Document.id == Chunk.document_id)
                .where(Chunk.document_id.in_(ids))
            ).all()
        # Exactly what the pipeline gave the model: each chunk with its title/heading prefix.
        chunk_texts = [f"{context_prefix(t, tuple(h))}\n{x}" for t, h, x in rows]
        chunks = len(chunk_texts)

        # 2. Bare embedding in this process, with nothing else running: the same chunk texts,
        #    and the raw abstracts (which the model cuts at its 256-token window).
        embedder = get_embedder(settings.embedding_model)
        embedder.encode(chunk_texts[:64], batch)  # warm up
        started = time.perf_counter()
        embedder.encode(chunk_texts, batch)
        bare_chunks_s = time.perf_counter() - started
        raw_texts = [f"{d['title']}\n{d['text']}" for d in corpus]
        started = time.perf_counter()
        embedder.encode(raw_texts, batch)
        bare_raw_s = time.perf_counter() - started
        tokens = sum(embedder.count_tokens(chunk_texts))
        raw_tokens = sum(min(n, embedder.max_tokens) for n in embedder.count_tokens(raw_texts))

    n = len(corpus)
    table_rows = [
        [
            "pipeline: store, queue, parse, chunk, embed, index",
            f"{pipeline_s:.1f}",
            f"{n / pipeline_s:.1f}",
            f"{chunks / pipeline_s:.1f}",
            f"{tokens / pipeline_s:.0f}",
            f"{bare_chunks_s / pipeline_s:.2f}",
        ],
        [
            "bare embedding of the pipeline's chunk texts",
            f"{bare_chunks_s:.1f}",
            f"{n / bare_chunks_s:.1f}",
            f"{chunks / bare_chunks_s:.1f}",
            f"{tokens / bare_chunks_s:.0f}",
            "1.00",
        ],
        [
            "bare embedding of the raw abstracts (cut at 256 tokens)",
            f"{bare_raw_s:.1f}",
            f"{n / bare_raw_s:.1f}",
            "",
            f"{raw_tokens / bare_raw_s:.0f}",
            f"{bare_chunks_s / bare_raw_s:.2f}",
        ],
    ]
    print(f"machine: {machine()}")
    print(
        f"input: {n} SciFact abstracts from {args.corpus}; {indexed} indexed into {chunks} "
        f"chunks ({tokens} tokens embedded; the raw abstracts hold {raw_tokens} tokens within "
        f"the model's window); model {settings.embedding_model}, batch {batch}, "
        f"one Celery worker with {settings.worker_concurrency} pool processes; submitting "
        f"took {submitted_s:.1f}s of the pipeline time"
    )
    print(
        table(
            "Ingestion throughput (ratio: bare embedding time of the same chunk texts / time)",
            ["path", "seconds", "docs/s", "chunks/s", "tokens/s", "ratio"],
            table_rows,
        )
    )


if __name__ == "__main__":
    main()
