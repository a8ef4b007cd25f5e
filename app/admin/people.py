"""People: accounts (create, disable or enable) and groups (create, add members)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.admin.common import admin_pages, note
from app.web.deps import AdminUser, SessionDep
from app.web.render import render

pages = admin_pages()


def _people(request: Request, session: Session) -> HTMLResponse:
    return render(request, "_admin_people.html", accounts.people(session))


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
    return _people(request, session)


@pages.post("/users/{user_id}/disable", response_class=HTMLResponse)
def disable_user(request: Request, user_id: int, session: SessionDep, who: AdminUser):
    user = accounts.toggle_disabled(session, user_id, who.user)
    note(session, request, who, "user.disable" if user.disabled else "user.enable", user.email)
    return _people(request, session)


@pages.post("/groups", response_class=HTMLResponse)
def create_group(
    request: Request, session: SessionDep, who: AdminUser, name: Annotated[str, Form()]
):
    group = accounts.create_group(session, name)
    note(session, request, who, "group.create", group.name)
    return _people(request, session)


@pages.post("/groups/{group_id}/members", response_class=HTMLResponse)
def add_group_member(
    request: Request,
    group_id: int,
    session: SessionDep,
    who: AdminUser,
    email: Annotated[str, Form()],
):
    group = accounts.group_by_id(session, group_id)
    accounts.add_to_group(session, group, accounts.user_by_email(session, email))
    note(session, request, who, "group.member_add", group.name, email=email)
    return _people(request, session)
