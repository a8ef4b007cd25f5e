"""Collections in the JSON API (/api/collections) and the documents page's "new collection"
form. Everything is limited to the collections the person may read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict

from app.collections import service
from app.web.deps import CsrfDep, CurrentUser, SessionDep, SettingsDep, readable

api = APIRouter(prefix="/api", tags=["collections"], dependencies=[CsrfDep])
pages = APIRouter(dependencies=[CsrfDep], include_in_schema=False)


class CollectionOut(BaseModel):
    id: int
    name: str
    documents: int


class CollectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored

    name: str


@api.get("/collections", response_model=list[CollectionOut])
def list_collections(session: SessionDep, who: CurrentUser) -> list[CollectionOut]:
    """The collections you may read."""
    return [
        CollectionOut(id=c.id, name=c.name, documents=n)
        for c, n in service.list_collections(session, readable(session, who))
    ]


@api.post(
    "/collections",
    response_model=CollectionOut,
    status_code=201,
    responses={
        403: {"description": "Members may not create collections"},
        409: {"description": "The name is taken"},
    },
)
def create_collection(
    body: CollectionIn, session: SessionDep, settings: SettingsDep, who: CurrentUser
) -> CollectionOut:
    """Make a collection (its maker may read it; admins may read all). A taken name is a
    409; members may create collections only when COLLECTION_CREATORS is `members` (403)."""
    collection = service.create_collection(
        session, body.name, creator=who.user, members_may_create=settings.members_may_create
    )
    return CollectionOut(id=collection.id, name=collection.name, documents=0)


@pages.post("/collections", response_class=HTMLResponse)
def create_collection_page(
    session: SessionDep, settings: SettingsDep, who: CurrentUser, name: Annotated[str, Form()]
):
    collection = service.create_collection(
        session, name, creator=who.user, members_may_create=settings.members_may_create
    )
    response = Response(status_code=204)
    response.headers["HX-Redirect"] = f"/documents?collection={collection.name}"
    return response
