"""document labels: given at upload, searched with the other metadata filters

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "documents",
        sa.Column("labels", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
    )
    # `labels && ARRAY[...]` (any of the labels asked for) uses it.
    op.create_index("documents_labels", "documents", ["labels"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("documents_labels", table_name="documents")
    op.drop_column("documents", "labels")
