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
from app.models.chat import Conversation, Message, MessageCitation, MessageTrace
from app.models.documents import (
    IN_FLIGHT,
    IN_PROGRESS,
    SETTLED,
    Collection,
    Document,
    DocumentFile,
    DocumentStatus,
    IngestionAttempt,
)
from app.models.evals import EvalRun
from app.models.index import (
    PENDING_STATES,
    TARGET_STATES,
    Chunk,
    FusionCalibration,
    GenerationState,
    IndexChange,
    IndexGeneration,
    ReindexJob,
)
from app.models.jobs import Job

__all__ = [
    "IN_FLIGHT",
    "IN_PROGRESS",
    "PENDING_STATES",
    "SETTLED",
    "TARGET_STATES",
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
    "FusionCalibration",
    "GenerationState",
    "Group",
    "GroupMember",
    "IndexChange",
    "IndexGeneration",
    "IngestionAttempt",
    "Job",
    "Message",
    "MessageCitation",
    "MessageTrace",
    "ReindexJob",
    "User",
    "UserSession",
]
