"""The ingestion pipeline: parse, chunk, embed, index, for a batch of documents.

`run()` is the body of the Celery task (and what tests call directly). A task carries one
document (an upload from the browser) or a batch of small ones (a folder from the CLI, a
multi-file API call): each document is parsed and chunked on its own, then the chunks of the
whole batch are embedded together, sorted by length in batches of EMBED_BATCH_SIZE, which is
as fast as embedding gets; then each document is written in its own transaction.

`run()` owns the units of work: status changes are committed (at most every half second) so
the person who uploaded can follow them, and all of a document's chunks are written in one
final transaction. It is idempotent: an indexed document is skipped, and a document whose
advisory lock another worker holds is left to that worker. A document that fails (a file no
parser can read) fails alone; the rest of its batch goes on.

`build()` fills a generation being built beside the live one (a model or chunking change)
with a batch of already indexed documents, without touching their status.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePath

import numpy as np
import redis.exceptions
import sqlalchemy.exc
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Connection, delete, func, select, text, update

from app.config import get_settings
from app.db import get_engine, session_scope
from app.ingest.chunk import chunk_document, context_prefix
from app.ingest.embed import get_embedder
from app.ingest.index import (
    TARGET_STATES,
    DocumentChunks,
    ensure_live_generation,
    record_change,
    replace_chunks,
    target_generations,
)
from app.ingest.parse import parse
from app.ingest.structure import Assembled, ParseError, assemble
from app.models import Document, DocumentFile, DocumentStatus, IndexGeneration, IngestionAttempt
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
EMBED_SLICE = 256  # chunks embedded between two progress updates


@dataclass
class Plan:
    generation_id: int
    model: str
    chunk_tokens: int
    overlap_tokens: int


@dataclass
class Job:
    document_id: int
    attempt_id: int | None  # None when building a new generation
    content_type: str
    filename: str
    data: bytes
    plans: list[Plan]
    assembled: Assembled | None = None
    title: str = ""
    page_count: int | None = None
    rows: list[list[dict]] = field(default_factory=list)  # per plan
    texts: list[list[str]] = field(default_factory=list)  # per plan: what the model reads
    vectors: list[np.ndarray] = field(default_factory=list)  # per plan
    outcome: str | None = None

    @property
    def chunks(self) -> int:
        return sum(len(r) for r in self.rows)


# -- small units of work ---------------------------------------------------------------------


def _finish_attempt(session, attempt_id: int, outcome: str, error: str | None = None) -> None:
    session.execute(
        update(IngestionAttempt)
        .where(IngestionAttempt.id == attempt_id)
        .values(outcome=outcome, error=error, finished_at=datetime.now(UTC))
    )


def _fail(job: Job, reason: str) -> None:
    job.outcome = "failed"
    if job.attempt_id is None:
        log.warning("document %s not added to the new generation: %s", job.document_id, reason)
        return
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(Document.id == job.document_id)
            .values(status=DocumentStatus.failed, error=reason[:2000])
        )
        _finish_attempt(session, job.attempt_id, "failed", reason[:2000])


def give_up(document_ids: list[int], reason: str) -> None:
    """After the last retry of a transient error: unsettled documents end `failed`."""
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(
                Document.id.in_(document_ids),
                Document.status.not_in((DocumentStatus.indexed, DocumentStatus.rejected)),
            )
            .values(status=DocumentStatus.failed, error=reason[:2000])
        )


class _Progress:
    """Status a person can follow, committed at most every PROGRESS_INTERVAL_S unless forced
    (the start of embedding, once per batch): a small document goes from queued to indexed in
    a few commits, a large one shows each stage and its embedding count."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self, jobs: list[Job], force: bool = False, **values: object) -> None:
        jobs = [j for j in jobs if j.attempt_id is not None and j.outcome is None]
        now = time.monotonic()
        if not jobs or (not force and now - self.last < PROGRESS_INTERVAL_S):
            return
        self.last = now
        with session_scope() as session:
            session.execute(text("SET LOCAL synchronous_commit = off"))  # progress, not state
            for job in jobs:
                own = {k: (v(job) if callable(v) else v) for k, v in values.items()}
                session.execute(
                    update(Document).where(Document.id == job.document_id).values(**own)
                )


def _begin(
    document_ids: list[int], task_id: str | None, worker: str | None
) -> tuple[list[Job], dict[int, str]]:
    """In one transaction: start an attempt for each document and load what it needs, or
    say why there is nothing to do for it."""
    settings = get_settings()
    outcomes: dict[int, str] = dict.fromkeys(document_ids, "gone")
    jobs: list[Job] = []
    with session_scope() as session:
        docs = session.scalars(
            select(Document)
            .where(Document.id.in_(document_ids))
            .order_by(Document.id)
            .with_for_update()
        ).all()
        todo = [
            d for d in docs if d.status not in (DocumentStatus.indexed, DocumentStatus.rejected)
        ]
        outcomes.update({d.id: "skipped" for d in docs if d not in todo})
        if not todo:
            return jobs, outcomes
        ids = [d.id for d in todo]
        # We hold the documents' locks, so attempts still `running` belong to dead workers.
        session.execute(
            update(IngestionAttempt)
            .where(IngestionAttempt.document_id.in_(ids), IngestionAttempt.outcome == "running")
            .values(
                outcome="crashed",
                error="the worker stopped in the middle of this document",
                finished_at=datetime.now(UTC),
            )
        )
        crashes = dict(
            session.execute(
                select(IngestionAttempt.document_id, func.count())
                .where(IngestionAttempt.document_id.in_(ids), IngestionAttempt.outcome == "crashed")
                .group_by(IngestionAttempt.document_id)
            ).all()
        )
        files = dict(
            session.execute(
                select(DocumentFile.document_id, DocumentFile.data).where(
                    DocumentFile.document_id.in_(ids)
                )
            ).all()
        )
        generations = target_generations(session) or [ensure_live_generation(session, settings)]
        plans = [_plan(g) for g in generations]
        for doc in todo:
            crashed = crashes.get(doc.id, 0)
            if crashed >= settings.max_task_attempts:
                doc.status = DocumentStatus.failed
                doc.error = (
                    f"the worker processing this document stopped {crashed} times "
                    "(killed, out of memory or past the time limit); not retrying"
                )
                outcomes[doc.id] = "failed"
                continue
            if doc.id not in files:
                continue
            attempt = IngestionAttempt(document_id=doc.id, task_id=task_id, worker=worker)
            session.add(attempt)
            doc.status = DocumentStatus.parsing
            doc.error = None
            doc.chunks_done = 0
            session.flush()
            jobs.append(
                Job(doc.id, attempt.id, doc.content_type, doc.filename, files[doc.id], list(plans))
            )
    return jobs, outcomes


def _plan(g: IndexGeneration) -> Plan:
    return Plan(g.id, g.embedding_model, g.chunk_tokens, g.chunk_overlap_tokens)


@contextlib.contextmanager
def _locked(document_ids: list[int]) -> Iterator[list[int]]:
    """The documents whose advisory lock we could take, held until the end of the block on a
    connection of its own (a worker that dies drops its connection, and with it its locks)."""
    with get_engine().connect() as conn:
        held = [d for d in document_ids if _try_lock(conn, d)]
        conn.commit()
        try:
            yield held
        finally:
            for d in held:
                conn.execute(select(func.pg_advisory_unlock(_LOCK_BASE + d)))
            conn.commit()


def _try_lock(conn: Connection, document_id: int) -> bool:
    return bool(conn.execute(select(func.pg_try_advisory_lock(_LOCK_BASE + document_id))).scalar())


# -- the pipeline ----------------------------------------------------------------------------


def run(
    document_ids: list[int], *, task_id: str | None = None, worker: str | None = None
) -> dict[int, str]:
    """Ingest documents; returns what happened to each (indexed, failed, skipped, gone,
    busy)."""
    outcomes = dict.fromkeys(document_ids, "busy")
    with _locked(document_ids) as held:
        jobs, begun = _begin(held, task_id, worker)
        outcomes.update(begun)
        _process(jobs)
        outcomes.update({j.document_id: j.outcome or "failed" for j in jobs})
    return outcomes


def build(document_ids: list[int], generation_id: int) -> dict[int, str]:
    """Add indexed documents to a generation being built (their status does not change)."""
    outcomes = dict.fromkeys(document_ids, "busy")
    with _locked(document_ids) as held:
        with session_scope() as session:
            generation = session.get(IndexGeneration, generation_id)
            if generation is None or generation.state != "building":
                return dict.fromkeys(document_ids, "skipped")
            plan = _plan(generation)
            rows = session.execute(
                select(Document.id, Document.content_type, Document.filename, DocumentFile.data)
                .join(DocumentFile, DocumentFile.document_id == Document.id)
                .where(Document.id.in_(held), Document.status == DocumentStatus.indexed)
            ).all()
        jobs = [Job(d, None, ct, fn, data, [plan]) for d, ct, fn, data in rows]
        outcomes.update(dict.fromkeys(held, "skipped"))
        _process(jobs)
        outcomes.update({j.document_id: j.outcome or "failed" for j in jobs})
    return outcomes


def _process(jobs: list[Job]) -> None:
    settings = get_settings()
    progress = _Progress()
    try:
        for job in jobs:
            _prepare(job)
            progress([job], status=DocumentStatus.chunking, page_count=job.page_count)
        ready = [j for j in jobs if j.outcome is None]
        progress(
            ready, force=True, status=DocumentStatus.embedding, chunks_total=lambda j: j.chunks
        )
        _embed(ready, settings.embed_batch_size, progress)
        _write(ready)
    except SoftTimeLimitExceeded:
        for job in jobs:
            if job.outcome is None:
                limit = settings.task_time_limit_s
                _fail(job, f"took longer than the {limit}s limit (TASK_TIME_LIMIT_S)")
    except TRANSIENT as err:
        with contextlib.suppress(*TRANSIENT), session_scope() as session:
            for job in jobs:
                if job.outcome is None and job.attempt_id is not None:
                    _finish_attempt(session, job.attempt_id, "retrying", str(err)[:2000])
        raise
    except Exception as err:
        log.exception("ingesting documents %s failed", [j.document_id for j in jobs])
        for job in jobs:
            if job.outcome is None:
                _fail(job, f"internal error: {type(err).__name__}: {err}")


def _prepare(job: Job) -> None:
    """Parse the file and chunk it for each target generation."""
    try:
        parsed = parse(job.content_type, job.data, job.filename)
    except ParseError as err:
        _fail(job, str(err))
        return
    job.data = b""
    job.page_count = parsed.page_count
    job.assembled = assemble(parsed)
    job.title = parsed.title or PurePath(job.filename).stem
    for plan in job.plans:
        embedder = get_embedder(plan.model)
        specs = chunk_document(
            job.assembled,
            job.title,
            embedder.count_tokens,
            chunk_tokens=plan.chunk_tokens,
            overlap_tokens=plan.overlap_tokens,
            max_sequence_tokens=embedder.max_tokens,
        )
        rows, texts = [], []
        for spec in specs:
            prefix = context_prefix(job.title, spec.heading_path)
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
        job.rows.append(rows)
        job.texts.append(texts)


def _embed(jobs: list[Job], batch_size: int, progress: _Progress) -> None:
    """Embed every chunk of the batch, one model at a time, in slices of EMBED_SLICE texts
    (the model sorts each slice by length, so padding stays small), telling each document how
    many of its chunks are done after each slice."""
    for job in jobs:
        job.vectors = [np.zeros((0, 0), dtype=np.float32) for _ in job.plans]
    done = dict.fromkeys((j.document_id for j in jobs), 0)
    for model in sorted({plan.model for job in jobs for plan in job.plans}):
        embedder = get_embedder(model)
        owners = [(j, i) for j in jobs for i, plan in enumerate(j.plans) if plan.model == model]
        offsets = np.cumsum([0] + [len(j.texts[i]) for j, i in owners])
        texts = [t for j, i in owners for t in j.texts[i]]
        parts = [np.zeros((0, embedder.dimension), dtype=np.float32)]
        for start in range(0, len(texts), EMBED_SLICE):
            parts.append(embedder.encode(texts[start : start + EMBED_SLICE], batch_size))
            embedded = start + len(parts[-1])
            for (job, _), first, last in zip(owners, offsets[:-1], offsets[1:], strict=True):
                done[job.document_id] += int(np.clip(embedded - first, 0, last - first)) - int(
                    np.clip(start - first, 0, last - first)
                )
            progress(jobs, chunks_done=lambda j: done[j.document_id])
        vectors = np.concatenate(parts)
        for (job, i), first, last in zip(owners, offsets[:-1], offsets[1:], strict=True):
            job.vectors[i] = vectors[first:last]


def _write(jobs: list[Job]) -> None:
    """One transaction for the batch: each document's chunks in every target generation, the
    documents indexed, their older versions removed, and the changes noted for in-memory
    indexes. A reader sees a document's old chunks or its new ones, never both or neither.
    Outcomes are set once the transaction has committed: if it fails, the batch fails."""
    if not jobs:
        return
    outcomes: dict[int, str] = {}
    with session_scope() as session:
        docs = {
            d.id: d
            for d in session.scalars(
                select(Document)
                .where(Document.id.in_([j.document_id for j in jobs]))
                .order_by(Document.id)
                .with_for_update()
            )
        }
        generations = {
            g.id: g
            for g in session.scalars(
                select(IndexGeneration).where(
                    IndexGeneration.id.in_({p.generation_id for j in jobs for p in j.plans}),
                    IndexGeneration.state.in_(TARGET_STATES),  # not cancelled meanwhile
                )
            )
        }
        # Two versions of one file in the same batch (one upload with the name twice): the
        # newer replaces the older, which is removed below rather than written.
        newest = {(d.collection_id, d.filename): d.id for d in docs.values()}
        changed: list[int] = []
        chunks: dict[int, list[DocumentChunks]] = {g: [] for g in generations}
        for job in jobs:
            doc = docs.get(job.document_id)
            if doc is None:
                outcomes[job.document_id] = "gone"
                continue
            if job.attempt_id is not None and newest[doc.collection_id, doc.filename] != doc.id:
                outcomes[doc.id] = "superseded"  # deleted, with its attempts, by the newer
                continue
            live_chunks = 0
            for plan, rows, vectors in zip(job.plans, job.rows, job.vectors, strict=True):
                generation = generations.get(plan.generation_id)
                if generation is None:
                    continue
                if generation.state == "live":
                    live_chunks = len(rows)
                chunks[generation.id].append(
                    DocumentChunks(doc.id, doc.collection_id, rows, vectors)
                )
            outcomes[doc.id] = "indexed"
            if job.attempt_id is None:  # building a generation: the document stays as it is
                continue
            older = list(  # earlier versions, and earlier uploads of the name that were refused
                session.scalars(
                    select(Document.id).where(
                        Document.collection_id == doc.collection_id,
                        Document.filename == doc.filename,
                        Document.id < doc.id,
                    )
                )
            )
            if older:
                session.execute(delete(Document).where(Document.id.in_(older)))
            assert job.assembled is not None
            doc.status = DocumentStatus.indexed
            doc.error = None
            doc.title = job.title
            doc.text = job.assembled.text
            doc.page_count = job.page_count
            doc.chunks_total = live_chunks
            doc.chunks_done = live_chunks
            doc.indexed_at = datetime.now(UTC)
            changed += [doc.id, *older]
        for generation_id, documents in chunks.items():
            replace_chunks(session, generations[generation_id], documents)
        attempts = [
            j.attempt_id
            for j in jobs
            if j.attempt_id is not None and outcomes.get(j.document_id) == "indexed"
        ]
        if attempts:
            session.execute(
                update(IngestionAttempt)
                .where(IngestionAttempt.id.in_(attempts))
                .values(outcome="indexed", finished_at=datetime.now(UTC))
            )
        session.flush()
        if changed:
            record_change(session, changed)
    for job in jobs:
        job.outcome = outcomes.get(job.document_id)
