"""Background jobs: asked for inside a unit of work, sent by name once it commits.

    jobs.enqueue(session, jobs.INGEST_DOCUMENTS, [4, 5])

adds a row to the outbox (`app.models.Job`) in the caller's transaction, so a job exists
exactly when the work it names was committed. When the transaction commits, its jobs that are
due are sent to the broker by task name (Celery `send_task`, task id `job-<id>`) and marked
sent; when it rolls back, they are gone with it. A job the broker did not take (it was down),
or one not due yet, stays in the outbox: `dispatch()` sends it when it can, and every web
process runs it every few seconds (`app.infra.sweeps`). A job is sent at most once by this
module unless a process dies between sending and marking it; tasks are idempotent.

`app/` never imports `worker/`: the worker registers its tasks under these names.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    delete,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.models import Job

log = logging.getLogger(__name__)

PROBE = "groundwork.probe"
INGEST_DOCUMENTS = "groundwork.ingest_documents"
BUILD_GENERATION = "groundwork.build_generation"
DROP_RETIRED = "groundwork.drop_retired"
COMPARE_GENERATIONS = "groundwork.compare_generations"
CALIBRATE_FUSION = "groundwork.calibrate_fusion"

SEND_NOW_S = 30.0  # jobs due within this are sent at commit (with a countdown); later, by dispatch
DISPATCH_AFTER_S = 5.0  # an unsent job this old was not sent by its own commit
KEEP_SENT = timedelta(days=1)
_PENDING = "groundwork.jobs"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery's settings, shared by the worker and every process that sends jobs."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not resolved: start the embedded parts first")
    return dict(
        broker_url=settings.redis_url,
        result_backend=settings.redis_url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A task is acknowledged when it finishes: a worker that dies mid-task leaves it to be
        # delivered again (tasks are idempotent), and a lost pool process rejects it back.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # The hard limit is shorter than the visibility timeout, so Redis never hands a task
        # that is still running to a second worker.
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=max(settings.task_time_limit_s - 30, settings.task_time_limit_s // 2),
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s,
            # Look for tasks abandoned by a dead worker every tenth of the timeout.
            "unacked_restore_interval": max(1, min(10, settings.broker_visibility_timeout_s // 10)),
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s
        },
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        redis_socket_connect_timeout=2,
        redis_socket_timeout=5,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        timezone="UTC",
    )


_lock = threading.Lock()
_client: Celery | None = None


def configure(settings: Settings) -> Celery:
    """This process's broker client, for these settings (their URLs resolved)."""
    global _client
    with _lock:
        client = Celery("groundwork-client", set_as_current=False)
        # Senders never wait for results: without a result backend, sending does not also
        # subscribe to the result's channel (which retries for 20 s when Redis is down).
        client.conf.update(celery_config(settings), result_backend=None)
        _client = client
        return client


def client() -> Celery:
    """The broker client, made from the process's settings on first use."""
    return _client or configure(get_settings())


def workers_answering(timeout: float = 1.0) -> list[str]:
    """Names of the workers that answer a ping through the broker."""
    try:
        replies = client().control.ping(timeout=timeout) or []
    except Exception:  # noqa: BLE001 - no broker means no worker
        return []
    return sorted(name for reply in replies for name in reply)


def queue_depth(settings: Settings) -> int | None:
    """Tasks waiting in the broker's queue (None when it does not answer)."""
    import redis

    try:
        return int(redis.Redis.from_url(settings.redis_url or "", socket_timeout=1).llen("celery"))
    except redis.RedisError:
        return None


# -- asking for a job ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Flushed:
    id: int
    name: str
    args: list[Any]
    not_before: datetime


def enqueue(session: Session, name: str, *args: Any, delay_s: float = 0.0) -> Job:
    """A job in the caller's unit of work: sent when it commits (not before `delay_s`)."""
    job = Job(name=name, args=list(args), not_before=datetime.now(UTC) + timedelta(seconds=delay_s))
    session.add(job)
    session.info.setdefault(_PENDING, {})[job] = None
    return job


@event.listens_for(Session, "after_flush_postexec")
def _remember(session: Session, _context: object) -> None:
    # Values are copied now: after the commit, attributes may be expired and no SQL may run.
    pending: dict[Job, _Flushed | None] = session.info.get(_PENDING, {})
    for job, flushed in pending.items():
        if flushed is None and job.id is not None:
            pending[job] = _Flushed(job.id, job.name, list(job.args), job.not_before)


@event.listens_for(Session, "after_commit")
def _send_committed(session: Session) -> None:
    pending: dict[Job, _Flushed | None] = session.info.pop(_PENDING, {})
    due = datetime.now(UTC) + timedelta(seconds=SEND_NOW_S)
    # A job whose insert a savepoint rolled back is transient again: it was never committed.
    now = [
        flushed
        for job, flushed in pending.items()
        if flushed is not None and not inspect(job).transient and flushed.not_before <= due
    ]
    if now:
        _send(session.get_bind(), now)


@event.listens_for(Session, "after_rollback")
def _drop_rolled_back(session: Session) -> None:
    if not session.in_transaction():  # the whole unit of work, not a savepoint
        session.info.pop(_PENDING, None)


def _send(bind: Engine | Connection, jobs: list[_Flushed]) -> None:
    """Send jobs to the broker and mark those it took; one it refused stays for dispatch."""
    sent, failed, error = [], [], ""
    for job in jobs:
        if error:
            failed.append(job.id)
            continue
        try:
            _publish(job.id, job.name, job.args, job.not_before)
            sent.append(job.id)
        except Exception as err:  # noqa: BLE001 - the broker is down: dispatch sends it later
            error = f"{type(err).__name__}: {err}"[:500]
            failed.append(job.id)
            log.warning("broker did not take job %s (%s); it stays in the outbox", job.id, error)
    try:
        _mark(bind, sent, failed, error)
    except Exception:  # the database went away: the jobs are sent again later (idempotent)
        log.exception("could not mark jobs %s sent", sent)


def _publish(job_id: int, name: str, args: list[Any], not_before: datetime) -> None:
    countdown = max(0.0, (not_before - datetime.now(UTC)).total_seconds())
    client().send_task(
        name,
        args=args,
        task_id=f"job-{job_id}",
        countdown=countdown or None,
        retry=True,
        retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2},
    )


_IDS = bindparam("ids", type_=ARRAY(Job.id.type))


def _mark(bind: Engine | Connection, sent: list[int], failed: list[int], error: str) -> None:
    statements: list[tuple[Any, list[int]]] = []
    if sent:
        statements.append(
            (update(Job).where(Job.id == func.any(_IDS)).values(sent_at=func.now()), sent)
        )
    if failed:
        failure = {"send_failures": Job.send_failures + 1, "last_error": error}
        statements.append((update(Job).where(Job.id == func.any(_IDS)).values(failure), failed))
    if not statements:
        return
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            for statement, ids in statements:
                conn.execute(statement, {"ids": ids})
    else:  # a test's session joined to an outer transaction
        for statement, ids in statements:
            bind.execute(statement, {"ids": ids})


# -- sending what was left ------------------------------------------------------------------


def dispatch(session: Session, limit: int = 500) -> int:
    """Send due jobs that are still unsent (the broker was down at their commit, the process
    died before sending, or they were not due yet). Several processes may run this at once:
    each takes the rows it locks. Returns how many were sent; stops at the first refusal."""
    now = datetime.now(UTC)
    jobs = session.scalars(
        select(Job)
        .where(
            Job.sent_at.is_(None),
            Job.not_before <= now,
            Job.created_at < now - timedelta(seconds=DISPATCH_AFTER_S),
        )
        .order_by(Job.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    sent = 0
    for job in jobs:
        try:
            _publish(job.id, job.name, job.args, job.not_before)
        except Exception as err:  # noqa: BLE001 - still down: try again next time
            job.send_failures += 1
            job.last_error = f"{type(err).__name__}: {err}"[:500]
            break
        job.sent_at = datetime.now(UTC)
        sent += 1
    if sent:
        log.info("sent %d job(s) left in the outbox", sent)
    return sent


def unsent_due(session: Session) -> int:
    """Jobs in the outbox that are due and not sent yet."""
    due = Job.sent_at.is_(None) & (Job.not_before <= func.now())
    return int(session.scalar(select(func.count()).where(due)) or 0)


def prune(session: Session) -> int:
    """Forget jobs sent more than a day ago."""
    result = session.execute(delete(Job).where(Job.sent_at < datetime.now(UTC) - KEEP_SENT))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
