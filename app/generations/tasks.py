"""The bodies of the generation jobs (the worker registers them under `app.jobs` names)."""

from __future__ import annotations

import time

from app import jobs
from app.config import get_settings
from app.db import session_scope
from app.documents.service import BATCH_DOCUMENTS
from app.generations import service
from app.generations.compare import record_comparison
from app.ingest import pipeline
from app.ingest.attempts import stop_requested
from app.models import GenerationState, IndexGeneration
from app.retrieval.lexical_store import prepare_snapshot, prune_snapshots, snapshots_folder

BUILD_SLICE_S = 60  # a build hands over to a fresh job after this long


def build(generation_id: int) -> str:
    """Fill a generation being built, batch by batch; hand over to a new job after a minute
    (so no task nears the time limit); when nothing is missing, write its BM25 snapshot
    (web processes map it when it goes live) and make it live or ready."""
    deadline = time.monotonic() + BUILD_SLICE_S
    while time.monotonic() < deadline:
        with session_scope() as session:
            generation = session.get(IndexGeneration, generation_id)
            if generation is None or generation.state != GenerationState.building:
                return generation.state if generation else "gone"
            todo = service.missing_documents(session, generation_id, BATCH_DOCUMENTS)
        if not todo:
            with session_scope() as session:  # (a no-op when a snapshot is there already)
                prepare_snapshot(session, generation_id, snapshots_folder(get_settings()))
            with session_scope() as session:
                state = service.complete_generation(session, generation_id)
                if state == GenerationState.building:  # documents still being ingested
                    jobs.enqueue(session, jobs.BUILD_GENERATION, generation_id, delay_s=2)
            return state
        outcomes = pipeline.build(todo, generation_id)
        failed = [d for d, outcome in outcomes.items() if outcome in ("failed", "skipped")]
        if failed:
            with session_scope() as session:
                service.give_up_on(session, generation_id, failed)
        if stop_requested():  # the worker is stopping: the next one carries on
            break
    with session_scope() as session:
        jobs.enqueue(session, jobs.BUILD_GENERATION, generation_id)
    return GenerationState.building


def drop_retired() -> int:
    """Free the space of cancelled generations, and of retired ones past the time they can
    be rolled back to (their chunks, vector index and BM25 snapshots). Returns the chunks
    removed."""
    removed = 0
    with session_scope() as session:
        ids = service.droppable(session)
    for generation_id in ids:
        with session_scope() as session:
            removed += service.drop_generation_chunks(session, generation_id)
    with session_scope() as session:  # and the BM25 snapshots of those that cannot serve
        prune_snapshots(snapshots_folder(get_settings()), service.kept_generations(session))
    return removed


def compare(collection_id: int, generation_ids: list[int]) -> int:
    """The collection's eval set in each generation, stored as an eval run."""
    with session_scope() as session:
        return record_comparison(session, collection_id, generation_ids, get_settings())
