"""The audit trail: who read, exported, shared, held or verified what (auditors' roles)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ..audit import AuditQuery
from ..auth import User
from ..context import ConsoleContext, Ctx, CurrentUser, check_date

router = APIRouter()


def search(ctx: ConsoleContext, user: User, camera: str, user_q: str, case: str, action: str,
           date: str) -> list[dict[str, Any]]:
    ctx.role_or_403(user, "audit", "", "read the audit trail")
    if date:
        check_date(date)
    return ctx.svc.audit.search(AuditQuery(camera, user_q, case, action, date))


@router.get("/api/audit")
def api_audit(user: CurrentUser, ctx: Ctx, camera: str = "", user_q: str = "", case: str = "",
              action: str = "", date: str = "") -> dict[str, Any]:
    return {"events": search(ctx, user, camera, user_q, case, action, date)}


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, user: CurrentUser, ctx: Ctx, camera: str = "", user_q: str = "",
               case: str = "", action: str = "", date: str = "") -> Response:
    evs = search(ctx, user, camera, user_q, case, action, date)
    return ctx.page(request, "audit.html", events=evs, f={"camera": camera, "user_q": user_q, "case": case,
                                                          "action": action, "date": date},
                    cameras=ctx.svc.catalog.camera_ids())
