"""sources and OCR: web pages by URL (their address, the sitemap that brought them, the
`fetching` status), OCR confidence per document and page, and notes on what was left unread

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "'queued','parsing','chunking','embedding','indexed','failed','rejected'"
NEW_STATUSES = "'queued','fetching','parsing','chunking','embedding','indexed','failed','rejected'"


def upgrade() -> None:
    op.add_column("documents", sa.Column("source_url", sa.Text))
    op.add_column(
        "documents",
        sa.Column("sitemap_id", sa.BigInteger, sa.ForeignKey("documents.id", ondelete="SET NULL")),
    )
    op.create_index("ix_documents_sitemap_id", "documents", ["sitemap_id"])
    op.add_column("documents", sa.Column("ocr_confidence", sa.Float))
    op.add_column("documents", sa.Column("ocr_pages", JSONB))
    op.add_column("documents", sa.Column("notes", sa.Text))
    op.drop_constraint("documents_status_valid", "documents", type_="check")
    op.create_check_constraint("documents_status_valid", "documents", f"status IN ({NEW_STATUSES})")


def downgrade() -> None:
    op.execute("UPDATE documents SET status = 'queued' WHERE status = 'fetching'")
    op.drop_constraint("documents_status_valid", "documents", type_="check")
    op.create_check_constraint("documents_status_valid", "documents", f"status IN ({OLD_STATUSES})")
    op.drop_index("ix_documents_sitemap_id", "documents")
    for column in ("notes", "ocr_pages", "ocr_confidence", "sitemap_id", "source_url"):
        op.drop_column("documents", column)
