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
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.models import Chunk, GenerationState, IndexChange, IndexGeneration
from app.retrieval import lexical_snapshot as snapshot
from app.retrieval.lexical import BM25Index

log = logging.getLogger(__name__)
LOAD_BATCH = 5000
# A new snapshot is written once the change log has moved on by this share of the index's
# chunks since the last one, so that a process starting replays at most about that much.
SNAPSHOT_AFTER = 0.1


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


def _key(session: Session, generation_id: int, last_change: int) -> snapshot.Key:
    made = session.scalar(
        select(IndexGeneration.created_at).where(IndexGeneration.id == generation_id)
    )
    return _made_key(generation_id, made, last_change)


def _made_key(generation_id: int, made: datetime | None, last_change: int) -> snapshot.Key:
    return snapshot.Key(generation_id, made.isoformat() if made else "", last_change)


def build_index(session: Session, generation_id: int) -> BM25Index:
    """The generation's index, built from every one of its chunks in Postgres."""
    index = BM25Index()
    batch: list = []
    for row in _rows(session, generation_id):
        batch.append(row)
        if len(batch) >= LOAD_BATCH * 4:
            index.add(batch)
            batch = []
    index.add(batch)
    return index


def prepare_snapshot(session: Session, generation_id: int, folder: Path) -> bool:
    """Write a snapshot of the generation unless one is there already: the worker does this
    before a generation it built goes live, so that each web process maps the snapshot
    instead of building the index from Postgres at its first search. True if written."""
    last_change = session.scalar(select(func.coalesce(func.max(IndexChange.id), 0))) or 0
    key = _key(session, generation_id, last_change)  # changes after it are replayed on load
    if snapshot.newest(folder, key) is not None:
        return False
    started = time.perf_counter()
    written = snapshot.save(build_index(session, generation_id), folder, key) is not None
    log.info(
        "BM25 snapshot of generation %s written in %.2fs",
        generation_id,
        time.perf_counter() - started,
    )
    return written


def prune_snapshots(folder: Path, kept: list[IndexGeneration]) -> int:
    """Remove the BM25 snapshots of every generation but the `kept` ones."""
    return snapshot.prune(folder, {_made_key(g.id, g.created_at, 0).prefix for g in kept})


def snapshots_folder(settings: Settings, database_url: str | None = None) -> Path:
    """Where the BM25 snapshots of a database (the settings' by default) are kept."""
    return snapshot.folder_for(settings.data_path, database_url or settings.database_url or "")


class LexicalFollower:
    """`snapshots`: where this database's BM25 snapshots are kept (None: none are)."""

    def __init__(self, snapshots: Path | None = None) -> None:
        self._lock = threading.Lock()
        self.index: BM25Index | None = None
        self.generation_id: int | None = None
        self.last_change = 0
        self.snapshots = snapshots
        self.key: snapshot.Key | None = None  # of the snapshot last read or written
        self.loaded_from = ""  # "snapshot" or "database", for logs and benchmarks

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
        """The generation's index: from the newest snapshot with the changes since replayed,
        else built from every chunk in Postgres (and a snapshot written for next time)."""
        started = time.perf_counter()
        key = _key(session, generation_id, last_change)
        found = snapshot.newest(self.snapshots, key) if self.snapshots else None
        index = snapshot.load(found[0]) if found else None
        if found and index is not None:
            self.index, self.generation_id = index, generation_id
            self.key = replace(key, last_change=found[1])
            self.last_change, self.loaded_from = found[1], "snapshot"
            if last_change > found[1]:
                self._apply_changes(session, last_change)
        else:
            self.index = build_index(session, generation_id)
            self.generation_id, self.last_change = generation_id, last_change
            self.key, self.loaded_from = None, "database"
            self._snapshot(key)
        log.info(
            "BM25 index of generation %s: %d chunks from the %s in %.2fs",
            generation_id,
            len(self.index),
            self.loaded_from,
            time.perf_counter() - started,
        )

    def _snapshot(self, key: snapshot.Key) -> None:
        """Write the index as it is now to a snapshot, on a thread of its own (the arrays
        it writes are not changed in place, but for the live flags, copied here)."""
        if self.snapshots is None or self.index is None:
            return
        frozen = BM25Index(self.index.k1, self.index.b, self.index.delta)
        frozen.vocab = dict(self.index.vocab)
        frozen.segments = [replace(s, live=s.live.copy()) for s in self.index.segments]
        self.key = key
        threading.Thread(
            target=snapshot.save, args=(frozen, self.snapshots, key), daemon=True
        ).start()

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
        behind = last_change - (self.key.last_change if self.key else 0)
        if self.key is not None and behind > SNAPSHOT_AFTER * len(self.index):
            self._snapshot(replace(self.key, last_change=last_change))


_followers: dict[str, LexicalFollower] = {}
_followers_lock = threading.Lock()


def lexical_index(database_url: str | None = None) -> LexicalFollower:
    """This process's follower of a database (the settings' by default)."""
    settings = get_settings()
    url = database_url or settings.database_url or ""
    with _followers_lock:
        if url not in _followers:
            _followers[url] = LexicalFollower(snapshots_folder(settings, url))
        return _followers[url]
