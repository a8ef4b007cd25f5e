"""Documents and collections: what the upload page, the JSON API and `groundwork ingest`
all call. Functions flush; the caller commits, then enqueues (`enqueue`).

`readable` is the collection ids the caller may read (`app.accounts.readable_collections`),
or None for all (admins, and the CLI). Something in a collection the caller cannot read is
answered as if it did not exist.

A member may add documents to a collection they can read; deleting a document, or replacing
it with new content under its name, is for the member who uploaded it and for admins
(`may_change`)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from app.accounts import Account
from app.errors import Conflict, Forbidden, Invalid, NotFound
from app.ingest.detect import Rejected, accept, safe_filename
from app.ingest.index import record_change
from app.models import (
    Collection,
    CollectionMember,
    Document,
    DocumentFile,
    DocumentStatus,
)

DEFAULT_COLLECTION = "default"
_COLLECTION_NAME = re.compile(r"^[\w][\w .\-]{0,99}$")


@dataclass
class Added:
    document: Document
    enqueue: bool  # a new (or retried) document that a worker must process
    duplicate: bool = False  # identical content was already in the collection
    http_status: int = 201  # what an API answers for this file alone


def check_collection_name(name: str) -> str:
    name = (name or "").strip()
    if not _COLLECTION_NAME.match(name):
        raise Invalid(
            "a collection name is 1 to 100 letters, digits, spaces, dots, dashes or underscores"
        )
    return name


def get_collection(
    session: Session,
    name: str,
    *,
    create: bool = False,
    readable: list[int] | None = None,
    creator: Account | None = None,
) -> Collection:
    """The collection, or (with `create`) a new one that its creator may read."""
    name = check_collection_name(name)
    collection = session.scalar(select(Collection).where(Collection.name == name))
    if collection is not None:
        if readable is not None and collection.id not in readable:
            raise NotFound(f"no collection named {name!r}")
        return collection
    if not create:
        raise NotFound(f"no collection named {name!r}")
    collection = Collection(name=name)
    try:
        with session.begin_nested():
            session.add(collection)
    except IntegrityError:  # made by a concurrent request
        raise Conflict(f"the collection {name!r} was just made by someone else") from None
    if creator is not None and not creator.is_admin:
        session.add(CollectionMember(collection_id=collection.id, user_id=creator.id))
        session.flush()
        if readable is not None:
            readable.append(collection.id)
    return collection


def list_collections(
    session: Session, readable: list[int] | None = None
) -> list[tuple[Collection, int]]:
    """The collections (that may be read) with their number of documents, by name."""
    counts = (
        select(Document.collection_id, func.count().label("n"))
        .group_by(Document.collection_id)
        .subquery()
    )
    query = (
        select(Collection, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.collection_id == Collection.id)
        .order_by(Collection.name)
    )
    if readable is not None:
        query = query.where(Collection.id.in_(readable))
    return [(c, int(n)) for c, n in session.execute(query).all()]


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
) -> Added:
    """Store an upload. Identical content in the same collection is the same document (a
    failed one is retried); the same name with new content is a new version that replaces
    the old one once it is indexed, if the uploader may change that one. A file that is not
    acceptable is recorded as rejected."""
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
        return _duplicate(existing)
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
        return _duplicate(existing)
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


def _duplicate(existing: Document) -> Added:
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


def enqueue(documents: list[Document]) -> None:
    """Send documents to the workers. Call after the commit that made them."""
    from worker.tasks import ingest_documents

    for batch in batches(documents):
        ingest_documents.delay(batch)
