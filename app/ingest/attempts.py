"""The units of work around ingesting documents: each document's advisory lock, its
ingestion attempts (started, failed, crashed), the progress a person can follow, and the
work items (`WorkItem`) the pipeline passes from stage to stage."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import redis.exceptions
import sqlalchemy.exc
from sqlalchemy import Connection, func, select, text, update

from app import jobs
from app.config import get_settings
from app.db import get_engine, session_scope
from app.ingest.index import ensure_live_generation, target_generations
from app.ingest.structure import Assembled
from app.models import (
    IN_FLIGHT,
    Document,
    DocumentFile,
    DocumentStatus,
    IndexGeneration,
    IngestionAttempt,
)
from app.monitoring.metrics import record_ingested

log = logging.getLogger(__name__)

# Errors worth retrying: the database or the broker went away for a moment.
TRANSIENT = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
_LOCK_BASE = 1 << 40  # advisory lock keys for documents: base + document id


def lock_key(document_id: int) -> int:
    """The advisory lock a worker holds on a document while it ingests it."""
    return _LOCK_BASE + document_id


PROGRESS_INTERVAL_S = 0.5


@dataclass
class Plan:
    generation_id: int
    model: str
    chunk_tokens: int
    overlap_tokens: int


@dataclass
class WorkItem:
    document_id: int
    attempt_id: int | None  # None when building a new generation
    content_type: str
    filename: str
    data: bytes
    plans: list[Plan]
    source_url: str | None = None  # a web page's address
    assembled: Assembled | None = None
    title: str = ""
    page_count: int | None = None
    ocr_confidence: float | None = None  # of the text read by OCR, if any was
    ocr_pages: dict[str, float] | None = None  # page -> confidence
    notes: str | None = None
    rows: list[list[dict]] = field(default_factory=list)  # per plan
    texts: list[list[str]] = field(default_factory=list)  # per plan: what the model reads
    vectors: list[np.ndarray] = field(default_factory=list)  # per plan
    outcome: str | None = None

    @property
    def chunks(self) -> int:
        return sum(len(r) for r in self.rows)


def finish_attempt(session, attempt_id: int, outcome: str, error: str | None = None) -> None:
    session.execute(
        update(IngestionAttempt)
        .where(IngestionAttempt.id == attempt_id)
        .values(outcome=outcome, error=error, finished_at=datetime.now(UTC))
    )


def fail(item: WorkItem, reason: str) -> None:
    item.outcome = "failed"
    if item.attempt_id is None:
        log.warning("document %s not added to the new generation: %s", item.document_id, reason)
        return
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(Document.id == item.document_id)
            .values(status=DocumentStatus.failed, error=reason[:2000])
        )
        finish_attempt(session, item.attempt_id, "failed", reason[:2000])


# -- a worker that stops hands its documents back -------------------------------------------

_stop = threading.Event()


class Interrupted(Exception):
    """The worker is stopping: the documents in hand go back to the queue."""


def request_stop(*_: object) -> None:
    """Called in a pool process when its worker shuts down (a signal handler): the pipeline
    stops at its next checkpoint (before each document's parsing, after each embedding
    slice) and hands its documents back."""
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def checkpoint() -> None:
    if _stop.is_set():
        raise Interrupted


def hand_back(items: list[WorkItem]) -> None:
    """Documents a stopping worker had begun are queued again and asked for at once; their
    attempt ends `retrying` (a graceful stop is not a crash, and does not count towards
    MAX_TASK_ATTEMPTS). Work on a new generation is left for the next build job."""
    mine = [i for i in items if i.outcome is None and i.attempt_id is not None]
    for item in items:
        if item.outcome is None:
            item.outcome = "handed back"
    if not mine:
        return
    ids = [i.document_id for i in mine]
    with session_scope() as session:
        for item in mine:
            assert item.attempt_id is not None
            finish_attempt(session, item.attempt_id, "retrying", "the worker stopped: handed back")
        session.execute(
            update(Document)
            .where(Document.id.in_(ids), Document.status.in_(IN_FLIGHT))
            .values(status=DocumentStatus.queued, chunks_done=0)
        )
        jobs.enqueue(session, jobs.INGEST_DOCUMENTS, ids)
    log.info("handed back documents %s: the worker is stopping", ids)


def give_up(document_ids: list[int], reason: str) -> None:
    """After the last retry of a transient error: unsettled documents end `failed`."""
    with session_scope() as session:
        failed = session.execute(
            update(Document)
            .where(
                Document.id.in_(document_ids),
                Document.status.not_in((DocumentStatus.indexed, DocumentStatus.rejected)),
            )
            .values(status=DocumentStatus.failed, error=reason[:2000])
        )
    record_ingested(["failed"] * int(failed.rowcount or 0))  # type: ignore[attr-defined]


class Progress:
    """Status a person can follow, committed at most every PROGRESS_INTERVAL_S unless forced
    (the start of embedding, once per batch): a small document goes from queued to indexed in
    a few commits, a large one shows each stage and its embedding count."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self, items: list[WorkItem], force: bool = False, **values: object) -> None:
        items = [j for j in items if j.attempt_id is not None and j.outcome is None]
        now = time.monotonic()
        if not items or (not force and now - self.last < PROGRESS_INTERVAL_S):
            return
        self.last = now
        with session_scope() as session:
            session.execute(text("SET LOCAL synchronous_commit = off"))  # progress, not state
            for item in items:
                own = {k: (v(item) if callable(v) else v) for k, v in values.items()}
                session.execute(
                    update(Document).where(Document.id == item.document_id).values(**own)
                )


def begin(
    document_ids: list[int], task_id: str | None, worker: str | None
) -> tuple[list[WorkItem], dict[int, str]]:
    """In one transaction: start an attempt for each document and load what it needs, or
    say why there is nothing to do for it."""
    settings = get_settings()
    outcomes: dict[int, str] = dict.fromkeys(document_ids, "gone")
    items: list[WorkItem] = []
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
            return items, outcomes
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
        plans = [plan_of(g) for g in generations]
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
            data = files[doc.id]
            items.append(
                WorkItem(
                    doc.id,
                    attempt.id,
                    doc.content_type,
                    doc.filename,
                    data,
                    list(plans),
                    source_url=doc.source_url,
                )
            )
    return items, outcomes


def plan_of(g: IndexGeneration) -> Plan:
    return Plan(g.id, g.embedding_model, g.chunk_tokens, g.chunk_overlap_tokens)


@contextlib.contextmanager
def locked(document_ids: list[int]) -> Iterator[list[int]]:
    """The documents whose advisory lock we could take, held until the end of the block on a
    connection of its own (a worker that dies drops its connection, and with it its locks)."""
    with get_engine().connect() as conn:
        held = [d for d in document_ids if try_lock(conn, d)]
        conn.commit()
        try:
            yield held
        finally:
            for d in held:
                conn.execute(select(func.pg_advisory_unlock(lock_key(d))))
            conn.commit()


def try_lock(conn: Connection, document_id: int) -> bool:
    return bool(conn.execute(select(func.pg_try_advisory_lock(lock_key(document_id)))).scalar())
