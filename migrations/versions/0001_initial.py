"""pgvector, collections, documents, files, ingestion attempts, generations, chunks, changes

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    op.create_table(
        "collections",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
    )

    op.create_table(
        "documents",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column(
            "collection_id",
            sa.Integer,
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("page_count", sa.Integer),
        sa.Column("chunks_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("chunks_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("text", sa.Text),
        sa.Column(
            "supersedes_id", sa.BigInteger, sa.ForeignKey("documents.id", ondelete="SET NULL")
        ),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("indexed_at", TZ),
        sa.CheckConstraint(
            "status IN ('queued','parsing','chunking','embedding','indexed','failed','rejected')",
            name="documents_status_valid",
        ),
    )
    op.create_index(
        "documents_collection_sha256",
        "documents",
        ["collection_id", "sha256"],
        unique=True,
        postgresql_where=sa.text("status <> 'rejected'"),
    )
    op.create_index("documents_collection_filename", "documents", ["collection_id", "filename"])

    op.create_table(
        "document_files",
        sa.Column(
            "document_id",
            sa.BigInteger,
            sa.ForeignKey("documents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    # PDF and DOCX are compressed already: store out of line, without TOAST compression.
    op.execute("ALTER TABLE document_files ALTER COLUMN data SET STORAGE EXTERNAL")

    op.create_table(
        "ingestion_attempts",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column(
            "document_id",
            sa.BigInteger,
            sa.ForeignKey("documents.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("task_id", sa.String(64)),
        sa.Column("worker", sa.String(200)),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("started_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", TZ),
        sa.CheckConstraint(
            "outcome IN ('running','indexed','failed','retrying','crashed','skipped')",
            name="ingestion_attempts_outcome_valid",
        ),
    )
    op.create_index("ix_ingestion_attempts_document_id", "ingestion_attempts", ["document_id"])

    op.create_table(
        "index_generations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("embedding_model", sa.String(300), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("chunk_tokens", sa.Integer, nullable=False),
        sa.Column("chunk_overlap_tokens", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("activated_at", TZ),
        sa.CheckConstraint(
            "state IN ('building','live','retired','cancelled')",
            name="index_generations_state_valid",
        ),
    )
    op.create_index(
        "index_generations_one_live",
        "index_generations",
        ["state"],
        unique=True,
        postgresql_where=sa.text("state = 'live'"),
    )

    # `embedding` has no fixed dimension: each generation gets a partial HNSW index over
    # `(embedding::vector(dim))` when it is created (app.retrieval.generations).
    op.create_table(
        "chunks",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column(
            "document_id",
            sa.BigInteger,
            sa.ForeignKey("documents.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "generation_id",
            sa.Integer,
            sa.ForeignKey("index_generations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("collection_id", sa.Integer, nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("lexemes", sa.Text, nullable=False),
        sa.Column("heading_path", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("page_start", sa.Integer),
        sa.Column("page_end", sa.Integer),
        sa.Column("char_start", sa.Integer, nullable=False),
        sa.Column("char_end", sa.Integer, nullable=False),
        sa.Column("embedding", Vector(), nullable=False),
        sa.Column("embedding_model", sa.String(300), nullable=False),
    )
    op.create_index(
        "chunks_document_generation",
        "chunks",
        ["document_id", "generation_id", "ordinal"],
        unique=True,
    )
    op.create_index("chunks_generation_collection", "chunks", ["generation_id", "collection_id"])

    op.create_table(
        "index_changes",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("document_id", sa.BigInteger, nullable=False),
        sa.Column("changed_at", TZ, server_default=sa.func.now(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("index_changes")
    op.drop_table("chunks")
    op.drop_table("index_generations")
    op.drop_table("ingestion_attempts")
    op.drop_table("document_files")
    op.drop_table("documents")
    op.drop_table("collections")
    op.execute("DROP EXTENSION IF EXISTS vector")
