"""Conversations and their messages: a turn starts with the question and an empty answer
(`streaming`), and finishes with the answer, the passages shown, the checked citations, the
timings, how it ended and its trace (or an error, or `stopped`). Each function is its own
unit of work: the answer flow runs them in a thread around the LLM's stream."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.db import session_scope
from app.errors import NotFound
from app.generation.citations import Citation
from app.models import Conversation, Message, MessageCitation, MessageTrace


@dataclass
class Turn:
    conversation_id: int
    message_id: int
    history: list[tuple[str, str]]


def start_turn(
    question: str,
    conversation_id: int | None,
    collection_id: int | None,
    source: str,
    model: str,
    user_id: int | None,
) -> Turn:
    with session_scope() as session:
        if conversation_id is None:
            conversation = Conversation(
                title=question[:200], collection_id=collection_id, source=source, user_id=user_id
            )
            session.add(conversation)
            session.flush()
        else:
            conversation = own_conversation(session, user_id, conversation_id)
        past = history(session, conversation.id)
        session.add(Message(conversation_id=conversation.id, role="user", content=question))
        reply = Message(
            conversation_id=conversation.id, role="assistant", status="streaming", model=model
        )
        session.add(reply)
        session.flush()
        return Turn(conversation.id, reply.id, past)


def history(session: Session, conversation_id: int) -> list[tuple[str, str]]:
    messages = session.scalars(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
    ).all()
    pairs, question = [], None
    for m in messages:
        if m.role == "user":
            question = m.content
        elif question is not None and m.content:
            pairs.append((question, m.content))
            question = None
    return pairs


def finish(message_id: int, **values: Any) -> None:
    citations: list[Citation] = values.pop("citations", [])
    trace: dict[str, Any] | None = values.pop("trace", None)
    with session_scope() as session:
        message = session.get(Message, message_id)
        if message is None:
            return
        for name, value in values.items():
            setattr(message, name, value)
        if trace is not None:
            session.merge(MessageTrace(message_id=message_id, data=trace))
        for c in citations:
            session.add(
                MessageCitation(
                    message_id=message_id,
                    sentence=c.sentence,
                    text=c.text,
                    cited=c.cited,
                    n=c.n,
                    chunk_id=c.chunk_id,
                    score=c.score,
                    supported=c.supported,
                    evidence_start=c.evidence[0] if c.evidence else None,
                    evidence_end=c.evidence[1] if c.evidence else None,
                )
            )


def own_message(session: Session, user_id: int | None, message_id: int) -> Message:
    """A message of one of the person's own conversations (404 otherwise)."""
    message = session.get(Message, message_id)
    if message is None or message.conversation.user_id != user_id:
        raise NotFound(f"no message {message_id}")
    return message


def own_conversation(session: Session, user_id: int | None, conversation_id: int) -> Conversation:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or conversation.user_id != user_id:
        raise NotFound(f"no conversation {conversation_id}")
    return conversation


def recent_conversations(session: Session, user_id: int, limit: int = 50) -> list[Conversation]:
    """The person's chat-page conversations, most recently active first."""
    return list(
        session.scalars(
            select(Conversation)
            .where(Conversation.user_id == user_id, Conversation.source == "web")
            .order_by(Conversation.updated_at.desc())
            .limit(limit)
        )
    )


def answer_of(session: Session, message_id: int) -> tuple[Message, str | None]:
    """Any answer (for admins) and the question it answered; 404 for anything else."""
    message = session.get(Message, message_id)
    if message is None or message.role != "assistant":
        raise NotFound(f"no answer {message_id}")
    question = session.scalar(
        select(Message.content)
        .where(
            Message.conversation_id == message.conversation_id,
            Message.role == "user",
            Message.id < message.id,
        )
        .order_by(Message.id.desc())
        .limit(1)
    )
    return message, question


def trace_of(session: Session, message_id: int) -> dict[str, Any] | None:
    """The stored trace of an answer (None once pruned, or for answers from before traces)."""
    return session.scalar(select(MessageTrace.data).where(MessageTrace.message_id == message_id))


def prune_traces(session: Session, keep_days: int) -> int:
    """Delete traces older than `keep_days` (0: keep them all); returns how many went."""
    if keep_days <= 0:
        return 0
    cutoff = datetime.now(UTC) - timedelta(days=keep_days)
    result = session.execute(delete(MessageTrace).where(MessageTrace.created_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
