"""create_app(): routers (with /v1 and /mcp), error handlers, templates and static files."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app import admin, jobs
from app.accounts import routes as accounts
from app.collections import routes as collections
from app.config import Settings, get_settings
from app.conversations import routes as conversations
from app.documents import api as documents_api
from app.documents import routes as documents
from app.infra.sweeps import Sweeper
from app.monitoring import exposition
from app.monitoring import metrics as monitoring
from app.monitoring.exposition import RequestMetrics
from app.retrieval import routes as search
from app.web import errors, health, mcp, openai
from app.web.middleware import RefuseNul, SecurityHeaders
from app.web.render import TEMPLATES

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


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
    monitoring.setup(settings)  # this process's metrics, where /metrics reads every process's

    mcp_endpoint = mcp.McpEndpoint(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.configure(settings)
        threading.Thread(target=warm_up, args=(settings,), name="warm-up", daemon=True).start()
        sweeper = Sweeper(settings).start()
        try:
            async with mcp_endpoint.running():
                yield
        finally:
            sweeper.stop()

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
    def docs(request: Request) -> Response:
        """Swagger UI from /static, started by a script file (no CDN, no inline script)."""
        return TEMPLATES.TemplateResponse(request, "docs.html", {})

    errors.install(app)
    app.add_middleware(RefuseNul)
    app.add_middleware(SecurityHeaders)  # refusals get the headers too
    app.add_middleware(RequestMetrics)  # outermost: every request is timed, refusals too
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in (
        health.router,
        exposition.router,
        accounts.pages,
        accounts.api,
        *admin.ROUTERS,
        conversations.pages,
        conversations.api,
        documents.router,
        documents_api.router,
        collections.pages,
        collections.api,
        search.api,
        search.pages,
        openai.router,
    ):
        app.include_router(router)
    # An ASGI app as the endpoint (not a function): the MCP transport answers itself.
    app.router.routes.append(
        NamedRoute("/mcp", mcp_endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    )
    return app


class NamedRoute(Route):
    """A Starlette route that puts itself in the scope, as FastAPI's routes do: the request
    metrics label a request by its route's path."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self
        await super().handle(scope, receive, send)
