"""Typed ORM models. Import from here so that every table is registered on `Base`."""

from app.models.documents import (
    SETTLED,
    Collection,
    Document,
    DocumentFile,
    DocumentStatus,
    IngestionAttempt,
)
from app.models.index import Chunk, IndexChange, IndexGeneration

__all__ = [
    "SETTLED",
    "Chunk",
    "Collection",
    "Document",
    "DocumentFile",
    "DocumentStatus",
    "IndexChange",
    "IndexGeneration",
    "IngestionAttempt",
]
