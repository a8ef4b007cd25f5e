"""Writing to the search index: generations, a document's chunks, and the change log.

Functions here flush; the caller's unit of work commits."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import TARGET_STATES, Chunk, GenerationState, IndexChange, IndexGeneration

CHANGE_LOCK = 7_340_002  # serialises change-log ids with commits (see IndexChange)
GENERATION_LOCK = 7_340_003


def live_generation(session: Session) -> IndexGeneration | None:
    return session.scalars(
        select(IndexGeneration).where(IndexGeneration.state == GenerationState.live)
    ).first()


def target_generations(session: Session) -> list[IndexGeneration]:
    """Where new chunks go: the live generation and any built (or being built) beside it. A
    ready generation keeps receiving them, so it stays complete until it is switched to."""
    return list(
        session.scalars(
            select(IndexGeneration)
            .where(IndexGeneration.state.in_(TARGET_STATES))
            .order_by(IndexGeneration.id)
        )
    )


def create_generation(
    session: Session,
    *,
    model: str,
    dimension: int,
    settings: Settings,
    state: GenerationState,
) -> IndexGeneration:
    """A generation with its own partial HNSW index over `embedding::vector(dimension)`."""
    generation = IndexGeneration(
        embedding_model=model,
        dimension=dimension,
        chunk_tokens=settings.chunk_tokens,
        chunk_overlap_tokens=settings.chunk_overlap_tokens,
        state=state,
        activated_at=datetime.now(UTC) if state == GenerationState.live else None,
    )
    session.add(generation)
    session.flush()
    create_vector_index(session, generation.id, dimension)
    return generation


def create_vector_index(session: Session, generation_id: int, dimension: int) -> None:
    """The generation's partial HNSW index (cosine) over its embeddings cast to its
    dimension. DDL takes no bind parameters; both values are integers."""
    gid, dim = int(generation_id), int(dimension)
    session.execute(
        text(
            f"CREATE INDEX IF NOT EXISTS chunks_embedding_g{gid} ON chunks USING hnsw "
            f"((embedding::vector({dim})) vector_cosine_ops) WHERE generation_id = {gid}"
        )
    )


def ensure_live_generation(session: Session, settings: Settings) -> IndexGeneration:
    """The live generation; the first one is made from the settings (embedding model and
    chunking) when the first document is indexed."""
    generation = live_generation(session)
    if generation is not None:
        return generation
    session.execute(select(func.pg_advisory_xact_lock(GENERATION_LOCK)))
    generation = live_generation(session)
    if generation is not None:
        return generation
    from app.ingest.embed import get_embedder

    dimension = get_embedder(settings.embedding_model).dimension
    return create_generation(
        session,
        model=settings.embedding_model,
        dimension=dimension,
        settings=settings,
        state=GenerationState.live,
    )


def record_change(session: Session, document_ids: Sequence[int]) -> None:
    """Note that these documents' chunks changed. The lock is held to commit, so change ids
    become visible in order (followers read `id > last_seen`). Call it last in a unit of
    work: the lock serialises writers only from here to their commit."""
    session.execute(select(func.pg_advisory_xact_lock(CHANGE_LOCK)))
    session.execute(insert(IndexChange), [{"document_id": d} for d in document_ids])


@dataclass
class DocumentChunks:
    document_id: int
    collection_id: int
    rows: list[dict]
    embeddings: np.ndarray


def replace_chunks(
    session: Session, generation: IndexGeneration, documents: list[DocumentChunks]
) -> None:
    """Documents' chunks in one generation, replaced in the caller's transaction."""
    if not documents:
        return
    session.execute(
        delete(Chunk).where(
            Chunk.document_id.in_([d.document_id for d in documents]),
            Chunk.generation_id == generation.id,
        )
    )
    _copy_chunks(session, generation, documents)


# COPY's binary format: the columns written, and the type each value is sent as. A vector is
# sent as pgvector's own binary form (dimension, 0, big-endian float32s) in a bytea field,
# which the server hands to the column's receive function as it is.
_COLUMNS = (
    ("document_id", "int8"),
    ("collection_id", "int4"),
    ("generation_id", "int4"),
    ("ordinal", "int4"),
    ("text", "text"),
    ("lexemes", "text"),
    ("heading_path", "text[]"),
    ("page_start", "int4"),
    ("page_end", "int4"),
    ("char_start", "int4"),
    ("char_end", "int4"),
    ("embedding", "bytea"),
    ("embedding_model", "text"),
)


def _vector(values: np.ndarray) -> bytes:
    return struct.pack(">HH", len(values), 0) + np.asarray(values, dtype=">f4").tobytes()


def _copy_chunks(
    session: Session, generation: IndexGeneration, documents: list[DocumentChunks]
) -> None:
    """Chunks written with one COPY in the caller's transaction (row inserts took ~3x as
    long for a batch of documents)."""
    names = ", ".join(name for name, _ in _COLUMNS)
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY chunks ({names}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types([kind for _, kind in _COLUMNS])
        for d in documents:
            for row, vector in zip(d.rows, d.embeddings, strict=True):
                copy.write_row(
                    (
                        d.document_id,
                        d.collection_id,
                        generation.id,
                        row["ordinal"],
                        row["text"],
                        row["lexemes"],
                        row["heading_path"],
                        row["page_start"],
                        row["page_end"],
                        row["char_start"],
                        row["char_end"],
                        _vector(vector),
                        generation.embedding_model,
                    )
                )
