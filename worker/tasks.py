"""The task registrations: each task is named in `app.jobs` and makes one call into the
domain code. Retrying transient errors (the database or broker gone for a moment) is the
only thing that happens here."""

from __future__ import annotations

from app import jobs
from app.documents import tasks as documents
from app.generations import tasks as generations
from app.infra.health import probe_database
from app.ingest.pipeline import TRANSIENT, give_up
from app.retrieval.calibration import calibrate_job
from worker.celery_app import celery_app

MAX_RETRIES = 5


@celery_app.task(name=jobs.PROBE)
def probe() -> dict[str, str]:
    """A round trip through the broker that also proves the worker reaches the database."""
    return probe_database()


@celery_app.task(bind=True, name=jobs.INGEST_DOCUMENTS, max_retries=MAX_RETRIES, ignore_result=True)
def ingest_documents(self, document_ids: list[int]) -> dict[int, str]:
    """Transient errors are retried with backoff; after the last retry the documents end
    `failed`."""
    try:
        return documents.ingest(document_ids, task_id=self.request.id, worker=self.request.hostname)
    except TRANSIENT as err:
        if self.request.retries >= MAX_RETRIES:
            give_up(document_ids, f"gave up after {MAX_RETRIES} retries: {err}")
            return dict.fromkeys(document_ids, "failed")
        raise self.retry(exc=err, countdown=min(60, 2 ** (self.request.retries + 1))) from err


@celery_app.task(name=jobs.BUILD_GENERATION, ignore_result=True)
def build_generation(generation_id: int) -> str:
    return generations.build(generation_id)


@celery_app.task(name=jobs.DROP_RETIRED, ignore_result=True)
def drop_retired() -> int:
    return generations.drop_retired()


@celery_app.task(name=jobs.CALIBRATE_FUSION, ignore_result=True)
def calibrate_fusion(collection_id: int) -> str:
    return calibrate_job(collection_id)


@celery_app.task(name=jobs.COMPARE_GENERATIONS)
def compare_generations(collection_id: int, generation_ids: list[int]) -> int:
    return generations.compare(collection_id, generation_ids)
