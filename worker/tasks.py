"""Thin Celery tasks: each takes ids and makes one call into app code."""

from __future__ import annotations

import socket

from sqlalchemy import text

from app.db import session_scope
from app.ingest import pipeline
from app.models import IndexGeneration
from worker.celery_app import celery_app

MAX_RETRIES = 5
BUSY_RETRY_S = 5  # a document another worker holds is looked at again after this long


@celery_app.task(name="groundwork.probe")
def probe() -> dict[str, str]:
    """A round trip through the broker that also proves the worker reaches the database."""
    with session_scope() as session:
        session.execute(text("SELECT 1"))
    return {"worker": socket.gethostname(), "database": "ok"}


@celery_app.task(
    bind=True, name="groundwork.ingest_documents", max_retries=MAX_RETRIES, ignore_result=True
)
def ingest_documents(self, document_ids: list[int]) -> dict[int, str]:
    """Parse, chunk, embed and index documents. Transient database or broker errors are
    retried with backoff; after the last retry the documents end `failed`. A document another
    worker holds (a generation build, or a redelivered copy of this task) is sent again."""
    try:
        outcomes = pipeline.run(document_ids, task_id=self.request.id, worker=self.request.hostname)
    except pipeline.TRANSIENT as err:
        if self.request.retries >= MAX_RETRIES:
            pipeline.give_up(document_ids, f"gave up after {MAX_RETRIES} retries: {err}")
            return dict.fromkeys(document_ids, "failed")
        raise self.retry(exc=err, countdown=min(60, 2 ** (self.request.retries + 1))) from err
    busy = [d for d, outcome in outcomes.items() if outcome == "busy"]
    if busy:  # its holder is alive (the lock dies with its connection): look again soon
        ingest_documents.apply_async(args=[busy], countdown=BUSY_RETRY_S)
    return outcomes


BUILD_SLICE_S = 60  # a build task hands over to a fresh one after this long


@celery_app.task(name="groundwork.build_generation", ignore_result=True)
def build_generation(generation_id: int) -> str:
    """Fill a generation being built, batch by batch; hand over to a new task after a minute
    (so no task nears the time limit); when nothing is missing, make it live or ready."""
    import time

    from app import admin
    from app.ingest.service import BATCH_DOCUMENTS

    deadline = time.monotonic() + BUILD_SLICE_S
    while time.monotonic() < deadline:
        with session_scope() as session:
            generation = session.get(IndexGeneration, generation_id)
            if generation is None or generation.state != "building":
                return generation.state if generation else "gone"
            todo = admin.missing_documents(session, generation_id, BATCH_DOCUMENTS)
        if not todo:
            with session_scope() as session:
                state = admin.complete_generation(session, generation_id)
            if state == "building":  # documents still being ingested: look again soon
                build_generation.apply_async(args=[generation_id], countdown=2)
            elif state == "live":
                drop_retired.apply_async(countdown=admin.RETIRED_KEEP_S + 60)
            return state
        outcomes = pipeline.build(todo, generation_id)
        failed = [d for d, outcome in outcomes.items() if outcome in ("failed", "skipped")]
        if failed:
            with session_scope() as session:
                admin.give_up_on(session, generation_id, failed)
    build_generation.delay(generation_id)
    return "building"


@celery_app.task(name="groundwork.drop_retired", ignore_result=True)
def drop_retired() -> int:
    """Free the space of cancelled generations, and of retired ones past the time they can
    be rolled back to."""
    from app import admin

    removed = 0
    with session_scope() as session:
        ids = admin.droppable(session)
    for generation_id in ids:
        with session_scope() as session:
            removed += admin.drop_generation_chunks(session, generation_id)
    return removed


@celery_app.task(name="groundwork.compare_generations")
def compare_generations(collection_id: int, generation_ids: list[int]) -> int:
    """The collection's eval set in each generation; stored as an eval run for the panel."""
    from app.config import get_settings
    from app.models import Collection, EvalRun
    from evals.retrieval import compare_generations as compare

    with session_scope() as session:
        metrics = compare(session, collection_id, generation_ids, get_settings())
        collection = session.get(Collection, collection_id)
        run = EvalRun(
            kind="compare",
            dataset=collection.name if collection else str(collection_id),
            queries=0,
            settings={"generations": generation_ids, "collection_id": collection_id},
            metrics=metrics,
        )
        session.add(run)
        session.flush()
        return run.id
