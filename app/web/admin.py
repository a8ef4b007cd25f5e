"""The admin panel at /admin: jobs, documents and collections, reindexing, index generations
(model or chunking changes without downtime), people and access, and the audit log. Every
route is for admins only (403 otherwise), enforced here on the server."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import accounts, admin
from app.config import Settings
from app.errors import Conflict, Invalid, NotFound
from app.ingest import service
from app.models import (
    AuditEvent,
    Collection,
    CollectionMember,
    Document,
    DocumentStatus,
    EvalRun,
    Group,
    GroupMember,
    IndexGeneration,
    IngestionAttempt,
    ReindexJob,
    User,
)
from app.services.worker_process import workers_answering
from app.web.auth import client_address
from app.web.deps import AdminUser, CsrfDep, SessionDep, SettingsDep, require_admin
from app.web.render import render

pages = APIRouter(
    prefix="/admin", dependencies=[Depends(require_admin), CsrfDep], include_in_schema=False
)


def note(session: Session, request: Request, who: AdminUser, action: str, target: str, **detail):
    accounts.audit(session, who.user, action, target, detail, client_address(request))


# -- the page and its live fragments ---------------------------------------------------------


@pages.get("", response_class=HTMLResponse)
def admin_page(request: Request, session: SessionDep, settings: SettingsDep):
    context = {
        "active": "admin",
        **jobs_context(session, settings),
        **collections_context(session),
        **generations_context(session, settings),
        **people_context(session),
        "reindex_jobs": [
            (job, admin.reindex_progress(session, job))
            for job in session.scalars(select(ReindexJob).order_by(ReindexJob.id.desc()).limit(5))
        ],
        "audit": session.scalars(
            select(AuditEvent).order_by(AuditEvent.id.desc()).limit(100)
        ).all(),
    }
    return render(request, "admin.html", context)


def queue_depth(settings: Settings) -> int | None:
    try:
        return int(redis.Redis.from_url(settings.redis_url or "", socket_timeout=1).llen("celery"))
    except redis.RedisError:
        return None


def jobs_context(session: Session, settings: Settings) -> dict:
    attempts = (
        select(IngestionAttempt.document_id, func.count().label("n"))
        .group_by(IngestionAttempt.document_id)
        .subquery()
    )
    rows = session.execute(
        select(Document, func.coalesce(attempts.c.n, 0))
        .outerjoin(attempts, attempts.c.document_id == Document.id)
        .where(Document.status.in_((*admin.IN_FLIGHT, DocumentStatus.failed)))
        .order_by(Document.updated_at.desc())
        .limit(200)
    ).all()
    return {
        "queue_depth": queue_depth(settings),
        "workers": workers_answering(timeout=1.0),
        "running": [(d, n) for d, n in rows if d.status != "queued" and d.status != "failed"],
        "queued": [(d, n) for d, n in rows if d.status == "queued"],
        "failed": [(d, n) for d, n in rows if d.status == "failed"],
    }


@pages.get("/jobs", response_class=HTMLResponse)
def jobs(request: Request, session: SessionDep, settings: SettingsDep):
    return render(request, "_admin_jobs.html", jobs_context(session, settings))


@pages.post("/documents/{document_id}/retry", response_class=HTMLResponse)
def retry(
    request: Request, document_id: int, session: SessionDep, settings: SettingsDep, who: AdminUser
):
    doc = admin.retry_document(session, document_id)
    note(session, request, who, "document.retry", f"{doc.id} {doc.filename}")
    session.commit()
    service.enqueue([doc])
    return render(request, "_admin_jobs.html", jobs_context(session, settings))


# -- documents and collections ---------------------------------------------------------------


def collections_context(session: Session) -> dict:
    stats = session.execute(
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
    members = session.execute(
        select(CollectionMember, User.email, Group.name)
        .outerjoin(User, User.id == CollectionMember.user_id)
        .outerjoin(Group, Group.id == CollectionMember.group_id)
    ).all()
    by_collection: dict[int, list] = {}
    for member, email, group in members:
        by_collection.setdefault(member.collection_id, []).append(
            (member, email or f"group {group}")
        )
    return {"collection_stats": stats, "members": by_collection}


@pages.get("/documents", response_class=HTMLResponse)
def documents(request: Request, session: SessionDep, collection: str):
    found = service.get_collection(session, collection)
    docs = service.list_documents(session, collection_id=found.id)
    names = [c.name for c, _ in service.list_collections(session)]
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
    doc = admin.move_document(session, document_id, collection)
    note(session, request, who, "document.move", f"{doc.id} {doc.filename}", to=collection)
    return HTMLResponse(Markup("<span class='muted'>moved to {}</span>").format(collection))


@pages.post("/collections/{collection_id}/delete", response_class=HTMLResponse)
def delete_collection(request: Request, collection_id: int, session: SessionDep, who: AdminUser):
    name, documents = admin.delete_collection(session, collection_id)
    note(session, request, who, "collection.delete", name, documents=documents)
    return render(request, "_admin_collections.html", collections_context(session))


@pages.post("/collections/{collection_id}/members", response_class=HTMLResponse)
def add_member(
    request: Request,
    collection_id: int,
    session: SessionDep,
    who: AdminUser,
    email: Annotated[str, Form()] = "",
    group: Annotated[str, Form()] = "",
):
    collection = session.get(Collection, collection_id)
    if collection is None:
        raise NotFound(f"no collection {collection_id}")
    if email.strip():
        accounts.add_member(session, collection, user=accounts.user_by_email(session, email))
    elif group.strip():
        accounts.add_member(session, collection, group=accounts.group_named(session, group))
    else:
        raise Invalid("name a user (email) or a group")
    note(
        session,
        request,
        who,
        "collection.member_add",
        collection.name,
        email=email.strip() or None,
        group=group.strip() or None,
    )
    return render(request, "_admin_collections.html", collections_context(session))


@pages.post("/collections/{collection_id}/members/{member_id}/remove", response_class=HTMLResponse)
def remove_member(
    request: Request, collection_id: int, member_id: int, session: SessionDep, who: AdminUser
):
    accounts.remove_member(session, member_id)
    note(session, request, who, "collection.member_remove", str(collection_id), member=member_id)
    return render(request, "_admin_collections.html", collections_context(session))


@pages.post("/collections/{collection_id}/eval-set", response_class=HTMLResponse)
def set_eval_set(
    request: Request,
    collection_id: int,
    session: SessionDep,
    who: AdminUser,
    path: Annotated[str, Form()] = "",
):
    from pathlib import Path

    collection = session.get(Collection, collection_id)
    if collection is None:
        raise NotFound(f"no collection {collection_id}")
    path = path.strip()
    if path and not (Path(path) / "queries.jsonl").exists():
        raise Invalid(f"{path} is not a BEIR directory on the server (no queries.jsonl)")
    collection.eval_set = path or None
    note(session, request, who, "collection.eval_set", collection.name, path=path or None)
    return render(request, "_admin_collections.html", collections_context(session))


# -- reindexing ------------------------------------------------------------------------------


@pages.post("/reindex", response_class=HTMLResponse)
def reindex(
    request: Request,
    session: SessionDep,
    who: AdminUser,
    scope: Annotated[str, Form()],
    target: Annotated[str, Form()] = "",
):
    job, docs = admin.reindex(session, scope, target.strip() or None, who.user)
    note(session, request, who, "reindex", f"{scope} {target}".strip(), documents=len(docs))
    session.commit()
    service.enqueue(docs)
    return render(
        request,
        "_admin_reindex.html",
        {"job": job, "progress": admin.reindex_progress(session, job)},
    )


@pages.get("/reindex/{job_id}", response_class=HTMLResponse)
def reindex_status(request: Request, job_id: int, session: SessionDep):
    job = session.get(ReindexJob, job_id)
    if job is None:
        raise NotFound(f"no reindex job {job_id}")
    return render(
        request,
        "_admin_reindex.html",
        {"job": job, "progress": admin.reindex_progress(session, job)},
    )


# -- generations -----------------------------------------------------------------------------


def generations_context(session: Session, settings: Settings) -> dict:
    generations = session.scalars(
        select(IndexGeneration).order_by(IndexGeneration.id.desc()).limit(10)
    ).all()
    pending = next((g for g in generations if g.state in ("building", "ready")), None)
    live = next((g for g in generations if g.state == "live"), None)

    comparison = None
    if pending is not None and live is not None:
        runs = session.scalars(
            select(EvalRun).where(EvalRun.kind == "compare").order_by(EvalRun.id.desc()).limit(20)
        )
        wanted = [live.id, pending.id]
        comparison = next((r for r in runs if r.settings.get("generations") == wanted), None)
    return {
        "generations": generations,
        "live": live,
        "pending": pending,
        "pending_progress": admin.generation_progress(session, pending) if pending else None,
        "comparison": comparison,
        "roll_back_to": admin.roll_back_target(session) if pending is None else None,
        "eval_collections": session.scalars(
            select(Collection).where(Collection.eval_set.is_not(None))
        ).all(),
        "default_model": settings.embedding_model,
        "default_chunk_tokens": settings.chunk_tokens,
        "default_overlap": settings.chunk_overlap_tokens,
    }


@pages.get("/generations", response_class=HTMLResponse)
def generations(request: Request, session: SessionDep, settings: SettingsDep):
    return render(request, "_admin_generations.html", generations_context(session, settings))


@pages.post("/generations", response_class=HTMLResponse)
def start_generation(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    who: AdminUser,
    model: Annotated[str, Form()],
    chunk_tokens: Annotated[int, Form()],
    overlap_tokens: Annotated[int, Form()],
    auto_switch: Annotated[bool, Form()] = False,
):
    from worker.tasks import build_generation

    generation = admin.start_generation(
        session,
        settings,
        model=model.strip(),
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
        auto_switch=auto_switch,
        actor=who.user,
    )
    note(
        session,
        request,
        who,
        "generation.start",
        str(generation.id),
        model=model,
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
        auto_switch=auto_switch,
    )
    session.commit()
    build_generation.delay(generation.id)
    return render(request, "_admin_generations.html", generations_context(session, settings))


@pages.post("/generations/{generation_id}/cancel", response_class=HTMLResponse)
def cancel_generation(
    request: Request, generation_id: int, session: SessionDep, settings: SettingsDep, who: AdminUser
):
    from worker.tasks import drop_retired

    admin.cancel_generation(session, generation_id)
    note(session, request, who, "generation.cancel", str(generation_id))
    session.commit()
    drop_retired.delay()
    return render(request, "_admin_generations.html", generations_context(session, settings))


@pages.post("/generations/{generation_id}/switch", response_class=HTMLResponse)
def switch_generation(
    request: Request, generation_id: int, session: SessionDep, settings: SettingsDep, who: AdminUser
):
    from worker.tasks import build_generation, drop_retired

    generation = session.get(IndexGeneration, generation_id, with_for_update=True)
    if generation is None:
        raise NotFound(f"no generation {generation_id}")
    missing = admin.resume_building(session, generation)
    if missing:
        note(session, request, who, "generation.resume", str(generation_id), missing=missing)
        session.commit()
        build_generation.delay(generation_id)
        raise Conflict(
            f"generation {generation_id} lacks {missing} document(s) indexed since it became "
            "ready: it is being brought up to date; switch to it when it is ready again"
        )
    old = admin.switch_to(session, generation)
    note(
        session,
        request,
        who,
        "generation.switch",
        str(generation_id),
        retired=old.id if old else None,
    )
    session.commit()
    drop_retired.apply_async(countdown=admin.RETIRED_KEEP_S + 60)
    return render(request, "_admin_generations.html", generations_context(session, settings))


@pages.post("/generations/roll-back", response_class=HTMLResponse)
def roll_back(request: Request, session: SessionDep, settings: SettingsDep, who: AdminUser):
    generation = admin.roll_back(session)
    note(session, request, who, "generation.roll_back", str(generation.id))
    return render(request, "_admin_generations.html", generations_context(session, settings))


@pages.post("/generations/{generation_id}/compare", response_class=HTMLResponse)
def compare(
    request: Request,
    generation_id: int,
    session: SessionDep,
    settings: SettingsDep,
    who: AdminUser,
    collection_id: Annotated[int, Form()],
):
    from worker.tasks import compare_generations

    context = generations_context(session, settings)
    if context["live"] is None:
        raise Invalid("there is no live generation to compare with")
    compare_generations.delay(collection_id, [context["live"].id, generation_id])
    note(session, request, who, "generation.compare", str(generation_id), collection=collection_id)
    return render(request, "_admin_generations.html", {**context, "comparing": True})


# -- people ----------------------------------------------------------------------------------


def people_context(session: Session) -> dict:
    groups = session.scalars(select(Group).order_by(Group.name)).all()
    group_members = session.execute(
        select(GroupMember.group_id, User.email).join(User, User.id == GroupMember.user_id)
    ).all()
    by_group: dict[int, list[str]] = {}
    for group_id, email in group_members:
        by_group.setdefault(group_id, []).append(email)
    return {
        "users": session.scalars(select(User).order_by(User.email)).all(),
        "groups": groups,
        "group_members": by_group,
    }


@pages.post("/users", response_class=HTMLResponse)
def create_user(
    request: Request,
    session: SessionDep,
    who: AdminUser,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
    role: Annotated[str, Form()] = "member",
):
    user = accounts.create_user(session, email, password, role)
    note(session, request, who, "user.create", user.email, role=role)
    return render(request, "_admin_people.html", people_context(session))


@pages.post("/users/{user_id}/disable", response_class=HTMLResponse)
def disable_user(request: Request, user_id: int, session: SessionDep, who: AdminUser):
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    if user.id == who.user.id:
        raise Invalid("you cannot disable yourself")
    user.disabled = not user.disabled
    note(session, request, who, "user.disable" if user.disabled else "user.enable", user.email)
    return render(request, "_admin_people.html", people_context(session))


@pages.post("/groups", response_class=HTMLResponse)
def create_group(
    request: Request, session: SessionDep, who: AdminUser, name: Annotated[str, Form()]
):
    group = accounts.group_named(session, name, create=True)
    note(session, request, who, "group.create", group.name)
    return render(request, "_admin_people.html", people_context(session))


@pages.post("/groups/{group_id}/members", response_class=HTMLResponse)
def add_group_member(
    request: Request,
    group_id: int,
    session: SessionDep,
    who: AdminUser,
    email: Annotated[str, Form()],
):
    group = session.get(Group, group_id)
    if group is None:
        raise NotFound(f"no group {group_id}")
    accounts.add_to_group(session, group, accounts.user_by_email(session, email))
    note(session, request, who, "group.member_add", group.name, email=email)
    return render(request, "_admin_people.html", people_context(session))


api = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin), CsrfDep])


@api.delete("/collections/{collection_id}", status_code=204, response_class=Response)
def delete_collection_api(
    request: Request, collection_id: int, session: SessionDep, who: AdminUser
) -> Response:
    """Delete a collection with its documents, their files and chunks, and its grants."""
    name, documents = admin.delete_collection(session, collection_id)
    note(session, request, who, "collection.delete", name, documents=documents)
    return Response(status_code=204)


@api.get("/jobs")
def jobs_api(session: SessionDep, settings: SettingsDep) -> dict:
    """Queue depth, workers answering, and documents queued, running or failed (admins)."""
    context = jobs_context(session, settings)

    def rows(items: list) -> list[dict]:
        return [
            {
                "id": d.id,
                "filename": d.filename,
                "collection": d.collection.name,
                "status": d.status,
                "attempts": n,
                "error": d.error,
            }
            for d, n in items
        ]

    return {
        "queue_depth": context["queue_depth"],
        "workers": context["workers"],
        "running": rows(context["running"]),
        "queued": rows(context["queued"]),
        "failed": rows(context["failed"]),
    }
