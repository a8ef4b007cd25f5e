"""FastAPI dependencies, as `Annotated` aliases, in one place: settings, the database
session, who is signed in, and CSRF."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.accounts.service import SignedIn
from app.collections.access import readable_collections
from app.config import Settings
from app.db import session_scope
from app.errors import Forbidden, Unauthorized

SESSION_COOKIE = "gw_session"
CSRF_COOKIE = "gw_csrf"  # before signing in (the sign-in form itself)
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; committed when the route returns without error, before the
    response is sent (scope="function"): a browser that follows a redirect at once (signing
    in, then the page it asked for) must find what the request wrote. Jobs go out after the
    commit (`app.jobs`). A route that waits on an LLM inside its own units of work commits
    first (`/v1`), so that the rows it touched (an API key's last use) are not held locked."""
    with session_scope(request.app.state.settings) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def get_signed_in(request: Request, session: SessionDep) -> SignedIn | None:
    """Who is asking: an API key (Authorization: Bearer gw_…) or a session cookie."""
    if hasattr(request.state, "signed_in"):
        return request.state.signed_in
    key = bearer(request)
    who = (
        accounts.api_key_user(session, key)
        if key
        else accounts.session_user(session, request.cookies.get(SESSION_COOKIE))
    )
    if key and who is None:
        raise Unauthorized("that API key is not valid (revoked?)")
    request.state.signed_in = who
    return who


MaybeSignedIn = Annotated[SignedIn | None, Depends(get_signed_in)]


def require_user(who: MaybeSignedIn) -> SignedIn:
    if who is None:
        raise Unauthorized("sign in first")
    return who


CurrentUser = Annotated[SignedIn, Depends(require_user)]


def require_admin(who: CurrentUser) -> SignedIn:
    if not who.user.is_admin:
        raise Forbidden("admins only")
    return who


AdminUser = Annotated[SignedIn, Depends(require_admin)]


def readable(session: Session, who: SignedIn) -> list[int] | None:
    """The collection ids the signed-in user may read (None: all)."""
    return readable_collections(session, who.user)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def csrf_token(request: Request) -> str:
    """The token pages put in every state-changing request: the session's own once signed
    in; before that, a double-submit cookie's."""
    who = getattr(request.state, "signed_in", None)
    if who is not None and who.csrf_token:
        return who.csrf_token
    token = request.cookies.get(CSRF_COOKIE)
    if not token:
        token = getattr(request.state, "new_csrf", None) or secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return token


async def verify_csrf(request: Request, who: MaybeSignedIn) -> None:
    """State changes by a browser carry the CSRF token in the X-CSRF-Token header (htmx adds
    it to every request) or a `csrf_token` form field. API-key requests carry no cookie, so
    they need none."""
    if request.method not in UNSAFE_METHODS or (who is not None and who.api_key_id is not None):
        return
    if who is None and request.cookies.get(SESSION_COOKIE):
        # The session ended (expired, signed out elsewhere): sign in again, then retry.
        raise Unauthorized("your session has ended: sign in again")
    if not same_origin(request):  # a second layer: the token could have leaked
        raise Forbidden("refused: the request comes from another site", code="origin")
    expected = who.csrf_token if who is not None else request.cookies.get(CSRF_COOKIE)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        sent = (await request.form()).get("csrf_token")  # type: ignore[assignment]
    if not expected or not sent or not hmac.compare_digest(expected, str(sent)):
        raise Forbidden("missing or wrong CSRF token: reload the page", code="csrf")


CsrfDep = Depends(verify_csrf)


def same_origin(request: Request) -> bool:
    """Whether a browser's state change comes from this site: its Origin (or, without one,
    its Referer) names this host. Requests that send neither (old clients, privacy
    settings) are judged by the CSRF token alone."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return True
    if source == "null":  # a sandboxed frame or a redirect chain hides where it came from
        return False
    return urlsplit(source).netloc.lower() == request.url.netloc.lower()
