"""The job outbox (`app.jobs`): a job is sent when its unit of work commits, dropped when it
rolls back, sent once, and kept until the broker takes it."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from celery import Celery
from celery.result import AsyncResult
from sqlalchemy import select, update

from app import jobs
from app.config import Settings
from app.db import session_scope
from app.infra.processes import free_port
from app.infra.worker_process import WorkerProcess
from app.models import Job


@pytest.fixture(scope="module")
def results(settings: Settings) -> Celery:
    """Reads task results (senders do not: `app.jobs` has no result backend)."""
    return Celery("test-results", broker=settings.redis_url, backend=settings.redis_url)


def answered(results: Celery, job_id: int, timeout: float = 30) -> bool:
    """Whether the worker ran the probe job (its result is in the result backend)."""
    result = AsyncResult(f"job-{job_id}", app=results)
    try:
        return result.get(timeout=timeout)["database"] == "ok"
    except Exception:  # noqa: BLE001 - a timeout: never ran
        return False


def row(job_id: int) -> Job | None:
    with session_scope() as s:
        return s.get(Job, job_id)


def test_a_job_is_sent_when_its_unit_of_work_commits(
    settings: Settings, worker: WorkerProcess, results: Celery
):
    with session_scope() as s:
        job = jobs.enqueue(s, jobs.PROBE)
        s.flush()
        job_id = job.id
        assert results.AsyncResult(f"job-{job_id}").state == "PENDING"
    assert answered(results, job_id)
    sent = row(job_id)
    assert sent is not None and sent.sent_at is not None and sent.send_failures == 0
    with session_scope() as s:  # nothing left for the dispatcher: it is never sent twice
        assert s.scalar(select(Job.id).where(Job.id == job_id, Job.sent_at.is_(None))) is None


def test_a_rolled_back_job_is_never_sent(
    settings: Settings, worker: WorkerProcess, results: Celery
):
    with pytest.raises(RuntimeError), session_scope() as s:
        job = jobs.enqueue(s, jobs.PROBE)
        s.flush()
        job_id = job.id
        raise RuntimeError("the unit of work fails")
    assert row(job_id) is None
    time.sleep(2)
    assert results.AsyncResult(f"job-{job_id}").state == "PENDING"  # never ran


def test_a_job_in_a_rolled_back_savepoint_is_not_sent(
    settings: Settings, worker: WorkerProcess, results: Celery
):
    with session_scope() as s:
        kept = jobs.enqueue(s, jobs.PROBE)
        try:
            with s.begin_nested():
                dropped = jobs.enqueue(s, jobs.PROBE)
                s.flush()
                dropped_id = dropped.id
                raise RuntimeError("the savepoint fails")
        except RuntimeError:
            pass
        s.flush()
        kept_id = kept.id
    assert answered(results, kept_id)
    assert row(dropped_id) is None
    assert results.AsyncResult(f"job-{dropped_id}").state == "PENDING"


def test_a_job_the_broker_refused_stays_until_dispatch_sends_it(
    settings: Settings, worker: WorkerProcess, results: Celery
):
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    jobs.configure(down)  # nothing listens there: the broker is "down"
    try:
        started = time.monotonic()
        with session_scope() as s:
            job = jobs.enqueue(s, jobs.PROBE)
            s.flush()
            job_id = job.id
        assert time.monotonic() - started < 10  # the commit does not hang on the broker
    finally:
        jobs.configure(settings)
    kept = row(job_id)
    assert kept is not None and kept.sent_at is None and kept.send_failures == 1
    assert "Error" in (kept.last_error or "")
    time.sleep(jobs.DISPATCH_AFTER_S)
    with session_scope() as s:  # (a web process's sweep may have sent it already)
        jobs.dispatch(s)
    assert answered(results, job_id)
    sent = row(job_id)
    assert sent is not None and sent.sent_at is not None


def test_a_job_due_later_waits_in_the_outbox(
    settings: Settings, worker: WorkerProcess, results: Celery
):
    with session_scope() as s:
        job = jobs.enqueue(s, jobs.PROBE, delay_s=3600)
        s.flush()
        job_id = job.id
    time.sleep(jobs.DISPATCH_AFTER_S)
    with session_scope() as s:
        jobs.dispatch(s)
    later = row(job_id)
    assert later is not None and later.sent_at is None  # not handed to the broker for an hour
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(not_before=datetime.now(UTC)))
    with session_scope() as s:
        jobs.dispatch(s)
    assert answered(results, job_id)
