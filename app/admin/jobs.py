"""Jobs: what the workers are doing, what waits and what failed (live, every 3 s), retrying a
document, and the same as JSON."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from app.admin.common import admin_api, admin_pages, note
from app.config import Settings
from app.documents import service
from app.infra.supervisor import current as current_supervisor
from app.jobs import queue_depth, unsent_due, workers_answering
from app.web.deps import AdminUser, SessionDep, SettingsDep
from app.web.render import render

pages = admin_pages()
api = admin_api()


def jobs_context(session: Session, settings: Settings) -> dict:
    rows = service.in_progress(session)
    supervisor = current_supervisor()
    return {
        "queue_depth": queue_depth(settings),
        "unsent": unsent_due(session),
        "workers": workers_answering(timeout=1.0),
        "restarts": {
            name: part["restarts"]
            for name, part in (supervisor.report() if supervisor else {}).items()
            if part["restarts"]
        },
        "running": [(d, n) for d, n in rows if d.status not in ("queued", "failed")],
        "queued": [(d, n) for d, n in rows if d.status == "queued"],
        "failed": [(d, n) for d, n in rows if d.status == "failed"],
    }


@pages.get("/jobs", response_class=HTMLResponse)
def jobs(request: Request, session: SessionDep, settings: SettingsDep):
    return render(request, "_admin_jobs.html", jobs_context(session, settings))


@pages.post("/documents/{document_id}/retry", response_class=HTMLResponse)
def retry(
    request: Request, document_id: int, session: SessionDep, settings: SettingsDep, who: AdminUser
):
    doc = service.retry_document(session, document_id)
    note(session, request, who, "document.retry", f"{doc.id} {doc.filename}")
    return render(request, "_admin_jobs.html", jobs_context(session, settings))


@api.get("/jobs")
def jobs_api(session: SessionDep, settings: SettingsDep) -> dict:
    """Queue depth, jobs waiting for the broker, workers answering, restarts of the parts
    `groundwork serve` supervises, and documents queued, running or failed (admins)."""
    context = jobs_context(session, settings)

    def rows(items: list) -> list[dict]:
        return [
            {
                "id": d.id,
                "filename": d.filename,
                "collection": d.collection.name,
                "status": d.status,
                "attempts": n,
                "error": d.error,
            }
            for d, n in items
        ]

    return {
        "queue_depth": context["queue_depth"],
        "unsent": context["unsent"],
        "workers": context["workers"],
        "restarts": context["restarts"],
        "running": rows(context["running"]),
        "queued": rows(context["queued"]),
        "failed": rows(context["failed"]),
    }
