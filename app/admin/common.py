"""What every admin area shares: its routers (admins only, CSRF checked) and the audit note."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from app.accounts.service import audit
from app.web.deps import AdminUser, CsrfDep, client_address, require_admin


def admin_pages() -> APIRouter:
    return APIRouter(
        prefix="/admin", dependencies=[Depends(require_admin), CsrfDep], include_in_schema=False
    )


def admin_api() -> APIRouter:
    return APIRouter(
        prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin), CsrfDep]
    )


def note(
    session: Session, request: Request, who: AdminUser, action: str, target: str, **detail: Any
) -> None:
    """An entry in the audit log for what an admin just did."""
    audit(session, who.user, action, target, detail, client_address(request))
