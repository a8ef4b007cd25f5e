"""HTML pages (htmx). One route renders the full page or, for htmx, just the fragment."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.web.deps import CsrfDep
from app.web.render import render

router = APIRouter(dependencies=[CsrfDep], include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    return render(request, "home.html", {})
