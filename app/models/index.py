"""The search index: generations of chunks, the chunks with their embeddings, and the
change log that in-memory indexes (BM25) follow."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class GenerationState(StrEnum):
    building = "building"  # being filled beside the live one
    ready = "ready"  # complete, waiting for an admin to switch
    live = "live"  # what every search reads (exactly one)
    retired = "retired"  # was live; can be rolled back to for a while
    cancelled = "cancelled"


# Generations that new chunks go to: the live one and any built (or being built) beside it.
TARGET_STATES = (GenerationState.live, GenerationState.building, GenerationState.ready)
PENDING_STATES = (GenerationState.building, GenerationState.ready)


class IndexGeneration(Base):
    """One embedding model + chunking settings. Exactly one generation is live; a new one is
    built beside it and swapped in one transaction. Each generation has its own partial HNSW
    index over `chunks.embedding` cast to its dimension, so dimensions may differ."""

    __tablename__ = "index_generations"
    __table_args__ = (
        CheckConstraint(
            "state IN ('building','ready','live','retired','cancelled')",
            name="index_generations_state_valid",
        ),
        Index(
            "index_generations_one_live",
            "state",
            unique=True,
            postgresql_where=text("state = 'live'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedding_model: Mapped[str] = mapped_column(String(300))
    dimension: Mapped[int] = mapped_column(Integer)
    chunk_tokens: Mapped[int] = mapped_column(Integer)
    chunk_overlap_tokens: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    auto_switch: Mapped[bool] = mapped_column(Boolean, default=True)  # live once complete
    documents_total: Mapped[int | None] = mapped_column(Integer)  # to build, when started
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Documents that could not be added while building (the builder does not retry them).
    failed_documents: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), default=list)


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        Index("chunks_document_generation", "document_id", "generation_id", "ordinal", unique=True),
        Index("chunks_generation_collection", "generation_id", "collection_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    generation_id: Mapped[int] = mapped_column(
        ForeignKey("index_generations.id", ondelete="CASCADE")
    )
    collection_id: Mapped[int] = mapped_column(Integer)  # copied from the document, for filters
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    lexemes: Mapped[str] = mapped_column(Text, deferred=True)  # BM25 tokens, with the prefix
    heading_path: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    page_start: Mapped[int | None] = mapped_column(Integer)
    page_end: Mapped[int | None] = mapped_column(Integer)
    char_start: Mapped[int] = mapped_column(Integer)  # offsets into documents.text
    char_end: Mapped[int] = mapped_column(Integer)
    embedding = mapped_column(Vector(), nullable=False, deferred=True)
    embedding_model: Mapped[str] = mapped_column(String(300))


class ReindexJob(Base):
    """An admin's reindex of a document, a collection or everything; its progress is how
    many of its documents were indexed (or failed) since it started."""

    __tablename__ = "reindex_jobs"
    __table_args__ = (
        CheckConstraint(
            "scope IN ('document','collection','all')", name="reindex_jobs_scope_valid"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(20))
    target: Mapped[str | None] = mapped_column(Text)
    document_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class IndexChange(Base):
    """A document's chunks changed (indexed, replaced, moved, deleted). Ids are handed out
    under one advisory lock held to commit, so a reader that has seen id N has seen every
    change before it: followers ask for `id > last_seen`."""

    __tablename__ = "index_changes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    document_id: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FusionCalibration(Base):
    """How one collection's hybrid search fuses BM25 and dense, learned from its labels (an
    eval set, or answers people rated) in one generation; without one, the default applies.
    A row is replaced in one transaction, so a search reads the old calibration or the new."""

    __tablename__ = "fusion_calibrations"

    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    generation_id: Mapped[int] = mapped_column(
        ForeignKey("index_generations.id", ondelete="CASCADE")
    )
    method: Mapped[str] = mapped_column(String(20))
    dense_weight: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(40))  # "eval set", "feedback"
    queries: Mapped[int] = mapped_column(Integer)
    documents: Mapped[int] = mapped_column(Integer)  # in the collection when computed
    feedback: Mapped[int] = mapped_column(Integer, default=0)  # rated answers then
    evidence: Mapped[dict[str, float]] = mapped_column(JSONB, default=dict)  # nDCG@10 by fusion
    computed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
