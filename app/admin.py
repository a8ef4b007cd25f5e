"""What the admin panel does: reindexing with progress, building a new index generation
beside the live one and switching to it in one transaction, moving documents, and the job
monitor's numbers. Functions flush; the caller commits, then enqueues."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, exists, func, select, text, update
from sqlalchemy.orm import Session

from app.accounts import Account
from app.config import Settings
from app.errors import Conflict, Invalid, NotFound
from app.ingest import service
from app.ingest.index import GENERATION_LOCK, create_generation, live_generation, record_change
from app.models import (
    Chunk,
    Collection,
    Document,
    DocumentStatus,
    IndexGeneration,
    IngestionAttempt,
    ReindexJob,
)

log = logging.getLogger(__name__)
IN_FLIGHT = (
    DocumentStatus.queued,
    DocumentStatus.parsing,
    DocumentStatus.chunking,
    DocumentStatus.embedding,
)


# -- reindexing ------------------------------------------------------------------------------


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
    serving until the new ones replace them). Returns the job and the documents to enqueue."""
    query = select(Document).where(
        Document.status.in_((DocumentStatus.indexed, DocumentStatus.failed))
    )
    if scope == "document":
        query = query.where(Document.id == document_id(target))
    elif scope == "collection":
        collection = session.scalar(select(Collection).where(Collection.name == target))
        if collection is None:
            raise NotFound(f"no collection named {target!r}")
        query = query.where(Document.collection_id == collection.id)
    elif scope != "all":
        raise Invalid("reindex a document, a collection or all")
    docs = list(session.scalars(query.order_by(Document.id)))
    if not docs:
        raise NotFound("nothing to reindex")
    for doc in docs:
        doc.status = DocumentStatus.queued
        doc.error = None
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


# -- generations: a model or chunking change without downtime -------------------------------


def start_generation(
    session: Session,
    settings: Settings,
    *,
    model: str,
    chunk_tokens: int,
    overlap_tokens: int,
    auto_switch: bool,
    actor: Account | None,
) -> IndexGeneration:
    """A new generation beside the live one, with its own HNSW index for its dimension. The
    live one keeps serving; `build_generation` fills the new one in the background."""
    from app.ingest.embed import get_embedder

    if session.scalar(select(exists().where(IndexGeneration.state.in_(("building", "ready"))))):
        raise Conflict("a generation is already being built: cancel it or make it live first")
    if not 32 <= chunk_tokens <= 8192 or not 0 <= overlap_tokens < chunk_tokens // 2:
        raise Invalid("chunk tokens 32 to 8192; overlap under half the chunk")
    try:
        dimension = get_embedder(model).dimension
    except Exception as err:
        raise Invalid(f"cannot load the embedding model {model!r}: {err}") from err
    generation = create_generation(
        session,
        model=model,
        dimension=dimension,
        settings=settings.model_copy(
            update={"chunk_tokens": chunk_tokens, "chunk_overlap_tokens": overlap_tokens}
        ),
        state="building",
    )
    generation.auto_switch = auto_switch
    generation.created_by = actor.id if actor else None
    generation.documents_total = session.scalar(
        select(func.count()).where(Document.status == DocumentStatus.indexed)
    )
    return generation


def _missing(generation_id: int):
    has_chunks = exists().where(
        Chunk.document_id == Document.id, Chunk.generation_id == generation_id
    )
    gave_up = select(func.unnest(IndexGeneration.failed_documents)).where(
        IndexGeneration.id == generation_id
    )
    return (Document.status == DocumentStatus.indexed) & ~has_chunks & Document.id.not_in(gave_up)


def give_up_on(session: Session, generation_id: int, document_ids: list[int]) -> None:
    """Documents the builder could not add: it stops trying; the panel lists them."""
    generation = session.get(IndexGeneration, generation_id, with_for_update=True)
    if generation is not None and document_ids:
        generation.failed_documents = sorted({*generation.failed_documents, *document_ids})


def count_missing(session: Session, generation_id: int) -> int:
    """How many indexed documents have no chunks in the generation yet."""
    return int(session.scalar(select(func.count()).where(_missing(generation_id))) or 0)


def missing_documents(session: Session, generation_id: int, limit: int) -> list[int]:
    """Indexed documents that have no chunks in the generation yet."""
    return list(
        session.scalars(
            select(Document.id).where(_missing(generation_id)).order_by(Document.id).limit(limit)
        )
    )


def generation_progress(session: Session, generation: IndexGeneration) -> Progress:
    built = session.scalar(
        select(func.count(func.distinct(Chunk.document_id))).where(
            Chunk.generation_id == generation.id
        )
    )
    missing = session.scalar(select(func.count()).where(_missing(generation.id)))
    return Progress(int(built or 0), int(built or 0) + int(missing or 0))


def complete_generation(session: Session, generation_id: int) -> str:
    """When nothing is missing and nothing is in flight: make it live (auto switch) or ready.
    Returns the generation's state."""
    session.execute(select(func.pg_advisory_xact_lock(GENERATION_LOCK)))
    generation = session.get(IndexGeneration, generation_id, with_for_update=True)
    if generation is None or generation.state != "building":
        return generation.state if generation else "gone"
    in_flight = session.scalar(select(exists().where(Document.status.in_(IN_FLIGHT))))
    if in_flight or missing_documents(session, generation_id, 1):
        return "building"
    if generation.auto_switch:
        switch_to(session, generation)
    else:
        generation.state = "ready"
    return generation.state


def switch_to(session: Session, generation: IndexGeneration) -> IndexGeneration | None:
    """In one transaction: the old live generation retires and this one serves. Searches
    read the live generation once per query, so each sees the old index or the new one."""
    if generation.state not in ("building", "ready"):
        raise Conflict(f"generation {generation.id} is {generation.state}")
    missing = count_missing(session, generation.id)
    if missing:
        raise Conflict(
            f"generation {generation.id} is not complete yet: {missing} indexed document(s) "
            "have no chunks in it"
        )
    old = live_generation(session)
    if old is not None:
        old.state = "retired"
        old.retired_at = datetime.now(UTC)
        session.flush()  # the one-live unique index
    generation.state = "live"
    generation.activated_at = datetime.now(UTC)
    session.flush()
    log.info("generation %s is live (was %s)", generation.id, old.id if old else None)
    return old


def resume_building(session: Session, generation: IndexGeneration) -> int:
    """A ready generation that lacks documents (indexed while it was becoming ready) goes
    back to building, for `build_generation` to add them. Returns how many it lacks."""
    if generation.state != "ready":
        return 0
    missing = count_missing(session, generation.id)
    if missing:
        generation.state = "building"
        session.flush()
    return missing


RETIRED_KEEP_S = 3600  # a retired generation can be rolled back to for an hour


def roll_back_target(session: Session) -> IndexGeneration | None:
    """The generation retired most recently, if its chunks are still all there."""
    previous = session.scalars(
        select(IndexGeneration)
        .where(IndexGeneration.state == "retired")
        .order_by(IndexGeneration.retired_at.desc().nulls_last())
        .limit(1)
    ).first()
    if previous is None or missing_documents(session, previous.id, 1):
        return None
    return previous


def roll_back(session: Session) -> IndexGeneration:
    """Undo the last switch: the generation retired most recently serves again (its chunks
    are kept for RETIRED_KEEP_S after it retired)."""
    session.execute(select(func.pg_advisory_xact_lock(GENERATION_LOCK)))
    previous = roll_back_target(session)
    if previous is None:
        raise Conflict("no retired generation is complete enough to roll back to")
    previous.state = "ready"
    switch_to(session, previous)
    return previous


def cancel_generation(session: Session, generation_id: int) -> IndexGeneration:
    generation = session.get(IndexGeneration, generation_id, with_for_update=True)
    if generation is None or generation.state not in ("building", "ready"):
        raise Conflict("only a generation being built (or ready) can be cancelled")
    generation.state = "cancelled"
    return generation


def droppable(session: Session) -> list[int]:
    """Cancelled generations, and those retired over RETIRED_KEEP_S ago, whose chunks or
    vector index may still take space."""
    cutoff = datetime.now(UTC) - timedelta(seconds=RETIRED_KEEP_S)
    candidates = session.scalars(
        select(IndexGeneration.id).where(
            (IndexGeneration.state == "cancelled")
            | ((IndexGeneration.state == "retired") & (IndexGeneration.retired_at < cutoff))
        )
    ).all()
    return [
        g
        for g in candidates
        if session.scalar(select(exists().where(Chunk.generation_id == g)))
        or session.scalar(text("SELECT to_regclass(:name)"), {"name": f"chunks_embedding_g{g}"})
    ]


def drop_generation_chunks(session: Session, generation_id: int) -> int:
    """Free a retired or cancelled generation's space: its chunks and its vector index."""
    generation = session.get(IndexGeneration, generation_id)
    if generation is None or generation.state not in ("retired", "cancelled"):
        return 0
    removed = session.execute(delete(Chunk).where(Chunk.generation_id == generation_id))
    session.execute(text(f"DROP INDEX IF EXISTS chunks_embedding_g{int(generation_id)}"))
    return int(removed.rowcount or 0)  # type: ignore[attr-defined]


# -- documents -------------------------------------------------------------------------------


def move_document(session: Session, document_id: int, collection_name: str) -> Document:
    """Into another collection, chunks and all, in one transaction."""
    doc = session.get(Document, document_id)
    if doc is None:
        raise NotFound(f"no document {document_id}")
    target = session.scalar(select(Collection).where(Collection.name == collection_name))
    if target is None:
        raise NotFound(f"no collection named {collection_name!r}")
    if target.id != doc.collection_id:
        if doc.sha256 and service.same_content(session, target.id, doc.sha256):
            raise Conflict(f"{target.name} already holds the same content")
        # A later upload of the name would replace (delete) every document so named there.
        if service.current_version(session, target.id, doc.filename):
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


def delete_collection(session: Session, collection_id: int) -> tuple[str, int]:
    """A collection, its documents (with their files and their chunks in every generation)
    and its grants, in one transaction: the foreign keys cascade. Search stops finding them
    at the commit, in every process (the change log). A document still queued or being
    ingested is gone when a worker next reads it. Returns the name and documents removed."""
    # Locked first: an upload into it waits (its foreign key check) and then fails, rather
    # than adding a document that the change log below would not name.
    collection = session.get(Collection, collection_id, with_for_update=True)
    if collection is None:
        raise NotFound(f"no collection {collection_id}")
    name = collection.name
    ids = list(session.scalars(select(Document.id).where(Document.collection_id == collection_id)))
    session.execute(delete(Collection).where(Collection.id == collection_id))
    if ids:
        record_change(session, ids)
    return name, len(ids)


def retry_document(session: Session, document_id: int) -> Document:
    doc = session.get(Document, document_id)
    if doc is None:
        raise NotFound(f"no document {document_id}")
    if doc.status != DocumentStatus.failed:
        raise Conflict(f"document {document_id} is {doc.status}, not failed")
    # Crashes so far no longer count against it.
    session.execute(
        update(IngestionAttempt)
        .where(IngestionAttempt.document_id == doc.id, IngestionAttempt.outcome == "crashed")
        .values(outcome="failed")
    )
    doc.status = DocumentStatus.queued
    doc.error = None
    return doc
