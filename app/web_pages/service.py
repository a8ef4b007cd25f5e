"""Web pages by URL: what the documents page, the JSON API and `groundwork ingest` call.
A URL becomes a document row (queued, with the URL as its source) and a job; the worker
fetches it (`app.web_pages.tasks`). Functions flush and ask for their jobs; the caller's
unit of work commits.

A page is named by its URL (host, path and query), so the rule for uploads holds: asking
for a URL again makes a new version that replaces the old one once it is indexed, if its
content changed; if it did not, the old version's chunks are kept (`tasks`)."""

from __future__ import annotations

import hashlib
import unicodedata
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from app.accounts.service import Account
from app.config import Settings
from app.documents.service import Added, add_rejected, current_version, enqueue, may_change
from app.errors import Invalid
from app.ingest.detect import HTML
from app.models import IN_FLIGHT, Collection, Document, DocumentStatus
from app.web_pages.addresses import Refused, check_url, literal_refusal

MAX_URLS_PER_REQUEST = 100


def url_name(url: str) -> str:
    """The document name of a URL: host, path and query (at most 255 characters; a longer
    one keeps its start and a hash of the rest). It always holds a '/', which no uploaded
    file's name does, so the two never replace each other."""
    parts = urlsplit(url)
    name = (parts.netloc or "") + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    if len(name) > 255:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{name[:238]}…{digest}"
    return name


def add_url(
    session: Session,
    collection: Collection,
    url: str,
    settings: Settings,
    uploaded_by: Account | None = None,
    sitemap_id: int | None = None,
) -> Added:
    """A document for the page at `url`, queued to be fetched; or a rejected one saying
    why the URL may not be fetched (what can be told without DNS; the worker checks the
    rest), or the one already on its way for the same URL."""
    try:
        normalized = check_url(url)
        literal_refusal(normalized, settings.fetch_allowed)
    except Refused as err:
        shown = url.strip()[:255] or "(empty URL)"
        return add_rejected(session, collection, shown, 0, str(err), 422, uploaded_by)
    name = url_name(normalized)
    previous = current_version(session, collection.id, name)
    if previous is not None and not may_change(uploaded_by, previous):
        reason = f"{name} was added by someone else: only they or an admin can replace it"
        return add_rejected(session, collection, name, 0, reason, 403, uploaded_by)
    if previous is not None and previous.status in IN_FLIGHT and previous.sha256 is None:
        return Added(previous, enqueue=False, duplicate=True, http_status=200)  # on its way
    doc = Document(
        collection_id=collection.id,
        filename=name,
        content_type=HTML,
        size_bytes=0,
        sha256=None,
        status=DocumentStatus.queued,
        supersedes_id=previous.id if previous is not None else None,
        uploaded_by=uploaded_by.id if uploaded_by is not None else None,
        source_url=normalized,
        sitemap_id=sitemap_id,
    )
    session.add(doc)
    session.flush()
    return Added(doc, enqueue=True)


def add_urls(
    session: Session,
    collection: Collection,
    urls: list[str],
    settings: Settings,
    uploaded_by: Account | None = None,
) -> list[Added]:
    """Each URL as `add_url`, and the new ones asked for when the unit of work commits."""
    if not urls:
        raise Invalid("no URLs given")
    if len(urls) > MAX_URLS_PER_REQUEST:
        raise Invalid(f"at most {MAX_URLS_PER_REQUEST} URLs at once (a sitemap brings more)")
    results = [add_url(session, collection, u, settings, uploaded_by) for u in urls]
    enqueue(session, [r.document for r in results if r.enqueue])
    return results


def is_url(text: str) -> bool:
    return text.strip().lower().startswith(("http://", "https://"))
