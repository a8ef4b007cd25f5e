"""Signing in and out, and a person's own API keys."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from app.accounts import service as accounts
from app.collections.access import readable_collections
from app.errors import AppError
from app.web.deps import (
    SESSION_COOKIE,
    CsrfDep,
    CurrentUser,
    SessionDep,
    SettingsDep,
    client_address,
)
from app.web.render import render

pages = APIRouter(dependencies=[CsrfDep], include_in_schema=False)
api = APIRouter(prefix="/api", tags=["account"])


def safe_next(target: str | None) -> str:
    """Only paths on this site (no `//evil.example`)."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@pages.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request, session: SessionDep, next: str = "/"):
    return render(
        request,
        "signin.html",
        {"next": safe_next(next), "needs_admin": not accounts.has_admin(session)},
    )


@pages.post("/signin", response_class=HTMLResponse)
def signin(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1000)],
    next: Annotated[str, Form()] = "/",
):
    try:
        user = accounts.authenticate(
            session, accounts.limiter_for(settings), email, password, client_address(request)
        )
    except AppError as err:
        accounts.audit(
            session,
            None,
            "signin.failed",
            email[:320],
            {"reason": err.code},
            client_address(request),
        )
        return render(
            request,
            "signin.html",
            {
                "next": safe_next(next),
                "error": err.message,
                "email": email,
                "needs_admin": not accounts.has_admin(session),
            },
            status_code=err.status,
        )
    token, _ = accounts.start_session(session, user)
    accounts.audit(
        session, accounts.Account.of(user), "signin", user.email, address=client_address(request)
    )
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        max_age=accounts.SESSION_DAYS * 86400,
    )
    return response


@pages.post("/signout")
def signout(request: Request, session: SessionDep, who: CurrentUser) -> Response:
    accounts.end_session(session, request.cookies.get(SESSION_COOKIE))
    accounts.audit(session, who.user, "signout", who.user.email, address=client_address(request))
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@pages.get("/account", response_class=HTMLResponse)
def account_page(request: Request, session: SessionDep, who: CurrentUser):
    keys = accounts.api_keys_of(session, who.user)
    return render(
        request, "account.html", {"active": "account", "keys": keys}, fragment="_api_keys.html"
    )


@pages.post("/account/keys", response_class=HTMLResponse)
def create_key(
    request: Request, session: SessionDep, who: CurrentUser, name: Annotated[str, Form()] = ""
):
    key, row = accounts.create_api_key(session, who.user, name)
    accounts.audit(session, who.user, "api_key.create", row.prefix, address=client_address(request))
    keys = accounts.api_keys_of(session, who.user)
    return render(request, "_api_keys.html", {"keys": keys, "new_key": key})


@pages.post("/account/keys/{key_id}/revoke", response_class=HTMLResponse)
def revoke_key(request: Request, key_id: int, session: SessionDep, who: CurrentUser):
    accounts.revoke_api_key(session, who.user, key_id)
    accounts.audit(
        session, who.user, "api_key.revoke", str(key_id), address=client_address(request)
    )
    keys = accounts.api_keys_of(session, who.user)
    return render(request, "_api_keys.html", {"keys": keys})


class MeOut(BaseModel):
    id: int
    email: str
    role: str
    collections: list[int] | None  # None: all (admin)


@api.get("/me", response_model=MeOut)
def me(session: SessionDep, who: CurrentUser) -> MeOut:
    """Who the API key (or session) belongs to, and which collections it may read."""
    return MeOut(
        id=who.user.id,
        email=who.user.email,
        role=who.user.role,
        collections=readable_collections(session, who.user),
    )
