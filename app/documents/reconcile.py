"""Finding documents whose work was lost and asking for it again.

A document being ingested is held under its advisory lock by the worker's database
connection, which dies with the worker. So a document

- in `parsing`, `chunking` or `embedding` whose lock nobody holds lost its worker (killed,
  out of memory, the machine restarted, or the database went away under it);
- still `queued` a while after its job was sent, with the broker's queue empty, no job left
  unsent in the outbox, and no lock held, lost its message (a broker that restarted without
  it, or a worker that took it and died before starting).

Both are asked for again (tasks are idempotent: a document already done is skipped, and one
that turns out to be held is looked at again). A document the sweep has just sent waits
STALE_S again before the next look, so the sweep cannot flood a slow queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.documents.service import enqueue
from app.ingest.attempts import lock_key
from app.models import IN_PROGRESS, Document, DocumentStatus

STALE_S = 20  # in progress with no lock held, and not touched for this long
QUEUED_STALE_S = 60  # queued this long with nothing waiting in the queue or the outbox
LIMIT = 500


def reconcile(session: Session, *, queue_idle: bool) -> list[int]:
    """Ask again for documents whose work was lost; returns their ids. `queue_idle`: the
    broker's queue is empty and the outbox holds no unsent job that is due."""
    now = datetime.now(UTC)
    stale = (Document.status.in_(IN_PROGRESS)) & (
        Document.updated_at < now - timedelta(seconds=STALE_S)
    )
    if queue_idle:
        stale |= (Document.status == DocumentStatus.queued) & (
            Document.updated_at < now - timedelta(seconds=QUEUED_STALE_S)
        )
    candidates = session.scalars(
        select(Document)
        .where(stale)
        .order_by(Document.id)
        .limit(LIMIT)
        .with_for_update(skip_locked=True)
    ).all()
    # Held until this transaction ends: a worker starting one meanwhile finds it busy and
    # comes back to it a few seconds later.
    lost = [
        d
        for d in candidates
        if session.scalar(select(func.pg_try_advisory_xact_lock(lock_key(d.id))))
    ]
    if not lost:
        return []
    ids = [d.id for d in lost]
    session.execute(
        update(Document)
        .where(Document.id.in_(ids))
        .values(status=DocumentStatus.queued, updated_at=func.now())
    )
    enqueue(session, lost)
    return ids
