"""The body of the ingestion job (the worker registers it under `app.jobs.INGEST_DOCUMENTS`)."""

from __future__ import annotations

from app import jobs
from app.db import session_scope
from app.ingest import pipeline
from app.monitoring.metrics import record_ingested
from app.web_pages.tasks import fetch_pending

BUSY_RETRY_S = 5  # a document another worker holds is looked at again after this long


def ingest(document_ids: list[int], *, task_id: str | None, worker: str | None) -> dict[int, str]:
    """Parse, chunk, embed and index documents; returns what happened to each. A document
    another worker holds (a generation build, or a redelivered copy of this job) is asked
    for again a little later: its holder is alive (the lock dies with its connection). Web
    pages are fetched first (`app.web_pages.tasks`)."""
    fetched = fetch_pending(document_ids)
    stored = [d for d in document_ids if fetched.get(d, "stored") == "stored"]
    outcomes = {**fetched, **pipeline.run(stored, task_id=task_id, worker=worker)}
    record_ingested(outcomes.values())
    busy = [d for d, outcome in outcomes.items() if outcome == "busy"]
    if busy:
        with session_scope() as session:
            jobs.enqueue(session, jobs.INGEST_DOCUMENTS, busy, delay_s=BUSY_RETRY_S)
    return outcomes
