"""Keeps this process's BM25 index in step with Postgres, the source of truth.

Before each search the follower asks Postgres two cheap things: which generation is live and
the newest change-log id. A new generation (or the first search) loads every chunk of the
live generation; newer changes reload just the documents they name (dropped, then loaded
again if they still exist). A document indexed by any worker is therefore found by the
next search in every web process, and a deleted one is never returned, with no assumption
that there is only one process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Chunk, GenerationState, IndexChange, IndexGeneration
from app.retrieval.lexical import BM25Index

log = logging.getLogger(__name__)
LOAD_BATCH = 5000


def _rows(session: Session, generation_id: int, document_ids: list[int] | None = None):
    query = select(Chunk.id, Chunk.document_id, Chunk.collection_id, Chunk.lexemes).where(
        Chunk.generation_id == generation_id
    )
    if document_ids is not None:
        query = query.where(Chunk.document_id.in_(document_ids))
    for chunk_id, document_id, collection_id, lexemes in session.execute(
        query.execution_options(yield_per=LOAD_BATCH)
    ):
        yield chunk_id, document_id, collection_id, lexemes.split()


class LexicalFollower:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.index: BM25Index | None = None
        self.generation_id: int | None = None
        self.last_change = 0

    @contextmanager
    def synced(self, session: Session) -> Iterator[BM25Index]:
        """The index, brought up to date, held for the caller's search."""
        generation_id, last_change = session.execute(
            select(
                select(IndexGeneration.id)
                .where(IndexGeneration.state == GenerationState.live)
                .scalar_subquery(),
                select(func.coalesce(func.max(IndexChange.id), 0)).scalar_subquery(),
            )
        ).one()
        with self._lock:
            if generation_id is None:
                self.index, self.generation_id = BM25Index(), None
            elif self.index is None or generation_id != self.generation_id:
                self._load(session, generation_id, last_change)
            elif last_change > self.last_change:
                self._apply_changes(session, last_change)
            assert self.index is not None
            yield self.index

    def _load(self, session: Session, generation_id: int, last_change: int) -> None:
        started = time.perf_counter()
        index = BM25Index()
        batch: list = []
        for row in _rows(session, generation_id):
            batch.append(row)
            if len(batch) >= LOAD_BATCH * 4:
                index.add(batch)
                batch = []
        index.add(batch)
        self.index, self.generation_id, self.last_change = index, generation_id, last_change
        log.info(
            "BM25 index of generation %s: %d chunks in %.2fs",
            generation_id,
            len(index),
            time.perf_counter() - started,
        )

    def _apply_changes(self, session: Session, last_change: int) -> None:
        assert self.index is not None and self.generation_id is not None
        documents = sorted(
            set(
                session.scalars(
                    select(IndexChange.document_id).where(
                        IndexChange.id > self.last_change, IndexChange.id <= last_change
                    )
                )
            )
        )
        self.index.remove_documents(documents)
        self.index.add(_rows(session, self.generation_id, documents))
        self.last_change = last_change


_followers: dict[str, LexicalFollower] = {}
_followers_lock = threading.Lock()


def lexical_index(database_url: str | None = None) -> LexicalFollower:
    """This process's follower of a database (the settings' by default)."""
    from app.config import get_settings

    url = database_url or get_settings().database_url or ""
    with _followers_lock:
        if url not in _followers:
            _followers[url] = LexicalFollower()
        return _followers[url]
