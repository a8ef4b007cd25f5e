"""Reindexing a document, a collection or everything, with progress an admin can follow.
Functions flush and ask for their jobs; the caller's unit of work commits."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.accounts.service import Account
from app.documents.service import enqueue
from app.errors import Invalid, NotFound
from app.models import IN_FLIGHT, Collection, Document, DocumentStatus, ReindexJob

# Document ids are Postgres bigints.
MAX_DOCUMENT_ID = 2**63 - 1


def document_id(target: str | None) -> int:
    """A document id typed by a person, or `Invalid` saying what was expected."""
    text = (target or "").strip()
    if not text:
        raise Invalid("name the id of the document to reindex")
    if not re.fullmatch(r"[0-9]{1,19}", text) or not 0 < int(text) <= MAX_DOCUMENT_ID:
        raise Invalid(f"{text[:40]!r} is not a document id (a whole number from 1 to 2^63-1)")
    return int(text)


def reindex(
    session: Session, scope: str, target: str | None, actor: Account | None
) -> tuple[ReindexJob, list[Document]]:
    """Queue documents to be parsed, chunked and embedded again (their old chunks keep
    serving until the new ones replace them). Returns the job and its documents."""
    query = select(Document).where(
        Document.status.in_((DocumentStatus.indexed, DocumentStatus.failed))
    )
    if scope == "document":
        query = query.where(Document.id == document_id(target))
    elif scope == "collection":
        if not target:
            raise Invalid("name the collection to reindex")
        collection = session.scalar(select(Collection).where(Collection.name == target))
        if collection is None:
            raise NotFound(f"no collection named {target!r}")
        query = query.where(Document.collection_id == collection.id)
    elif scope != "all":
        raise Invalid("reindex a document, a collection or all")
    docs = list(session.scalars(query.order_by(Document.id)))
    if not docs:
        raise NotFound(
            "nothing to reindex: no indexed or failed document there (documents queued or "
            "being indexed, by a reindex under way too, are being indexed now)"
        )
    for doc in docs:
        doc.status = DocumentStatus.queued
        doc.error = None
    enqueue(session, docs)
    job = ReindexJob(
        scope=scope,
        target=target,
        document_ids=[d.id for d in docs],
        created_by=actor.id if actor else None,
    )
    session.add(job)
    session.flush()
    return job, docs


@dataclass
class Progress:
    done: int
    total: int

    @property
    def percent(self) -> int:
        return 100 if not self.total else int(100 * self.done / self.total)

    @property
    def finished(self) -> bool:
        return self.done >= self.total


def reindex_progress(session: Session, job: ReindexJob) -> Progress:
    """Documents settled since the job started (deleted ones count as done)."""
    pending = session.scalar(
        select(func.count()).where(
            Document.id.in_(job.document_ids),
            (Document.status.in_(IN_FLIGHT))
            | (
                (Document.status == DocumentStatus.indexed) & (Document.indexed_at < job.created_at)
            ),
        )
    )
    total = len(job.document_ids)
    return Progress(total - int(pending or 0), total)
