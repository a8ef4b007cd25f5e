"""The upload portal at /documents (htmx): drop many files, watch each row settle, delete.
Everything is limited to the collections the person may read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.accounts.service import audit
from app.collections.service import (
    DEFAULT_COLLECTION,
    check_collection_name,
    list_collections,
)
from app.documents import service
from app.documents.api import upload_status
from app.documents.uploads import receive_and_store, upload_target
from app.web.deps import CsrfDep, CurrentUser, SessionDep, SettingsDep, client_address, readable
from app.web.render import render
from app.web_pages.addresses import MAX_URL_CHARS
from app.web_pages.service import add_urls

router = APIRouter(dependencies=[CsrfDep], include_in_schema=False)


@router.get("/documents", response_class=HTMLResponse)
def documents_page(
    request: Request, session: SessionDep, who: CurrentUser, collection: str | None = None
):
    found = list_collections(session, readable(session, who))
    names = [c.name for c, _ in found]
    default = DEFAULT_COLLECTION if who.user.is_admin or not names else names[0]
    selected = check_collection_name(collection or default)
    current, total = next(((c, n) for c, n in found if c.name == selected), (None, 0))
    docs = service.list_documents(session, collection_id=current.id) if current else []
    context = {
        "active": "documents",
        "documents": docs,
        "total": total,
        "collections": names if selected in names else [selected, *names],
        "selected": selected,
    }
    return render(request, "documents.html", context, fragment="_documents_table.html")


@router.post("/documents/upload", response_class=HTMLResponse)
async def upload(request: Request, session: SessionDep, settings: SettingsDep, who: CurrentUser):
    results = await receive_and_store(request, session, settings, who)
    return render(
        request,
        "_document_rows.html",
        {"documents": [r.document for r in results]},
        status_code=upload_status(results) if results else 422,
    )


@router.post("/documents/urls", response_class=HTMLResponse)
def add_web_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    who: CurrentUser,
    url: Annotated[str, Form(max_length=MAX_URL_CHARS)],
    collection: Annotated[str, Form(max_length=200)] = DEFAULT_COLLECTION,
):
    """The page's URL field: one web page (or sitemap), answered with its row."""
    target = upload_target(session, collection, who, settings)
    results = add_urls(session, target, [url], settings, uploaded_by=who.user)
    # 200 even for a refused URL: its row says why (htmx swaps in 2xx answers only).
    return render(request, "_document_rows.html", {"documents": [r.document for r in results]})


@router.get("/documents/{document_id}/row", response_class=HTMLResponse)
def document_row(request: Request, document_id: int, session: SessionDep, who: CurrentUser):
    doc = service.get_document(session, document_id, readable(session, who))
    return render(request, "_document_rows.html", {"documents": [doc]})


@router.post("/documents/{document_id}/delete")
def delete(request: Request, document_id: int, session: SessionDep, who: CurrentUser) -> Response:
    doc = service.delete_document(session, document_id, readable(session, who), who.user)
    audit(
        session,
        who.user,
        "document.delete",
        f"{doc.id} {doc.filename}",
        address=client_address(request),
    )
    return Response(status_code=200)  # htmx swaps the row for this empty body
