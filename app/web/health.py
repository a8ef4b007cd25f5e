"""GET /healthz: each part's state. 200 when the database and broker answer and a worker has
answered within WORKER_GRACE_S, else 503."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.infra.health import health, is_healthy

router = APIRouter()


@router.get("/healthz", tags=["health"])
async def healthz(request: Request) -> JSONResponse:
    settings = request.app.state.settings
    report = await run_in_threadpool(health, settings)
    healthy = is_healthy(report, settings.worker_grace_s)
    return JSONResponse(report, status_code=200 if healthy else 503)
