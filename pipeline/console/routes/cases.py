"""Case exports (unmasked, for an investigation), legal holds, chain verification, the cases page."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from schemas.errors import VeilStreamError

from ..context import (
    ConsoleError,
    Ctx,
    CurrentUser,
    check_case,
    check_csrf,
    check_date,
    interval,
    json_body,
    run_export,
)

router = APIRouter()


@router.post("/api/case-exports", status_code=202, dependencies=[Depends(check_csrf)])
async def case_export(request: Request, user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    body = await json_body(request)
    cam = ctx.camera_or_404(str(body.get("camera_id") or ""))
    ctx.role_or_403(user, "case_export", cam, "export raw footage (case export)")
    case = check_case(body.get("case"))
    basis, official = str(body.get("legal_basis") or "").strip(), str(body.get("official") or "").strip()
    if not basis or not official:
        raise ConsoleError(400, "a case export needs the legal basis and the requesting official")
    t0, t1 = interval(cam, body)
    export = ctx.svc.gov("case_export", "case export")
    params = {"from_ms": t0, "to_ms": t1, "legal_basis": basis[:500], "official": official[:200]}
    kw = {"camera_id": cam, "from_ms": t0, "to_ms": t1, "case": case, "legal_basis": basis, "official": official}
    job = ctx.svc.jobs.submit("case_export", functools.partial(run_export, export, "case-export.mp4",
                                                               user.username, kw),
                              owner=user.username, roles=user.roles, camera_id=cam, case=case, params=params)
    return {"job_id": job.job_id, "url": f"/jobs/{job.job_id}", "state": job.state}


@router.post("/api/holds", dependencies=[Depends(check_csrf)])
async def holds(request: Request, user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    body = await json_body(request)
    cam = ctx.camera_or_404(str(body.get("camera_id") or ""))
    role = ctx.role_or_403(user, "hold", cam, "place or lift legal holds")
    if body.get("role"):  # a user with two hold roles says which one acts (only it lifts the hold)
        role = str(body["role"])
        if role not in user.roles or not ctx.svc.access.can([role], "hold", cam):
            raise ConsoleError(403, f"role {role[:40]!r}: not one of your roles that may hold camera {cam}")
    case = check_case(body.get("case"))
    t0, t1 = interval(cam, body)
    action = str(body.get("action") or "add")
    if action not in ("add", "remove"):
        raise ConsoleError(400, f"action: expected add or remove, got {action[:20]!r}")
    fn = ctx.svc.gov("legal_hold", "legal hold")
    try:
        result = fn(action=action, camera_id=cam, from_ms=t0, to_ms=t1, case=case, actor=user.username,
                    role=role)
    except VeilStreamError as exc:  # refused (another role's or case's hold) or nothing to lift: say why
        raise ConsoleError(int(getattr(exc, "status", 409)), str(exc)) from None
    res = dict(result) if isinstance(result, Mapping) else {"objects": result}
    res["keys"] = list(res.get("keys", ()))[:50]  # the audit event (recorded by the hold) has them all
    return {"action": action, "camera_id": cam, "case": case, **res}


@router.post("/api/verify", dependencies=[Depends(check_csrf)])
async def verify(request: Request, user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    body = await json_body(request)
    cam = ctx.camera_or_404(str(body.get("camera_id") or ""))
    ctx.role_or_403(user, "verify", cam, "verify the audit chain")
    date = check_date(str(body.get("date") or ""))
    fn = ctx.svc.gov("verify_day", "verify")
    res = dict(fn(camera_id=cam, date=date, actor=user.username))
    return {**res, "camera_id": cam, "date": date}


@router.get("/cases", response_class=HTMLResponse)
def cases_page(request: Request, user: CurrentUser, ctx: Ctx) -> Response:
    svc = ctx.svc
    cams = [c for c in svc.catalog.camera_ids() if svc.access.can(user.roles, "case_export", c)]
    if not cams and not any(svc.access.can(user.roles, "subject_export", c) for c in svc.catalog.camera_ids()):
        raise ConsoleError(403, f"your role ({', '.join(user.roles)}) has no cases")
    return ctx.page(request, "cases.html", jobs=[j.as_json() for j in svc.jobs.list(user.username)], cameras=cams)
