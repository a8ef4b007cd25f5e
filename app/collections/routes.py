"""Collections in the JSON API (/api/collections) and the documents page's "new collection"
form. Everything is limited to the collections the person may read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from app.collections import service
from app.web.deps import CsrfDep, CurrentUser, SessionDep, readable

api = APIRouter(prefix="/api", tags=["collections"], dependencies=[CsrfDep])
pages = APIRouter(dependencies=[CsrfDep], include_in_schema=False)


class CollectionOut(BaseModel):
    id: int
    name: str
    documents: int


class CollectionIn(BaseModel):
    name: str


@api.get("/collections", response_model=list[CollectionOut])
def list_collections(session: SessionDep, who: CurrentUser) -> list[CollectionOut]:
    """The collections you may read."""
    return [
        CollectionOut(id=c.id, name=c.name, documents=n)
        for c, n in service.list_collections(session, readable(session, who))
    ]


@api.post("/collections", response_model=CollectionOut, status_code=201)
def create_collection(body: CollectionIn, session: SessionDep, who: CurrentUser) -> CollectionOut:
    """Make a collection (its maker may read it; admins may read all)."""
    collection = service.get_collection(
        session, body.name, create=True, readable=readable(session, who), creator=who.user
    )
    return CollectionOut(id=collection.id, name=collection.name, documents=0)


@pages.post("/collections", response_class=HTMLResponse)
def create_collection_page(
    request: Request, session: SessionDep, who: CurrentUser, name: Annotated[str, Form()]
):
    collection = service.get_collection(
        session, name, create=True, readable=readable(session, who), creator=who.user
    )
    response = Response(status_code=204)
    response.headers["HX-Redirect"] = f"/documents?collection={collection.name}"
    return response
