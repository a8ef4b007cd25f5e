"""FastAPI dependencies, as `Annotated` aliases, in one place."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import session_scope
from app.errors import Forbidden

CSRF_COOKIE = "gw_csrf"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; committed when the route returns without error. Routes that
    enqueue tasks commit first themselves, so that a worker always finds the rows."""
    with session_scope(request.app.state.settings) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def csrf_token(request: Request) -> str:
    """The browser's CSRF token (double-submit: an HttpOnly cookie and the same value in
    every state-changing htmx request's header). Made on first sight."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token:
        token = getattr(request.state, "new_csrf", None) or secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return token


async def verify_csrf(request: Request) -> None:
    if request.method not in UNSAFE_METHODS:
        return
    cookie = request.cookies.get(CSRF_COOKIE)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        sent = (await request.form()).get("csrf_token")  # type: ignore[assignment]
    if not cookie or not sent or not hmac.compare_digest(cookie, str(sent)):
        raise Forbidden("missing or wrong CSRF token: reload the page", code="csrf")


CsrfDep = Depends(verify_csrf)
