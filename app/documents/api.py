"""The documents' JSON API under /api/documents, documented in the OpenAPI schema at /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.accounts.service import audit
from app.collections.service import DEFAULT_COLLECTION, get_collection
from app.documents import service
from app.documents.service import Added
from app.documents.uploads import receive_and_store, upload_target
from app.models import Document
from app.web.deps import CsrfDep, CurrentUser, SessionDep, SettingsDep, readable
from app.web_pages.addresses import MAX_URL_CHARS
from app.web_pages.service import MAX_URLS_PER_REQUEST, add_urls

router = APIRouter(prefix="/api", tags=["documents"], dependencies=[CsrfDep])


class DocumentOut(BaseModel):
    id: int
    filename: str
    title: str | None
    collection: str
    content_type: str
    size_bytes: int
    status: str
    error: str | None
    chunks: int
    chunks_done: int
    chunks_total: int
    page_count: int | None
    source_url: str | None = None  # a web page's address
    sitemap_id: int | None = None  # the sitemap that brought it
    ocr_confidence: float | None = None  # of the text read by OCR (0-1), if any was
    ocr_pages: dict[str, float] | None = None  # each OCR'd page's confidence
    notes: str | None = None  # pages left unread, a sitemap's pages
    labels: list[str] = []
    duplicate: bool = False
    created_at: datetime
    indexed_at: datetime | None


class DocumentList(BaseModel):
    documents: list[DocumentOut]


class DocumentPage(DocumentList):
    total: int  # documents there are, listed or not
    offset: int


def document_out(doc: Document, duplicate: bool = False) -> DocumentOut:
    return DocumentOut(
        id=doc.id,
        filename=doc.filename,
        title=doc.title,
        collection=doc.collection.name,
        content_type=doc.content_type,
        size_bytes=doc.size_bytes,
        status=doc.status,
        error=doc.error,
        chunks=doc.chunks_total if doc.status == "indexed" else 0,
        chunks_done=doc.chunks_done,
        chunks_total=doc.chunks_total,
        page_count=doc.page_count,
        source_url=doc.source_url,
        sitemap_id=doc.sitemap_id,
        ocr_confidence=doc.ocr_confidence,
        ocr_pages=doc.ocr_pages,
        notes=doc.notes,
        labels=list(doc.labels or []),
        duplicate=duplicate,
        created_at=doc.created_at,
        indexed_at=doc.indexed_at,
    )


def upload_status(results: list[Added]) -> int:
    """201 when anything new was accepted, 200 for duplicates only, else the first refusal's
    status (413 too large, 415 type not allowed, 422 empty or unreadable)."""
    if any(r.http_status == 201 for r in results):
        return 201
    if results and all(r.http_status == 200 for r in results):
        return 200
    refused = [r.http_status for r in results if r.http_status >= 400]
    return refused[0] if refused else 422


UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "PDF, DOCX, HTML, Markdown, text, or images "
                            "(PNG, JPEG, TIFF, WebP; read by OCR); "
                            "the type is decided from the content",
                        },
                        "collection": {"type": "string", "default": "default"},
                        "labels": {
                            "type": "string",
                            "description": "labels for every file, commas between them "
                            "(each 1 to 64 letters, digits, spaces or .:/-_)",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "/documents",
    response_model=DocumentList,
    status_code=201,
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {"description": "Every file was already in the collection"},
        413: {"description": "A file is larger than MAX_UPLOAD_MB"},
        415: {"description": "Not an allowed type (the detected type is named)"},
        422: {"description": "Empty, unreadable, or a malformed request"},
    },
)
async def upload_documents(
    request: Request, session: SessionDep, settings: SettingsDep, who: CurrentUser
):
    """Upload files (multipart, field `files`, many at once) into a collection (made if new,
    readable by whoever made it), with labels (field `labels`) that searches can filter on.
    Each is queued for ingestion; refused files are listed with the reason."""
    results = await receive_and_store(
        request,
        session,
        settings,
        who,
        request.query_params.get("collection"),
        request.query_params.get("labels"),
    )
    if not results:
        return JSONResponse(
            {"error": {"code": "invalid", "message": "no files in the request (field: files)"}},
            status_code=422,
        )
    body = DocumentList(documents=[document_out(r.document, r.duplicate) for r in results])
    return JSONResponse(body.model_dump(mode="json"), status_code=upload_status(results))


class UrlsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored

    urls: list[str] = Field(
        min_length=1,
        max_length=MAX_URLS_PER_REQUEST,
        description="http(s) addresses of web pages, or of a sitemap.xml (its pages follow)",
    )
    collection: str = Field(DEFAULT_COLLECTION, max_length=200)


@router.post(
    "/documents/urls",
    response_model=DocumentList,
    status_code=201,
    responses={
        200: {"description": "Every URL was already on its way"},
        403: {"description": "A page of that address was added by someone else"},
        422: {"description": "Not an http(s) URL, or an address that may not be fetched"},
    },
)
def add_web_pages(body: UrlsIn, session: SessionDep, settings: SettingsDep, who: CurrentUser):
    """Web pages to fetch and read, by URL, into a collection (made if new). Each is
    queued; the worker fetches it (robots.txt obeyed, FETCH_MAX_MB, FETCH_TIMEOUT_S) and
    reads its main content. A URL that may not be fetched is listed with the reason."""
    if any(len(u) > MAX_URL_CHARS for u in body.urls):
        return JSONResponse(
            {"error": {"code": "invalid", "message": f"a URL is over {MAX_URL_CHARS} characters"}},
            status_code=422,
        )
    target = upload_target(session, body.collection, who, settings)
    results = add_urls(session, target, body.urls, settings, uploaded_by=who.user)
    out = DocumentList(documents=[document_out(r.document, r.duplicate) for r in results])
    return JSONResponse(out.model_dump(mode="json"), status_code=upload_status(results))


@router.get("/documents", response_model=DocumentPage)
def list_documents(
    session: SessionDep,
    who: CurrentUser,
    collection: str | None = Query(None, description="only this collection"),
    limit: int = Query(service.LIST_LIMIT, ge=1, le=service.LIST_LIMIT),
    offset: int = Query(0, ge=0, description="documents to skip (newest first)"),
) -> DocumentPage:
    """The documents of the collections you may read, newest first, `limit` at a time;
    `total` says how many there are."""
    visible = readable(session, who)
    collection_id = get_collection(session, collection, readable=visible).id if collection else None
    docs = service.list_documents(
        session, collection_id=collection_id, readable=visible, limit=limit, offset=offset
    )
    total = service.count_documents(session, collection_id=collection_id, readable=visible)
    return DocumentPage(documents=[document_out(d) for d in docs], total=total, offset=offset)


@router.get("/documents/{document_id}", response_model=DocumentOut)
def get_document(document_id: int, session: SessionDep, who: CurrentUser) -> DocumentOut:
    return document_out(service.get_document(session, document_id, readable(session, who)))


@router.get(
    "/documents/{document_id}/file",
    response_class=Response,
    responses={200: {"description": "The original file, as an attachment"}},
)
def download_document(document_id: int, session: SessionDep, who: CurrentUser) -> Response:
    """The original file, always as a download (never rendered inline)."""
    doc, data = service.document_file(session, document_id, readable(session, who))
    return attachment(data, doc.filename, doc.content_type)


def attachment(data: bytes, filename: str, content_type: str) -> Response:
    quoted = quote(filename, safe="")
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": (
                f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"
            ),
            "X-Content-Type-Options": "nosniff",
            "X-Original-Content-Type": content_type,
        },
    )


@router.delete("/documents/{document_id}", status_code=204, response_class=Response)
def delete_document(
    request: Request, document_id: int, session: SessionDep, who: CurrentUser
) -> Response:
    """Delete a document, its file and its chunks."""
    doc = service.delete_document(session, document_id, readable(session, who), who.user)
    address = request.client.host if request.client else None
    audit(session, who.user, "document.delete", f"{doc.id} {doc.filename}", address=address)
    return Response(status_code=204)
