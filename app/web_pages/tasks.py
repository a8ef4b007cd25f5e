"""The fetch step of the ingestion job, before parsing: each web page document without its
bytes yet is fetched (under its advisory lock, status `fetching`) and then

- stored, to be parsed like an upload (its HTML read by `extract.parse_page`); or
- found unchanged: the same content as the indexed version of the same URL, whose chunks
  the new document takes over in one transaction (nothing is embedded again); or
- a sitemap: its pages (same host, at most FETCH_SITEMAP_MAX_PAGES) become documents of
  their own, queued in the same transaction; the sitemap's row records what it brought; or
- failed, with the reason (404, too large, not HTML, refused by robots.txt or by address).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from app import jobs
from app.accounts.service import Account
from app.config import Settings, get_settings
from app.db import session_scope
from app.documents.service import enqueue, same_content
from app.ingest import detect
from app.ingest.attempts import Interrupted, checkpoint, locked
from app.ingest.index import record_change
from app.ingest.structure import ParseError
from app.models import IN_FLIGHT, Chunk, Collection, Document, DocumentFile, DocumentStatus, User
from app.web_pages.addresses import host_of
from app.web_pages.extract import is_sitemap, sitemap_urls
from app.web_pages.fetch import Fetcher, FetchError, Page

log = logging.getLogger(__name__)
MAX_NESTED_SITEMAPS = 20
HTML_TYPES = {"text/html", "application/xhtml+xml"}
XML_TYPES = {"application/xml", "text/xml"}


def fetch_pending(document_ids: list[int]) -> dict[int, str]:
    """Fetch the web pages among these documents that have no bytes yet; returns what
    happened to each one fetched ('stored' ones go on to be parsed)."""
    with session_scope() as session:
        pending = list(
            session.scalars(
                select(Document.id)
                .outerjoin(DocumentFile, DocumentFile.document_id == Document.id)
                .where(
                    Document.id.in_(document_ids),
                    Document.source_url.is_not(None),
                    Document.status.in_((*IN_FLIGHT, DocumentStatus.failed)),
                    DocumentFile.document_id.is_(None),
                )
            )
        )
    outcomes: dict[int, str] = {}
    if not pending:
        return outcomes
    settings = get_settings()
    fetcher = Fetcher(settings)
    with locked(pending) as held:
        for position, document_id in enumerate(held):
            try:
                checkpoint()
                outcomes[document_id] = _fetch_one(document_id, fetcher, settings)
            except Interrupted:
                _requeue(held[position:])
                outcomes.update(dict.fromkeys(held[position:], "handed back"))
                break
    return outcomes


def _fetch_one(document_id: int, fetcher: Fetcher, settings: Settings) -> str:
    with session_scope() as session:
        doc = session.get(Document, document_id, with_for_update=True)
        if doc is None or doc.source_url is None:
            return "gone"
        doc.status = DocumentStatus.fetching
        doc.error = None
        url = doc.source_url
    try:
        page = fetcher.get(url)
        if page.content_type in XML_TYPES or is_sitemap(page.data[:2048]):
            return _expand_sitemap(document_id, page, fetcher, settings)
        _check_html(page)
        return _store(document_id, page)
    except (FetchError, ParseError) as err:
        _fail(document_id, str(err))
    except SoftTimeLimitExceeded:
        _fail(document_id, f"took longer than the {settings.task_time_limit_s}s limit")
    except Exception as err:
        log.exception("fetching document %s failed", document_id)
        _fail(document_id, f"internal error: {type(err).__name__}: {err}")
    return "failed"


def _check_html(page: Page) -> None:
    kind = detect.detect(page.data, "page.html")
    program = detect.executable(page.data, "page.html")
    if page.content_type not in HTML_TYPES or program or kind not in (detect.HTML, detect.TEXT):
        sent = page.content_type or "no content type"
        raise FetchError(f"not HTML: {page.url} is {sent} ({program or kind} by its content)")
    if not page.data.strip():
        raise FetchError(f"the page at {page.url} is empty")


def _store(document_id: int, page: Page) -> str:
    sha256 = hashlib.sha256(page.data).hexdigest()
    with session_scope() as session:
        doc = session.get(Document, document_id, with_for_update=True)
        if doc is None:
            return "gone"
        same = same_content(session, doc.collection_id, sha256)
        if same is not None and same.filename == doc.filename and same.id != doc.id:
            if same.status == DocumentStatus.indexed:
                _take_over(session, doc, same, sha256)
                return "unchanged"
            session.execute(delete(Document).where(Document.id == same.id))  # failed before
            session.flush()
        elif same is not None and same.id != doc.id:
            doc.status = DocumentStatus.rejected
            doc.error = f"the same content is already in this collection as {same.filename}"
            return "duplicate"
        doc.sha256 = sha256
        doc.size_bytes = len(page.data)
        doc.content_type = detect.HTML
        doc.status = DocumentStatus.queued
        try:
            with session.begin_nested():
                session.add(DocumentFile(document_id=doc.id, data=page.data))
                session.flush()
        except IntegrityError:  # the same content arrived concurrently
            doc.sha256 = None
            doc.status = DocumentStatus.rejected
            doc.error = "the same content is already in this collection"
            return "duplicate"
    return "stored"


def _take_over(session, doc: Document, old: Document, sha256: str) -> None:
    """The page has not changed since `old` was indexed: `doc` takes its chunks, file and
    text, and `old` is removed, in one transaction (a reader sees one or the other)."""
    session.execute(update(Chunk).where(Chunk.document_id == old.id).values(document_id=doc.id))
    session.execute(
        update(DocumentFile).where(DocumentFile.document_id == old.id).values(document_id=doc.id)
    )
    for column in (
        "title", "text", "page_count", "chunks_total", "chunks_done", "size_bytes",
        "ocr_confidence", "ocr_pages",
    ):  # fmt: skip
        setattr(doc, column, getattr(old, column))
    old_id = old.id
    session.execute(delete(Document).where(Document.id == old_id))
    session.flush()
    doc.sha256 = sha256
    doc.status = DocumentStatus.indexed
    doc.notes = "unchanged since it was last fetched: its passages were kept"
    doc.indexed_at = datetime.now(UTC)
    session.flush()
    record_change(session, [doc.id, old_id])


def _expand_sitemap(document_id: int, page: Page, fetcher: Fetcher, settings: Settings) -> str:
    host = host_of(page.url)
    limit = settings.fetch_sitemap_max_pages
    pages, nested = sitemap_urls(page.data)
    seen_maps, other_hosts = {page.url}, 0
    while nested and len(pages) < limit and len(seen_maps) <= MAX_NESTED_SITEMAPS:
        url = nested.pop(0)
        if url in seen_maps or host_of(url) != host:
            other_hosts += url not in seen_maps
            continue
        seen_maps.add(url)
        more, deeper = sitemap_urls(fetcher.get(url).data)
        pages += more
        nested += deeper
    same_host = list(dict.fromkeys(u for u in pages if host_of(u) == host))
    other_hosts += len(set(pages)) - len(same_host)
    kept, dropped = same_host[:limit], max(0, len(same_host) - limit)
    from app.web_pages.service import add_url

    with session_scope() as session:
        doc = session.get(Document, document_id, with_for_update=True)
        if doc is None:
            return "gone"
        collection = session.get(Collection, doc.collection_id)
        assert collection is not None
        user = session.get(User, doc.uploaded_by) if doc.uploaded_by else None
        who = Account.of(user) if user is not None else None
        added = [add_url(session, collection, u, settings, who, sitemap_id=doc.id) for u in kept]
        enqueue(session, [a.document for a in added if a.enqueue])
        notes = [f"a sitemap: {len(kept)} page(s) sent to be read"]
        if other_hosts:
            notes.append(f"{other_hosts} on other hosts left out")
        if dropped:
            notes.append(f"{dropped} past the limit of {limit} (FETCH_SITEMAP_MAX_PAGES) left out")
        older = list(
            session.scalars(
                select(Document.id).where(
                    Document.collection_id == doc.collection_id,
                    Document.filename == doc.filename,
                    Document.id < doc.id,
                )
            )
        )
        if older:  # an earlier reading of the same sitemap
            session.execute(delete(Document).where(Document.id.in_(older)))
        doc.status = DocumentStatus.indexed
        doc.content_type = "application/xml"
        doc.title = f"Sitemap of {host}"
        doc.size_bytes = len(page.data)
        doc.chunks_total = doc.chunks_done = 0
        doc.notes = "; ".join(notes)
        doc.indexed_at = datetime.now(UTC)
    return "sitemap"


def _fail(document_id: int, reason: str) -> None:
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(Document.id == document_id)
            .values(status=DocumentStatus.failed, error=reason[:2000])
        )


def _requeue(document_ids: list[int]) -> None:
    """A stopping worker hands its pages back, to be fetched by the next one."""
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(Document.id.in_(document_ids), Document.status.in_(IN_FLIGHT))
            .values(status=DocumentStatus.queued)
        )
        jobs.enqueue(session, jobs.INGEST_DOCUMENTS, document_ids)
