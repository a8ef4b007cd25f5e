"""answer traces and what the Quality page charts: each answer's outcome and best relevance

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
TRUNCATED = "%…[cut at the ANSWER_MAX_TOKENS limit]"


def upgrade() -> None:
    op.add_column("messages", sa.Column("outcome", sa.String(12)))
    op.add_column("messages", sa.Column("relevance", sa.Float))
    # Answers from before: their outcome from what was stored (relevance was not).
    op.execute(
        sa.text(
            "UPDATE messages SET outcome = CASE"
            " WHEN status = 'error' THEN 'error'"
            " WHEN status = 'stopped' THEN 'stopped'"
            " WHEN abstained THEN 'abstained'"
            " WHEN content LIKE :truncated THEN 'truncated'"
            " ELSE 'answered' END"
            " WHERE role = 'assistant' AND status IN ('done', 'error', 'stopped')"
        ).bindparams(truncated=TRUNCATED)
    )
    op.create_check_constraint(
        "messages_outcome_valid",
        "messages",
        "outcome IN ('answered','abstained','truncated','error','stopped')",
    )
    op.create_index(
        "messages_answers_by_time",
        "messages",
        ["created_at"],
        postgresql_where=sa.text("role = 'assistant'"),
    )
    op.create_table(
        "message_traces",
        sa.Column(
            "message_id",
            sa.BigInteger,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_message_traces_created_at", "message_traces", ["created_at"])


def downgrade() -> None:
    op.drop_table("message_traces")
    op.drop_index("messages_answers_by_time", table_name="messages")
    op.drop_constraint("messages_outcome_valid", "messages", type_="check")
    op.drop_column("messages", "relevance")
    op.drop_column("messages", "outcome")
