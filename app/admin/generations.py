"""Index generations: start one (a model or chunking change), follow its build, compare it
with the live one, switch, roll back or cancel, without downtime."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.admin.common import admin_pages, note
from app.config import Settings
from app.errors import Conflict
from app.generations import service
from app.web.deps import AdminUser, SessionDep, SettingsDep
from app.web.errors import error_response
from app.web.render import render

pages = admin_pages()


def generations_context(session: Session, settings: Settings) -> dict:
    return {
        **service.overview(session),
        "default_model": settings.embedding_model,
        "default_chunk_tokens": settings.chunk_tokens,
        "default_overlap": settings.chunk_overlap_tokens,
    }


def _panel(request: Request, session: Session, settings: Settings, **extra) -> HTMLResponse:
    context = {**generations_context(session, settings), **extra}
    return render(request, "_admin_generations.html", context)


@pages.get("/generations", response_class=HTMLResponse)
def generations(request: Request, session: SessionDep, settings: SettingsDep):
    return _panel(request, session, settings)


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
    generation = service.start_generation(
        session,
        settings,
        model=model.strip(),
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
        auto_switch=auto_switch,
        actor=who.user,
    )
    detail = {"chunk_tokens": chunk_tokens, "overlap_tokens": overlap_tokens}
    note(
        session, request, who, "generation.start", str(generation.id), model=model,
        auto_switch=auto_switch, **detail,
    )  # fmt: skip
    return _panel(request, session, settings)


@pages.post("/generations/{generation_id}/cancel", response_class=HTMLResponse)
def cancel_generation(
    request: Request, generation_id: int, session: SessionDep, settings: SettingsDep, who: AdminUser
):
    service.cancel_generation(session, generation_id)
    note(session, request, who, "generation.cancel", str(generation_id))
    return _panel(request, session, settings)


@pages.post("/generations/{generation_id}/switch", response_class=HTMLResponse)
def switch_generation(
    request: Request, generation_id: int, session: SessionDep, settings: SettingsDep, who: AdminUser
) -> Response:
    try:
        old = service.switch_or_resume(session, generation_id)
    except service.Resumed as resumed:
        # Refused, but the resumed build is kept (an error raised would roll it back).
        note(
            session, request, who, "generation.resume", str(generation_id), missing=resumed.missing
        )
        return error_response(request, Conflict(str(resumed)))
    note(session, request, who, "generation.switch", str(generation_id), retired=old and old.id)
    return _panel(request, session, settings)


@pages.post("/generations/roll-back", response_class=HTMLResponse)
def roll_back(request: Request, session: SessionDep, settings: SettingsDep, who: AdminUser):
    generation = service.roll_back(session)
    note(session, request, who, "generation.roll_back", str(generation.id))
    return _panel(request, session, settings)


@pages.post("/generations/{generation_id}/compare", response_class=HTMLResponse)
def compare(
    request: Request,
    generation_id: int,
    session: SessionDep,
    settings: SettingsDep,
    who: AdminUser,
    collection_id: Annotated[int, Form()],
):
    service.request_comparison(session, generation_id, collection_id)
    note(session, request, who, "generation.compare", str(generation_id), collection=collection_id)
    return _panel(request, session, settings, comparing=True)
