"""Collections, documents, their original bytes and each ingestion attempt."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base


class DocumentStatus(StrEnum):
    queued = "queued"
    fetching = "fetching"  # a web page being fetched
    parsing = "parsing"
    chunking = "chunking"
    embedding = "embedding"
    indexed = "indexed"
    failed = "failed"
    rejected = "rejected"

    @property
    def settled(self) -> bool:
        return self in SETTLED


SETTLED = frozenset({DocumentStatus.indexed, DocumentStatus.failed, DocumentStatus.rejected})
IN_PROGRESS = (
    DocumentStatus.fetching,
    DocumentStatus.parsing,
    DocumentStatus.chunking,
    DocumentStatus.embedding,
)
IN_FLIGHT = (DocumentStatus.queued, *IN_PROGRESS)


class Collection(Base):
    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # A BEIR directory whose queries and judgements fit this collection's documents (named
    # `<corpus id>.md`): the admin panel compares generations on it before a switch.
    eval_set: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    documents: Mapped[list[Document]] = relationship(back_populates="collection")


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued','fetching','parsing','chunking','embedding','indexed','failed',"
            "'rejected')",
            name="documents_status_valid",
        ),
        # Identical content in one collection is one document (rejected uploads aside).
        Index(
            "documents_collection_sha256",
            "collection_id",
            "sha256",
            unique=True,
            postgresql_where=text("status <> 'rejected'"),
        ),
        Index("documents_collection_filename", "collection_id", "filename"),
        Index("documents_labels", "labels", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))  # the uploader's name, made safe
    title: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))  # none for rejected uploads
    status: Mapped[str] = mapped_column(String(20), default=DocumentStatus.queued)
    error: Mapped[str | None] = mapped_column(Text)
    page_count: Mapped[int | None] = mapped_column(Integer)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str | None] = mapped_column(Text, deferred=True)  # the extracted text
    # The version this upload replaces (same name, new content) once it is indexed.
    supersedes_id: Mapped[int | None] = mapped_column(
        ForeignKey("documents.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    indexed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # A web page: the address it was asked for (its `filename` is made from it), and the
    # sitemap that brought it, if one did.
    source_url: Mapped[str | None] = mapped_column(Text)
    sitemap_id: Mapped[int | None] = mapped_column(
        ForeignKey("documents.id", ondelete="SET NULL"), index=True
    )
    # Text read by OCR: the mean confidence of what was recognised (0-1, weighted by
    # characters) and each OCR'd page's own, as {"page": confidence}.
    ocr_confidence: Mapped[float | None] = mapped_column(Float)
    ocr_pages: Mapped[dict[str, float] | None] = mapped_column(JSONB)
    # What a person should know about an indexed document (pages left unread, a sitemap's
    # pages), beside `error` for one that failed.
    notes: Mapped[str | None] = mapped_column(Text)
    # Given at upload (lower case); searches can be narrowed to documents with any of them.
    labels: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default="{}")

    collection: Mapped[Collection] = relationship(back_populates="documents")


class DocumentFile(Base):
    """The uploaded bytes, kept in Postgres (the one source of truth) for reindexing and
    download. Stored uncompressed: PDFs and DOCX are compressed already."""

    __tablename__ = "document_files"

    document_id: Mapped[int] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class IngestionAttempt(Base):
    """One run of the pipeline over a document, written when it starts and when it ends.
    A row left `running` belongs to a worker that died."""

    __tablename__ = "ingestion_attempts"
    __table_args__ = (
        CheckConstraint(
            "outcome IN ('running','indexed','failed','retrying','crashed','skipped')",
            name="ingestion_attempts_outcome_valid",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    document_id: Mapped[int] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    task_id: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(20), default="running")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
