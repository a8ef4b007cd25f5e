"""The admin page: every area's panel, recent reindex jobs and the audit log."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from app.accounts import service as accounts
from app.admin.collections import collections_context
from app.admin.common import admin_pages
from app.admin.generations import generations_context
from app.admin.jobs import jobs_context
from app.documents.reindex import reindex_progress
from app.models import AuditEvent, ReindexJob
from app.web.deps import SessionDep, SettingsDep
from app.web.render import render

pages = admin_pages()


@pages.get("", response_class=HTMLResponse)
def admin_page(request: Request, session: SessionDep, settings: SettingsDep):
    recent = session.scalars(select(ReindexJob).order_by(ReindexJob.id.desc()).limit(5))
    context = {
        "active": "admin",
        **jobs_context(session, settings),
        **collections_context(session),
        **generations_context(session, settings),
        **accounts.people(session),
        "reindex_jobs": [(job, reindex_progress(session, job)) for job in recent],
        "audit": session.scalars(
            select(AuditEvent).order_by(AuditEvent.id.desc()).limit(100)
        ).all(),
    }
    return render(request, "admin.html", context)
