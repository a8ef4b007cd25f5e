"""GET /healthz: each part's state. 200 when the database and broker answer and a worker has
answered within WORKER_GRACE_S, else 503. Anyone (a load balancer, compose's health check)
sees the statuses; admins also see each part's detail (versions, hosts, addresses, restarts),
which tells an attacker too much."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.accounts import service as accounts
from app.config import Settings
from app.db import session_scope
from app.infra.health import health, is_healthy
from app.web.deps import SESSION_COOKIE, bearer

router = APIRouter()


@router.get("/healthz", tags=["health"])
async def healthz(request: Request) -> JSONResponse:
    settings = request.app.state.settings
    report = await run_in_threadpool(health, settings)
    healthy = is_healthy(report, settings.worker_grace_s)
    body = {n: {"status": p["status"], "detail": p["detail"]} for n, p in report.items()}
    if not await run_in_threadpool(is_admin, request, settings):
        body = {name: {"status": part["status"]} for name, part in body.items()}
    return JSONResponse(body, status_code=200 if healthy else 503)


def is_admin(request: Request, settings: Settings) -> bool:
    """Whether an admin asks (API key or session); never an error, the database may be down."""
    try:
        with session_scope(settings) as session:
            key = bearer(request)
            who = (
                accounts.api_key_user(session, key)
                if key
                else accounts.session_user(session, request.cookies.get(SESSION_COOKIE))
            )
            return who is not None and who.user.is_admin
    except Exception:  # noqa: BLE001 - health must answer whatever else is down
        return False
