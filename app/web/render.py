"""Template rendering: the full page, or just the fragment when htmx asks (HX-Request)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.documents.service import may_change
from app.web.deps import CSRF_COOKIE, csrf_token

TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parents[1] / "templates")


def filesize(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def percent(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.0f}%"


TEMPLATES.env.filters["filesize"] = filesize
TEMPLATES.env.filters["percent"] = percent
TEMPLATES.env.globals["may_change"] = may_change


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def signin_redirect(request: Request) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/signin?next={quote(here, safe='')}"


def render(
    request: Request,
    page: str,
    context: dict[str, Any],
    *,
    fragment: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """Render `page` (extends base.html), or `fragment` alone for an htmx request."""
    name = fragment if fragment and is_htmx(request) else page
    who = getattr(request.state, "signed_in", None)
    response = TEMPLATES.TemplateResponse(
        request,
        name,
        {**context, "csrf_token": csrf_token(request), "user": who.user if who else None},
        status_code=status_code,
    )
    set_csrf_cookie(request, response)
    return response


def set_csrf_cookie(request: Request, response: HTMLResponse) -> None:
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(
            CSRF_COOKIE,
            new,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            max_age=60 * 60 * 24 * 30,
        )
