"""The upload portal at /documents (htmx): drop many files, watch each row settle, delete,
pick or create a collection."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.ingest import service
from app.web.api import upload_status
from app.web.deps import CsrfDep, SessionDep, SettingsDep
from app.web.render import render
from app.web.uploads import receive_files, store

router = APIRouter(dependencies=[CsrfDep], include_in_schema=False)


def _picker_context(session, selected: str) -> dict:
    collections = [c.name for c, _ in service.list_collections(session)]
    if selected not in collections:
        collections.insert(0, selected)
    return {"collections": collections, "selected": selected}


@router.get("/documents", response_class=HTMLResponse)
def documents_page(request: Request, session: SessionDep, collection: str | None = None):
    selected = service.check_collection_name(collection or service.DEFAULT_COLLECTION)
    found = service.list_collections(session)
    current = next((c for c, _ in found if c.name == selected), None)
    docs = service.list_documents(session, collection_id=current.id) if current else []
    context = {"active": "documents", "documents": docs, **_picker_context(session, selected)}
    return render(request, "documents.html", context, fragment="_documents_table.html")


@router.post("/documents/upload", response_class=HTMLResponse)
async def upload(request: Request, session: SessionDep, settings: SettingsDep):
    received = await receive_files(request, settings)
    name = received.fields.get("collection") or service.DEFAULT_COLLECTION
    collection = service.get_collection(session, name, create=True)
    results = store(session, received, collection, settings)
    session.commit()
    service.enqueue([r.document for r in results if r.enqueue])
    return render(
        request,
        "_document_rows.html",
        {"documents": [r.document for r in results]},
        status_code=upload_status(results) if results else 422,
    )


@router.get("/documents/{document_id}/row", response_class=HTMLResponse)
def document_row(request: Request, document_id: int, session: SessionDep):
    doc = service.get_document(session, document_id)
    return render(request, "_document_rows.html", {"documents": [doc]})


@router.post("/documents/{document_id}/delete")
def delete(document_id: int, session: SessionDep) -> Response:
    service.delete_document(session, document_id)
    return Response(status_code=200)  # htmx swaps the row for this empty body


@router.post("/collections", response_class=HTMLResponse)
def create_collection(request: Request, session: SessionDep, name: str = Form(...)):
    collection = service.get_collection(session, name, create=True)
    response = Response(status_code=204)
    response.headers["HX-Redirect"] = f"/documents?collection={collection.name}"
    return response
