"""Conversations: messages with what was retrieved, the checked citations, timings, model
and feedback."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    collection_id: Mapped[int | None] = mapped_column(
        ForeignKey("collections.id", ondelete="SET NULL")
    )
    source: Mapped[str] = mapped_column(String(20), default="web")  # web, api, cli, eval
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation", order_by="Message.id", cascade="all, delete-orphan"
    )


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("role IN ('user','assistant')", name="messages_role_valid"),
        CheckConstraint(
            "status IN ('pending','streaming','done','stopped','error')",
            name="messages_status_valid",
        ),
        CheckConstraint(
            "outcome IN ('answered','abstained','truncated','error','stopped')",
            name="messages_outcome_valid",
        ),
        # The Quality page reads answers by day.
        Index(
            "messages_answers_by_time", "created_at", postgresql_where=text("role = 'assistant'")
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(10))
    content: Mapped[str] = mapped_column(Text, default="")
    query: Mapped[str | None] = mapped_column(Text)  # the standalone question searched for
    status: Mapped[str] = mapped_column(String(10), default="done")
    abstained: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(300))
    # The passages shown to the model, as they were then: n, chunk and document ids, title,
    # page, offsets, text, and each stage's score.
    retrieved: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    timings: Mapped[dict[str, float]] = mapped_column(JSONB, default=dict)
    # How it ended (answered, abstained, truncated, error, stopped) and how relevant the best
    # passage was (the absolute fused score): what the Quality page charts, kept when the
    # trace is pruned.
    outcome: Mapped[str | None] = mapped_column(String(12))
    relevance: Mapped[float | None] = mapped_column(Float)
    feedback: Mapped[int | None] = mapped_column(SmallInteger)  # 1 up, -1 down
    feedback_comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    conversation: Mapped[Conversation] = relationship(back_populates="messages")
    citations: Mapped[list[MessageCitation]] = relationship(
        order_by="MessageCitation.sentence", cascade="all, delete-orphan"
    )


class MessageCitation(Base):
    """One sentence of an answer: the passage that supports it (if any) and how well."""

    __tablename__ = "message_citations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    sentence: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    cited: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list)
    n: Mapped[int | None] = mapped_column(Integer)
    chunk_id: Mapped[int | None] = mapped_column(ForeignKey("chunks.id", ondelete="SET NULL"))
    score: Mapped[float] = mapped_column(Float)
    supported: Mapped[bool] = mapped_column(Boolean)
    evidence_start: Mapped[int | None] = mapped_column(Integer)
    evidence_end: Mapped[int | None] = mapped_column(Integer)


class MessageTrace(Base):
    """How an answer came about, for admins (`app.generation.trace`): kept beside its message
    (it can be large: the whole prompt) and deleted after TRACE_RETENTION_DAYS."""

    __tablename__ = "message_traces"

    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
