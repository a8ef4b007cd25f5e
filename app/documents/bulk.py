"""Sending many files at once (the CLI, the evals, the benchmarks): stored and queued a batch
at a time, so that workers start on the first batch while the rest is still being stored."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app import jobs
from app.collections.service import collection_for_upload
from app.config import Settings
from app.db import session_scope
from app.documents import service
from app.ingest.attempts import TRANSIENT
from app.models import SETTLED, Collection, Document, DocumentStatus

# A file to send: its name, its size, and how to read it (only when it is accepted).
Source = tuple[str, int, Callable[[], bytes]]


def ingest_files(
    collection_name: str,
    sources: Iterable[Source],
    settings: Settings,
    labels: Sequence[str] = (),
) -> list[int]:
    """Document ids in the order of `sources` (duplicates keep their earlier id), each with
    the `labels` (checked ones)."""
    with session_scope() as session:
        collection_id = collection_for_upload(session, collection_name).id
    ids: list[int] = []
    it = iter(sources)
    while group := list(itertools.islice(it, service.BATCH_DOCUMENTS)):
        queued: list[Document] = []
        with session_scope() as session:
            collection = session.get(Collection, collection_id)
            assert collection is not None
            for name, size, read in group:
                if size > settings.max_upload_bytes:
                    reason = f"larger than the {settings.max_upload_mb} MB limit"
                    added = service.add_rejected(session, collection, name, size, reason, 413)
                else:
                    added = service.add_document(
                        session,
                        collection,
                        name,
                        read(),
                        settings.max_upload_bytes,
                        labels=labels,
                    )
                ids.append(added.document.id)
                if added.enqueue:
                    queued.append(added.document)
            service.enqueue(session, queued)
    return ids


def ingest_urls(collection_name: str, urls: list[str], settings: Settings) -> list[int]:
    """Web pages (and sitemaps) by URL, as the API takes them; document ids in order."""
    from app.web_pages.service import MAX_URLS_PER_REQUEST, add_urls

    with session_scope() as session:
        collection = collection_for_upload(session, collection_name)
        ids: list[int] = []
        for start in range(0, len(urls), MAX_URLS_PER_REQUEST):
            group = urls[start : start + MAX_URLS_PER_REQUEST]
            ids += [a.document.id for a in add_urls(session, collection, group, settings)]
    return ids


class Stalled(Exception):
    """Nothing moved for a while: the message says how many documents are left."""


@dataclass(frozen=True)
class Tally:
    """Where a set of documents stands."""

    total: int
    settled: int  # indexed, failed or rejected
    failed: int  # failed or rejected
    chunks: int  # embedded so far (indexed documents' chunks, and those in progress)

    @property
    def pending(self) -> int:
        return self.total - self.settled


def tally(session: Session, ids: list[int]) -> Tally:
    done = Document.status.in_(SETTLED)
    bad = Document.status.in_((DocumentStatus.failed, DocumentStatus.rejected))
    chunks = case((Document.status == DocumentStatus.indexed, Document.chunks_total), else_=0)
    total, settled, failed, embedded, in_progress = session.execute(
        select(
            func.count(),
            func.count().filter(done),
            func.count().filter(bad),
            func.coalesce(func.sum(chunks), 0),
            func.coalesce(func.sum(Document.chunks_done).filter(~done), 0),
        ).where(Document.id.in_(ids) | Document.sitemap_id.in_(ids))  # a sitemap's pages
    ).one()
    return Tally(int(total), int(settled), int(failed), int(embedded) + int(in_progress))


def wait_settled(
    ids: list[int],
    poll_s: float = 1.0,
    on_wait: Callable[[Tally], None] | None = None,
    stall_s: float | None = None,
) -> None:
    """Until every document (and every page a sitemap among them brought) is indexed, failed
    or rejected, telling `on_wait` where they stand after each look. Jobs the broker did not
    take are sent from here too (this may be the only process running). With `stall_s`,
    gives up (`Stalled`) when no document moved (status or chunks embedded) for that long."""
    moved_at, last = time.monotonic(), None
    while True:
        with session_scope() as session:
            now = tally(session, ids)
            with contextlib.suppress(*TRANSIENT):
                jobs.dispatch(session)
        if on_wait is not None:
            on_wait(now)
        if not now.pending:
            return
        if (now.settled, now.chunks) != last:
            moved_at, last = time.monotonic(), (now.settled, now.chunks)
        elif stall_s is not None and time.monotonic() - moved_at > stall_s:
            raise Stalled(
                f"{now.pending} document(s) made no progress for {stall_s:.0f} s: is a worker "
                "running and reaching the database and the broker? (see /admin or /healthz)"
            )
        time.sleep(poll_s)
