"""Collections: names, creation, listing and deletion. Who may read them is
`app.collections.access`. Functions flush; the caller commits."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app import jobs
from app.accounts.service import Account
from app.db import add_named
from app.errors import Forbidden, Invalid, NotFound
from app.ingest.index import record_change
from app.models import (
    Collection,
    CollectionMember,
    Document,
    DocumentStatus,
    FusionCalibration,
    Group,
    User,
)

DEFAULT_COLLECTION = "default"
_COLLECTION_NAME = re.compile(r"^[\w][\w .\-]{0,99}$")


def check_collection_name(name: str) -> str:
    name = (name or "").strip()
    if not _COLLECTION_NAME.match(name):
        raise Invalid(
            "a collection name is 1 to 100 letters, digits, spaces, dots, dashes or underscores"
        )
    return name


def get_collection(session: Session, name: str, *, readable: list[int] | None = None) -> Collection:
    """The collection of that name; one the caller may not read is answered as missing."""
    name = check_collection_name(name)
    collection = session.scalar(select(Collection).where(Collection.name == name))
    if collection is None or (readable is not None and collection.id not in readable):
        raise NotFound(f"no collection named {name!r}")
    return collection


def create_collection(
    session: Session,
    name: str,
    *,
    creator: Account | None = None,
    members_may_create: bool = False,
) -> Collection:
    """A new collection that its creator may read (admins read all). A name that is taken
    is refused (409), never handed back: whoever made it first decides who reads it. Members
    may create collections only when COLLECTION_CREATORS is `members`."""
    name = check_collection_name(name)
    if creator is not None and not creator.is_admin and not members_may_create:
        raise Forbidden("only admins create collections (COLLECTION_CREATORS): ask one")
    collection = Collection(name=name)
    add_named(session, collection, Collection.name, f"the name {name!r} is taken: choose another")
    if creator is not None and not creator.is_admin:
        session.add(CollectionMember(collection_id=collection.id, user_id=creator.id))
        session.flush()
    return collection


def collection_for_upload(
    session: Session,
    name: str,
    *,
    readable: list[int] | None = None,
    creator: Account | None = None,
    members_may_create: bool = False,
) -> Collection:
    """Where an upload goes: the named collection if the uploader may read it, else a new
    one of that name if they may create collections. A collection they cannot read and one
    that does not exist get the same answer, so an upload never tells whether a name is
    taken (but by creating it, for those who may create)."""
    name = check_collection_name(name)
    existing = session.scalar(select(Collection).where(Collection.name == name))
    if existing is not None and (readable is None or existing.id in readable):
        return existing
    may_create = creator is None or creator.is_admin or members_may_create
    if existing is not None or not may_create:
        why = "" if may_create else ": only admins create collections (COLLECTION_CREATORS)"
        raise NotFound(f"no collection named {name!r} that you may upload to{why}")
    return create_collection(session, name, creator=creator, members_may_create=members_may_create)


def list_collections(
    session: Session, readable: list[int] | None = None
) -> list[tuple[Collection, int]]:
    """The collections (that may be read) with their number of documents, by name."""
    counts = (
        select(Document.collection_id, func.count().label("n"))
        .group_by(Document.collection_id)
        .subquery()
    )
    query = (
        select(Collection, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.collection_id == Collection.id)
        .order_by(Collection.name)
    )
    if readable is not None:
        query = query.where(Collection.id.in_(readable))
    return [(c, int(n)) for c, n in session.execute(query).all()]


def delete_collection(session: Session, collection_id: int) -> tuple[str, int]:
    """A collection, its documents (with their files and their chunks in every generation)
    and its grants, in one transaction: the foreign keys cascade. Search stops finding them
    at the commit, in every process (the change log). A document still queued or being
    ingested is gone when a worker next reads it. Returns the name and documents removed."""
    # Locked first: an upload into it waits (its foreign key check) and then fails, rather
    # than adding a document that the change log below would not name.
    collection = session.get(Collection, collection_id, with_for_update=True)
    if collection is None:
        raise NotFound(f"no collection {collection_id}")
    name = collection.name
    ids = list(session.scalars(select(Document.id).where(Document.collection_id == collection_id)))
    session.execute(delete(Collection).where(Collection.id == collection_id))
    if ids:
        record_change(session, ids)
    return name, len(ids)


def collection_stats(session: Session) -> list[tuple]:
    """For the admin panel: each collection with its documents, bytes, last indexing, and
    how many are indexed and failed."""
    return list(
        session.execute(
            select(
                Collection,
                func.count(Document.id),
                func.coalesce(func.sum(Document.size_bytes), 0),
                func.max(Document.indexed_at),
                func.count(Document.id).filter(Document.status == DocumentStatus.indexed),
                func.count(Document.id).filter(Document.status == DocumentStatus.failed),
            )
            .outerjoin(Document, Document.collection_id == Collection.id)
            .group_by(Collection.id)
            .order_by(Collection.name)
        ).all()
    )


def grants_by_collection(session: Session) -> dict[int, list[tuple[CollectionMember, str]]]:
    """Each collection's grants, with who they name (an email, or `group <name>`)."""
    rows = session.execute(
        select(CollectionMember, User.email, Group.name)
        .outerjoin(User, User.id == CollectionMember.user_id)
        .outerjoin(Group, Group.id == CollectionMember.group_id)
    ).all()
    out: dict[int, list[tuple[CollectionMember, str]]] = {}
    for member, email, group in rows:
        out.setdefault(member.collection_id, []).append((member, email or f"group {group}"))
    return out


def collection_by_id(session: Session, collection_id: int) -> Collection:
    collection = session.get(Collection, collection_id)
    if collection is None:
        raise NotFound(f"no collection {collection_id}")
    return collection


def set_eval_set(session: Session, collection_id: int, path: str) -> Collection:
    """The BEIR directory (on the server) that generations are compared on for this
    collection; an empty path clears it."""
    collection = collection_by_id(session, collection_id)
    path = path.strip()
    if path and not (Path(path) / "queries.jsonl").exists():
        raise Invalid(f"{path} is not a BEIR directory on the server (no queries.jsonl)")
    if path != (collection.eval_set or ""):
        collection.eval_set = path or None
        # Its fusion was learned from the old labels: the default applies until the next one.
        session.execute(
            delete(FusionCalibration).where(FusionCalibration.collection_id == collection.id)
        )
        jobs.enqueue(session, jobs.CALIBRATE_FUSION, collection.id)
    return collection
