"""Typed ORM models. Import from here so that every table is registered on `Base`."""

from app.models.accounts import (
    ApiKey,
    AuditEvent,
    CollectionMember,
    Group,
    GroupMember,
    User,
    UserSession,
)
from app.models.chat import Conversation, Message, MessageCitation
from app.models.documents import (
    SETTLED,
    Collection,
    Document,
    DocumentFile,
    DocumentStatus,
    IngestionAttempt,
)
from app.models.evals import EvalRun
from app.models.index import Chunk, IndexChange, IndexGeneration, ReindexJob

__all__ = [
    "SETTLED",
    "ApiKey",
    "AuditEvent",
    "Chunk",
    "Collection",
    "CollectionMember",
    "Conversation",
    "Document",
    "DocumentFile",
    "DocumentStatus",
    "EvalRun",
    "Group",
    "GroupMember",
    "IndexChange",
    "IndexGeneration",
    "IngestionAttempt",
    "Message",
    "MessageCitation",
    "ReindexJob",
    "User",
    "UserSession",
]
