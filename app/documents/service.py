"""Documents: what the upload page, the JSON API and `groundwork ingest` all call. Functions
flush and ask for their jobs (`enqueue`); the caller's unit of work commits, which sends them.

`readable` is the collection ids the caller may read (`app.collections.access`),
or None for all (admins, and the CLI). Something in a collection the caller cannot read is
answered as if it did not exist.

A member may add documents to a collection they can read; deleting a document, or replacing
it with new content under its name, is for the member who uploaded it and for admins
(`may_change`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from app import jobs
from app.accounts.service import Account
from app.errors import Conflict, Forbidden, Invalid, NotFound
from app.ingest.detect import Rejected, accept, safe_filename
from app.ingest.index import record_change
from app.models import (
    IN_FLIGHT,
    Chunk,
    Collection,
    Document,
    DocumentFile,
    DocumentStatus,
    IngestionAttempt,
)
from app.monitoring.metrics import record_ingested
from app.retrieval.filters import MAX_LABELS


@dataclass
class Added:
    document: Document
    enqueue: bool  # a new (or retried) document that a worker must process
    duplicate: bool = False  # identical content was already in the collection
    http_status: int = 201  # what an API answers for this file alone


def add_rejected(
    session: Session,
    collection: Collection,
    filename: str,
    size: int,
    reason: str,
    status: int,
    uploaded_by: Account | None = None,
) -> Added:
    doc = Document(
        collection_id=collection.id,
        filename=safe_filename(filename),
        content_type="unknown",
        size_bytes=size,
        sha256=None,
        status=DocumentStatus.rejected,
        error=reason,
        uploaded_by=uploaded_by.id if uploaded_by is not None else None,
    )
    session.add(doc)
    session.flush()
    record_ingested(["rejected"])
    return Added(doc, enqueue=False, http_status=status)


def may_change(who: Account | None, doc: Document) -> bool:
    """Whether `who` may delete or replace the document (None: the command line)."""
    return who is None or who.is_admin or doc.uploaded_by == who.id


def add_document(
    session: Session,
    collection: Collection,
    filename: str,
    data: bytes,
    max_bytes: int,
    uploaded_by: Account | None = None,
    labels: Sequence[str] = (),
) -> Added:
    """Store an upload. Identical content in the same collection is the same document (a
    failed one is retried; labels given are added to it when the uploader may change it);
    the same name with new content is a new version that replaces the old one once it is
    indexed, if the uploader may change that one, and keeps its labels unless new ones are
    given. A file that is not acceptable is recorded as rejected. `labels`: checked ones
    (`app.retrieval.filters.check_labels`)."""
    name = safe_filename(filename)
    try:
        content_type = accept(data, name, max_bytes)
    except Rejected as err:
        return add_rejected(
            session, collection, name, len(data), err.reason, err.status, uploaded_by
        )
    sha256 = hashlib.sha256(data).hexdigest()
    existing = same_content(session, collection.id, sha256)
    if existing is not None:
        return _duplicate(existing, labels, uploaded_by)
    previous = current_version(session, collection.id, name)
    if previous is not None and not may_change(uploaded_by, previous):
        reason = f"{name} was uploaded by someone else: only they or an admin can replace it"
        return add_rejected(session, collection, name, len(data), reason, 403, uploaded_by)
    doc = Document(
        collection_id=collection.id,
        filename=name,
        content_type=content_type,
        size_bytes=len(data),
        sha256=sha256,
        status=DocumentStatus.queued,
        supersedes_id=previous.id if previous is not None else None,
        uploaded_by=uploaded_by.id if uploaded_by is not None else None,
        labels=list(labels) or (list(previous.labels) if previous is not None else []),
    )
    try:
        with session.begin_nested():
            session.add(doc)
            session.flush()
            session.add(DocumentFile(document_id=doc.id, data=data))
            session.flush()
    except IntegrityError:  # the same content arrived concurrently
        existing = same_content(session, collection.id, sha256)
        if existing is None:
            raise
        return _duplicate(existing, labels, uploaded_by)
    return Added(doc, enqueue=True)


def current_version(session: Session, collection_id: int, filename: str) -> Document | None:
    """The newest (not rejected) document of that name in the collection: the one an upload
    of the name replaces."""
    return session.scalar(
        select(Document)
        .where(
            Document.collection_id == collection_id,
            Document.filename == filename,
            Document.status != DocumentStatus.rejected,
        )
        .order_by(Document.id.desc())
        .limit(1)
    )


def same_content(session: Session, collection_id: int, sha256: str) -> Document | None:
    return session.scalar(
        select(Document).where(
            Document.collection_id == collection_id,
            Document.sha256 == sha256,
            Document.status != DocumentStatus.rejected,
        )
    )


def _duplicate(existing: Document, labels: Sequence[str], who: Account | None) -> Added:
    added = [label for label in labels if label not in existing.labels]
    if added and may_change(who, existing):
        if len(existing.labels) + len(added) > MAX_LABELS:
            raise Invalid(
                f"{existing.filename} is already stored with {len(existing.labels)} labels; "
                f"adding {len(added)} would pass the limit of {MAX_LABELS}"
            )
        existing.labels = [*existing.labels, *added]
    if existing.status == DocumentStatus.failed:
        existing.status = DocumentStatus.queued
        existing.error = None
        return Added(existing, enqueue=True, duplicate=True)
    return Added(existing, enqueue=False, duplicate=True, http_status=200)


def get_document(session: Session, document_id: int, readable: list[int] | None = None) -> Document:
    doc = session.get(Document, document_id)
    if doc is None or (readable is not None and doc.collection_id not in readable):
        raise NotFound(f"no document {document_id}")
    return doc


def brought_by(session: Session, sitemap_ids: list[int]) -> list[int]:
    """The documents that these sitemaps brought, oldest first."""
    if not sitemap_ids:
        return []
    return list(
        session.scalars(
            select(Document.id).where(Document.sitemap_id.in_(sitemap_ids)).order_by(Document.id)
        )
    )


def document_file(
    session: Session, document_id: int, readable: list[int] | None = None
) -> tuple[Document, bytes]:
    doc = get_document(session, document_id, readable)
    data = session.scalar(select(DocumentFile.data).where(DocumentFile.document_id == doc.id))
    if data is None:
        raise NotFound(f"document {document_id} has no stored file (it was rejected)")
    return doc, data


LIST_LIMIT = 1000  # documents listed at once (the API pages past it with `offset`)


def list_documents(
    session: Session,
    *,
    collection_id: int | None = None,
    ids: list[int] | None = None,
    readable: list[int] | None = None,
    limit: int | None = LIST_LIMIT,
    offset: int = 0,
) -> list[Document]:
    """Newest first; `limit` None for all."""
    query = _documents(select(Document), collection_id, ids, readable)
    query = query.options(joinedload(Document.collection)).order_by(Document.id.desc())
    return list(session.scalars(query.offset(offset).limit(limit)))


def count_documents(
    session: Session, *, collection_id: int | None = None, readable: list[int] | None = None
) -> int:
    query = _documents(select(func.count()).select_from(Document), collection_id, None, readable)
    return int(session.scalar(query) or 0)


def documents_by_status(session: Session) -> dict[str, int]:
    """How many documents are in each status (for /metrics)."""
    rows = session.execute(select(Document.status, func.count()).group_by(Document.status))
    return {status: int(n) for status, n in rows}


def _documents(query, collection_id: int | None, ids: list[int] | None, readable):
    if collection_id is not None:
        query = query.where(Document.collection_id == collection_id)
    if ids is not None:
        query = query.where(Document.id.in_(ids))
    if readable is not None:
        query = query.where(Document.collection_id.in_(readable))
    return query


def delete_document(
    session: Session,
    document_id: int,
    readable: list[int] | None = None,
    who: Account | None = None,
) -> Document:
    """Remove a document, its file and its chunks; search stops finding it at the commit."""
    doc = get_document(session, document_id, readable)
    if not may_change(who, doc):
        raise Forbidden(
            f"{doc.filename} was uploaded by someone else: only they or an admin can delete it"
        )
    session.execute(delete(Document).where(Document.id == doc.id))
    record_change(session, [doc.id])
    return doc


BATCH_DOCUMENTS = 32
BATCH_BYTES = 8 * 1024 * 1024


def batches(documents: list[Document]) -> list[list[int]]:
    """Small documents travel together (their chunks are embedded in one go), large ones
    alone: at most BATCH_DOCUMENTS and BATCH_BYTES a batch."""
    out: list[list[int]] = []
    size = 0
    for doc in documents:
        if not out or len(out[-1]) >= BATCH_DOCUMENTS or size + doc.size_bytes > BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(doc.id)
        size += doc.size_bytes
    return out


def enqueue(session: Session, documents: list[Document]) -> None:
    """Ask for the documents to be ingested, in batches, when the unit of work commits."""
    for batch in batches(documents):
        jobs.enqueue(session, jobs.INGEST_DOCUMENTS, batch)


def move_document(session: Session, document_id: int, collection_name: str) -> Document:
    """Into another collection, chunks and all, in one transaction."""
    doc = session.get(Document, document_id)
    if doc is None:
        raise NotFound(f"no document {document_id}")
    target = session.scalar(select(Collection).where(Collection.name == collection_name))
    if target is None:
        raise NotFound(f"no collection named {collection_name!r}")
    if target.id != doc.collection_id:
        if doc.sha256 and same_content(session, target.id, doc.sha256):
            raise Conflict(f"{target.name} already holds the same content")
        # A later upload of the name would replace (delete) every document so named there.
        if current_version(session, target.id, doc.filename):
            raise Conflict(
                f"{target.name} already holds a document named {doc.filename}: rename or "
                "delete one of them first"
            )
        doc.collection_id = target.id
        session.execute(
            update(Chunk).where(Chunk.document_id == doc.id).values(collection_id=target.id)
        )
        session.flush()
        record_change(session, [doc.id])
    return doc


def retry_document(session: Session, document_id: int) -> Document:
    """An admin's retry of a document that failed or looks stuck (queued or being ingested):
    it is queued and sent again, and the crashes so far no longer count against it. Tasks
    are idempotent, so a document that was in fact progressing is not ingested twice."""
    doc = session.get(Document, document_id)
    if doc is None:
        raise NotFound(f"no document {document_id}")
    if doc.status not in (*IN_FLIGHT, DocumentStatus.failed):
        raise Conflict(f"document {document_id} is {doc.status}: nothing to retry")
    session.execute(
        update(IngestionAttempt)
        .where(IngestionAttempt.document_id == doc.id, IngestionAttempt.outcome == "crashed")
        .values(outcome="failed")
    )
    doc.status = DocumentStatus.queued
    doc.error = None
    enqueue(session, [doc])
    return doc


def in_progress(session: Session, limit: int = 200) -> list[tuple[Document, int]]:
    """Documents queued, being ingested or failed, most recently changed first, each with
    how many ingestion attempts it has had (for the admin's jobs panel)."""
    attempts = (
        select(IngestionAttempt.document_id, func.count().label("n"))
        .group_by(IngestionAttempt.document_id)
        .subquery()
    )
    rows = session.execute(
        select(Document, func.coalesce(attempts.c.n, 0))
        .outerjoin(attempts, attempts.c.document_id == Document.id)
        .options(joinedload(Document.collection))
        .where(Document.status.in_((*IN_FLIGHT, DocumentStatus.failed)))
        .order_by(Document.updated_at.desc())
        .limit(limit)
    ).all()
    return [(d, int(n)) for d, n in rows]
