"""Collections and access: each collection's numbers and grants, its documents (move,
delete), deleting a collection, granting and withdrawing read access, the eval set that
generations are compared on, and reindexing with live progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.admin.common import admin_api, admin_pages, note
from app.collections import access
from app.collections import service as collections
from app.documents import reindex as reindexing
from app.documents import service as documents
from app.errors import NotFound
from app.models import FusionCalibration, ReindexJob
from app.web.deps import AdminUser, SessionDep
from app.web.render import render

pages = admin_pages()
api = admin_api()


def collections_context(session: Session) -> dict:
    return {
        "collection_stats": collections.collection_stats(session),
        "members": collections.grants_by_collection(session),
        "calibrations": {c.collection_id: c for c in session.scalars(select(FusionCalibration))},
    }


def _collections(request: Request, session: Session) -> HTMLResponse:
    return render(request, "_admin_collections.html", collections_context(session))


@pages.get("/documents", response_class=HTMLResponse)
def documents_of(request: Request, session: SessionDep, collection: str):
    found = collections.get_collection(session, collection)
    docs = documents.list_documents(session, collection_id=found.id)
    names = [c.name for c, _ in collections.list_collections(session)]
    return render(
        request,
        "_admin_documents.html",
        {"collection": found, "documents": docs, "collection_names": names},
    )


@pages.post("/documents/{document_id}/move", response_class=HTMLResponse)
def move(
    request: Request,
    document_id: int,
    session: SessionDep,
    who: AdminUser,
    collection: Annotated[str, Form()],
):
    doc = documents.move_document(session, document_id, collection)
    note(session, request, who, "document.move", f"{doc.id} {doc.filename}", to=collection)
    return HTMLResponse(Markup("<span class='muted'>moved to {}</span>").format(collection))


@pages.post("/collections/{collection_id}/delete", response_class=HTMLResponse)
def delete_collection(request: Request, collection_id: int, session: SessionDep, who: AdminUser):
    name, count = collections.delete_collection(session, collection_id)
    note(session, request, who, "collection.delete", name, documents=count)
    return _collections(request, session)


@api.delete("/collections/{collection_id}", status_code=204, response_class=Response)
def delete_collection_api(
    request: Request, collection_id: int, session: SessionDep, who: AdminUser
) -> Response:
    """Delete a collection with its documents, their files and chunks, and its grants."""
    name, count = collections.delete_collection(session, collection_id)
    note(session, request, who, "collection.delete", name, documents=count)
    return Response(status_code=204)


@pages.post("/collections/{collection_id}/members", response_class=HTMLResponse)
def add_member(
    request: Request,
    collection_id: int,
    session: SessionDep,
    who: AdminUser,
    email: Annotated[str, Form()] = "",
    group: Annotated[str, Form()] = "",
):
    collection = collections.collection_by_id(session, collection_id)
    access.grant(session, collection, email, group)
    detail = {"email": email.strip() or None, "group": group.strip() or None}
    note(session, request, who, "collection.member_add", collection.name, **detail)
    return _collections(request, session)


@pages.post("/collections/{collection_id}/members/{member_id}/remove", response_class=HTMLResponse)
def remove_member(
    request: Request, collection_id: int, member_id: int, session: SessionDep, who: AdminUser
):
    access.remove_member(session, member_id)
    note(session, request, who, "collection.member_remove", str(collection_id), member=member_id)
    return _collections(request, session)


@pages.post("/collections/{collection_id}/eval-set", response_class=HTMLResponse)
def set_eval_set(
    request: Request,
    collection_id: int,
    session: SessionDep,
    who: AdminUser,
    path: Annotated[str, Form()] = "",
):
    collection = collections.set_eval_set(session, collection_id, path)
    note(session, request, who, "collection.eval_set", collection.name, path=collection.eval_set)
    return _collections(request, session)


@pages.post("/reindex", response_class=HTMLResponse)
def reindex(
    request: Request,
    session: SessionDep,
    who: AdminUser,
    scope: Annotated[str, Form()],
    target: Annotated[str, Form()] = "",
):
    job, docs = reindexing.reindex(session, scope, target.strip() or None, who.user)
    note(session, request, who, "reindex", f"{scope} {target}".strip(), documents=len(docs))
    return _reindex(request, session, job)


@pages.get("/reindex/{job_id}", response_class=HTMLResponse)
def reindex_status(request: Request, job_id: int, session: SessionDep):
    job = session.get(ReindexJob, job_id)
    if job is None:
        raise NotFound(f"no reindex job {job_id}")
    return _reindex(request, session, job)


def _reindex(request: Request, session: Session, job: ReindexJob) -> HTMLResponse:
    progress = reindexing.reindex_progress(session, job)
    return render(request, "_admin_reindex.html", {"job": job, "progress": progress})
