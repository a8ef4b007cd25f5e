"""Thin Celery tasks: each takes ids and makes one call into app code."""

from __future__ import annotations

import socket

from sqlalchemy import text

from app.db import session_scope
from worker.celery_app import celery_app


@celery_app.task(name="groundwork.probe")
def probe() -> dict[str, str]:
    """A round trip through the broker that also proves the worker reaches the database."""
    with session_scope() as session:
        session.execute(text("SELECT 1"))
    return {"worker": socket.gethostname(), "database": "ok"}
