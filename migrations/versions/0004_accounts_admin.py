"""accounts, collection access, sessions, API keys, audit, reindex jobs, generation switch

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("role IN ('admin','member')", name="users_role_valid"),
    )
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "group_members",
        sa.Column(
            "group_id", sa.Integer, sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
    )
    op.create_index("ix_group_members_user_id", "group_members", ["user_id"])
    op.create_table(
        "collection_members",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "collection_id",
            sa.Integer,
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE")),
        sa.Column("group_id", sa.Integer, sa.ForeignKey("groups.id", ondelete="CASCADE")),
        sa.CheckConstraint(
            "(user_id IS NULL) <> (group_id IS NULL)", name="collection_members_one_kind"
        ),
    )
    op.create_index(
        "collection_members_user",
        "collection_members",
        ["collection_id", "user_id"],
        unique=True,
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    op.create_index(
        "collection_members_group",
        "collection_members",
        ["collection_id", "group_id"],
        unique=True,
        postgresql_where=sa.text("group_id IS NOT NULL"),
    )
    op.create_index("ix_collection_members_user_id", "collection_members", ["user_id"])
    op.create_index("ix_collection_members_group_id", "collection_members", ["group_id"])
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
    )
    op.create_index("ix_user_sessions_user_id", "user_sessions", ["user_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("last_used_at", TZ),
        sa.Column("revoked_at", TZ),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("actor_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("actor_email", sa.String(320)),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("detail", JSONB, nullable=False, server_default="{}"),
        sa.Column("address", sa.String(100)),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    op.create_index("ix_audit_events_created_at", "audit_events", ["created_at"])

    op.add_column(
        "conversations",
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE")),
    )
    op.create_index("ix_conversations_user_id", "conversations", ["user_id"])
    op.add_column(
        "documents",
        sa.Column("uploaded_by", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL")),
    )
    op.add_column("collections", sa.Column("eval_set", sa.Text))

    op.drop_constraint("index_generations_state_valid", "index_generations")
    op.create_check_constraint(
        "index_generations_state_valid",
        "index_generations",
        "state IN ('building','ready','live','retired','cancelled')",
    )
    op.add_column(
        "index_generations",
        sa.Column("auto_switch", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.add_column("index_generations", sa.Column("documents_total", sa.Integer))
    op.add_column("index_generations", sa.Column("retired_at", TZ))
    op.add_column(
        "index_generations",
        sa.Column("failed_documents", ARRAY(sa.BigInteger), nullable=False, server_default="{}"),
    )
    op.add_column(
        "index_generations",
        sa.Column("created_by", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL")),
    )

    op.create_table(
        "reindex_jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("document_ids", ARRAY(sa.BigInteger), nullable=False),
        sa.Column("created_by", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "scope IN ('document','collection','all')", name="reindex_jobs_scope_valid"
        ),
    )


def downgrade() -> None:
    op.drop_table("reindex_jobs")
    op.drop_column("index_generations", "created_by")
    op.drop_column("index_generations", "failed_documents")
    op.drop_column("index_generations", "retired_at")
    op.drop_column("index_generations", "documents_total")
    op.drop_column("index_generations", "auto_switch")
    op.drop_constraint("index_generations_state_valid", "index_generations")
    op.execute("UPDATE index_generations SET state = 'building' WHERE state = 'ready'")
    op.create_check_constraint(
        "index_generations_state_valid",
        "index_generations",
        "state IN ('building','live','retired','cancelled')",
    )
    op.drop_column("collections", "eval_set")
    op.drop_column("documents", "uploaded_by")
    op.drop_index("ix_conversations_user_id", "conversations")
    op.drop_column("conversations", "user_id")
    op.drop_table("audit_events")
    op.drop_table("api_keys")
    op.drop_table("user_sessions")
    op.drop_table("collection_members")
    op.drop_table("group_members")
    op.drop_table("groups")
    op.drop_table("users")
