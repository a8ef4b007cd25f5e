"""The ingestion pipeline for one document: parse, chunk, embed, index.

`run()` is the body of the Celery task (and what tests call directly). It owns the units of
work: each status change is committed so the person who uploaded can follow it, and all of
a document's chunks are written in one final transaction. It is idempotent: an indexed
document is skipped, and a second delivery of the same task while the first still runs
finds the document's advisory lock taken and leaves it alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePath

import numpy as np
import redis.exceptions
import sqlalchemy.exc
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import delete, func, select, text, update

from app.config import get_settings
from app.db import get_engine, session_scope
from app.ingest.chunk import chunk_document, context_prefix
from app.ingest.embed import get_embedder
from app.ingest.index import (
    ensure_live_generation,
    record_change,
    replace_chunks,
    target_generations,
)
from app.ingest.parse import parse
from app.ingest.structure import Assembled, ParseError, assemble
from app.models import Document, DocumentFile, DocumentStatus, IngestionAttempt
from app.retrieval.tokenize import tokenize

log = logging.getLogger(__name__)

# Errors worth retrying: the database or the broker went away for a moment.
TRANSIENT = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
_LOCK_BASE = 1 << 40  # advisory lock keys for documents: base + document id
PROGRESS_INTERVAL_S = 0.5


def _finish_attempt(session, attempt_id: int, outcome: str, error: str | None = None) -> None:
    session.execute(
        update(IngestionAttempt)
        .where(IngestionAttempt.id == attempt_id)
        .values(outcome=outcome, error=error, finished_at=datetime.now(UTC))
    )


def _fail(document_id: int, attempt_id: int | None, reason: str) -> str:
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(Document.id == document_id)
            .values(status=DocumentStatus.failed, error=reason[:2000])
        )
        if attempt_id is not None:
            _finish_attempt(session, attempt_id, "failed", reason[:2000])
    return "failed"


def give_up(document_id: int, reason: str) -> None:
    """After the last retry of a transient error: the document ends `failed`."""
    _fail(document_id, None, reason)


@dataclass
class _Job:
    attempt_id: int
    content_type: str
    filename: str
    data: bytes
    plans: list[tuple[int, str, int, int]]  # generation id, model, chunk tokens, overlap


class _Progress:
    """Status changes a person can follow, committed at most every PROGRESS_INTERVAL_S:
    a small document goes from queued to indexed in a few commits, a large one shows each
    stage and its embedding count."""

    def __init__(self, document_id: int):
        self.document_id = document_id
        self.last = time.monotonic()

    def __call__(self, **values: object) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        with session_scope() as session:
            session.execute(text("SET LOCAL synchronous_commit = off"))  # progress, not state
            session.execute(
                update(Document).where(Document.id == self.document_id).values(**values)
            )


def _begin(document_id: int, task_id: str | None, worker: str | None) -> _Job | str:
    """Start an attempt and load what it needs, or say why there is nothing to do."""
    settings = get_settings()
    with session_scope() as session:
        doc = session.get(Document, document_id, with_for_update=True)
        if doc is None:
            return "gone"
        if doc.status in (DocumentStatus.indexed, DocumentStatus.rejected):
            return "skipped"
        # We hold the document's lock, so attempts still `running` belong to dead workers.
        session.execute(
            update(IngestionAttempt)
            .where(
                IngestionAttempt.document_id == document_id, IngestionAttempt.outcome == "running"
            )
            .values(
                outcome="crashed",
                error="the worker stopped in the middle of this document",
                finished_at=datetime.now(UTC),
            )
        )
        crashed = session.scalar(
            select(func.count())
            .select_from(IngestionAttempt)
            .where(
                IngestionAttempt.document_id == document_id, IngestionAttempt.outcome == "crashed"
            )
        )
        if crashed and crashed >= settings.max_task_attempts:
            doc.status = DocumentStatus.failed
            doc.error = (
                f"the worker processing this document stopped {crashed} times "
                "(killed, out of memory or past the time limit); not retrying"
            )
            return "failed"
        data = session.scalar(
            select(DocumentFile.data).where(DocumentFile.document_id == document_id)
        )
        if data is None:
            return "gone"
        generations = target_generations(session) or [ensure_live_generation(session, settings)]
        attempt = IngestionAttempt(document_id=document_id, task_id=task_id, worker=worker)
        session.add(attempt)
        doc.status = DocumentStatus.parsing
        doc.error = None
        doc.chunks_done = 0
        session.flush()
        return _Job(
            attempt_id=attempt.id,
            content_type=doc.content_type,
            filename=doc.filename,
            data=data,
            plans=[
                (g.id, g.embedding_model, g.chunk_tokens, g.chunk_overlap_tokens)
                for g in generations
            ],
        )


def run(document_id: int, *, task_id: str | None = None, worker: str | None = None) -> str:
    """Ingest one document; returns what happened (indexed, failed, skipped, gone, busy)."""
    with get_engine().connect() as lock:
        key = _LOCK_BASE + document_id
        if not lock.execute(select(func.pg_try_advisory_lock(key))).scalar():
            return "busy"
        lock.commit()
        try:
            job = _begin(document_id, task_id, worker)
            if isinstance(job, str):
                return job
            return _ingest(document_id, job)
        finally:
            lock.execute(select(func.pg_advisory_unlock(key)))
            lock.commit()


def _ingest(document_id: int, job: _Job) -> str:
    settings = get_settings()
    progress = _Progress(document_id)
    try:
        parsed = parse(job.content_type, job.data, job.filename)
        job.data = b""
        progress(status=DocumentStatus.chunking, page_count=parsed.page_count)
        assembled = assemble(parsed)
        title = parsed.title or PurePath(job.filename).stem
        prepared = [_prepare(assembled, title, *plan) for plan in job.plans]
        total = sum(len(rows) for _, rows, _ in prepared)
        progress(status=DocumentStatus.embedding, chunks_total=total, chunks_done=0)

        done = 0
        vectors: list[np.ndarray] = []
        for (_, _, embed_texts), (_, model, _, _) in zip(prepared, job.plans, strict=True):
            embedder = get_embedder(model)
            parts = []
            for i in range(0, len(embed_texts), settings.embed_batch_size):
                batch = embed_texts[i : i + settings.embed_batch_size]
                parts.append(embedder.encode(batch, settings.embed_batch_size))
                done += len(batch)
                progress(status=DocumentStatus.embedding, chunks_total=total, chunks_done=done)
            vectors.append(np.concatenate(parts) if parts else np.zeros((0, embedder.dimension)))

        return _write(document_id, job.attempt_id, assembled, title, prepared, vectors)
    except ParseError as err:
        return _fail(document_id, job.attempt_id, str(err))
    except SoftTimeLimitExceeded:
        return _fail(
            document_id,
            job.attempt_id,
            f"took longer than the {settings.task_time_limit_s}s limit (TASK_TIME_LIMIT_S)",
        )
    except TRANSIENT as err:
        try:
            with session_scope() as session:
                _finish_attempt(session, job.attempt_id, "retrying", str(err)[:2000])
        except TRANSIENT:
            pass
        raise
    except Exception as err:
        log.exception("ingesting document %s failed", document_id)
        return _fail(document_id, job.attempt_id, f"internal error: {type(err).__name__}: {err}")


def _prepare(
    assembled: Assembled,
    title: str,
    generation_id: int,
    model: str,
    chunk_tokens: int,
    overlap_tokens: int,
) -> tuple[int, list[dict], list[str]]:
    """Chunk rows for one generation, and the texts to embed for them."""
    embedder = get_embedder(model)
    specs = chunk_document(
        assembled,
        title,
        embedder.count_tokens,
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
        max_sequence_tokens=embedder.max_tokens,
    )
    rows, texts = [], []
    for spec in specs:
        prefix = context_prefix(title, spec.heading_path)
        with_context = f"{prefix}\n{spec.text}" if prefix else spec.text
        texts.append(with_context)
        rows.append(
            {
                "ordinal": spec.ordinal,
                "text": spec.text,
                "lexemes": " ".join(tokenize(with_context)),
                "heading_path": list(spec.heading_path),
                "page_start": spec.page_start,
                "page_end": spec.page_end,
                "char_start": spec.start,
                "char_end": spec.end,
            }
        )
    return generation_id, rows, texts


def _write(
    document_id: int,
    attempt_id: int,
    assembled: Assembled,
    title: str,
    prepared: list[tuple[int, list[dict], list[str]]],
    vectors: list[np.ndarray],
) -> str:
    """One transaction: the chunks of every target generation, the document indexed, a
    superseded older version removed, and the change noted for in-memory indexes."""
    from app.models import IndexGeneration

    with session_scope() as session:
        doc = session.get(Document, document_id, with_for_update=True)
        if doc is None:
            return "gone"
        live_chunks = 0
        for (generation_id, rows, _), embeddings in zip(prepared, vectors, strict=True):
            generation = session.get(IndexGeneration, generation_id)
            if generation is None or generation.state not in ("live", "building"):
                continue  # cancelled or retired while we embedded
            if generation.state == "live":
                live_chunks = len(rows)
            replace_chunks(
                session,
                document_id=document_id,
                collection_id=doc.collection_id,
                generation=generation,
                rows=rows,
                embeddings=embeddings,
            )
        # Older versions (same name, same collection) go in the same transaction: a reader
        # sees the old chunks or the new ones, never both or neither.
        older = list(
            session.scalars(
                select(Document.id).where(
                    Document.collection_id == doc.collection_id,
                    Document.filename == doc.filename,
                    Document.id < doc.id,
                    Document.status != DocumentStatus.rejected,
                )
            )
        )
        if older:
            session.execute(delete(Document).where(Document.id.in_(older)))
        changed = [document_id, *older]
        doc.status = DocumentStatus.indexed
        doc.error = None
        doc.title = title
        doc.text = assembled.text
        doc.chunks_total = live_chunks
        doc.chunks_done = live_chunks
        doc.indexed_at = datetime.now(UTC)
        _finish_attempt(session, attempt_id, "indexed")
        session.flush()
        record_change(session, changed)
    return "indexed"
