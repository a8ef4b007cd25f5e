"""Thin Celery tasks: each takes ids and makes one call into app code."""

from __future__ import annotations

import socket

from sqlalchemy import text

from app.db import session_scope
from app.ingest import pipeline
from worker.celery_app import celery_app

MAX_RETRIES = 5


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
    retried with backoff; after the last retry the documents end `failed`."""
    try:
        return pipeline.run(document_ids, task_id=self.request.id, worker=self.request.hostname)
    except pipeline.TRANSIENT as err:
        if self.request.retries >= MAX_RETRIES:
            pipeline.give_up(document_ids, f"gave up after {MAX_RETRIES} retries: {err}")
            return dict.fromkeys(document_ids, "failed")
        raise self.retry(exc=err, countdown=min(60, 2 ** (self.request.retries + 1))) from err
