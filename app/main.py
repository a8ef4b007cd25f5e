"""create_app(): routers, error handlers, templates and static files."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from psycopg.errors import NumericValueOutOfRange
from sqlalchemy.exc import DataError

from app.config import Settings, get_settings
from app.errors import AppError, Invalid
from app.web import admin, api, auth, chat, documents, health, search
from app.web.auth import signin_redirect
from app.web.render import is_htmx, render

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


def wants_html(request: Request) -> bool:
    if request.url.path.startswith("/api/"):
        return False
    return is_htmx(request) or "text/html" in request.headers.get("accept", "")


def error_response(request: Request, err: AppError) -> Response:
    if not wants_html(request):
        return JSONResponse({"error": err.to_dict()}, status_code=err.status)
    if err.status == 401:  # not signed in, or the session expired: to the sign-in page
        target = signin_redirect(request)
        if is_htmx(request):
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)
    return render(
        request, "error.html", {"error": err}, fragment="_error.html", status_code=err.status
    )


def warm_up(settings: Settings) -> None:
    """Load the models and the BM25 index in the background, so the first search is fast."""
    from app.db import session_scope
    from app.ingest.embed import get_embedder
    from app.retrieval.lexical_store import lexical_index
    from app.retrieval.rerank import get_reranker

    try:
        get_embedder(settings.embedding_model)
        get_reranker(settings.reranker_model)
        with (
            session_scope(settings) as session,
            lexical_index(settings.database_url).synced(session),
        ):
            pass
    except Exception:  # a warm-up failure shows again on the first real use
        log.exception("warm-up failed")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from worker.celery_app import configure

        configure(settings)
        threading.Thread(target=warm_up, args=(settings,), name="warm-up", daemon=True).start()
        yield

    app = FastAPI(
        title="Groundwork",
        summary="Question answering over your own documents, with citations.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below from /static: the stock page loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.settings = settings

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Groundwork API",
            swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/swagger-ui/favicon.png",
        )

    @app.exception_handler(AppError)
    async def app_error(request: Request, err: AppError) -> Response:
        return error_response(request, err)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> Response:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = str(first["msg"])
        return error_response(request, Invalid(f"{where}: {message}" if where else message))

    @app.exception_handler(DataError)
    async def out_of_range(request: Request, err: DataError) -> Response:
        """A number past its column's range (an id or offset typed by hand) is bad input, in
        every route alike; any other DataError is a bug and stays a 500."""
        if not isinstance(err.orig, NumericValueOutOfRange):
            raise err
        return error_response(request, Invalid("a number in the request is out of range"))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(health.router)
    app.include_router(auth.pages)
    app.include_router(auth.api)
    app.include_router(admin.pages)
    app.include_router(admin.api)
    app.include_router(chat.pages)
    app.include_router(chat.api)
    app.include_router(documents.router)
    app.include_router(api.router)
    app.include_router(search.api)
    app.include_router(search.pages)
    return app
