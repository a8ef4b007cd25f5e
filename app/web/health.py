"""GET /healthz: each part's state. 200 when the database and broker answer, else 503."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.services.health import health, is_healthy

router = APIRouter()


@router.get("/healthz", tags=["health"])
async def healthz(request: Request) -> JSONResponse:
    report = await run_in_threadpool(health, request.app.state.settings)
    return JSONResponse(report, status_code=200 if is_healthy(report) else 503)
