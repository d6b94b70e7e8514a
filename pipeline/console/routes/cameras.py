"""The camera list (what the user's roles may see), a camera's page and a day's timeline."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ..auth import User
from ..context import (
    ConsoleContext,
    Ctx,
    CurrentUser,
    check_date,
    script_json,
)

router = APIRouter()


def camera_rows(ctx: ConsoleContext, user: User, q: str, policy: str, status: str) -> list[dict[str, Any]]:
    svc = ctx.svc
    rows = []
    for st in svc.catalog.status(ctx.visible_cameras(user)):
        j = st.as_json()
        j["can"] = svc.access.capabilities(user.roles, st.camera_id)
        text = " ".join([st.camera_id, st.policy_id, *st.notice.values()]).lower()
        if q and q.lower() not in text:
            continue
        if policy and st.policy_id != policy:
            continue
        if status == "streaming" and not st.streaming or status == "stopped" and st.streaming:
            continue
        rows.append(j)
    return rows


@router.get("/api/cameras")
def api_cameras(user: CurrentUser, ctx: Ctx, q: str = "", policy: str = "",
                status: str = "") -> dict[str, Any]:
    _reg, err = ctx.svc.catalog.registry()
    return {"cameras": camera_rows(ctx, user, q, policy, status), "registry_error": err}


@router.get("/cameras", response_class=HTMLResponse)
def cameras_page(request: Request, user: CurrentUser, ctx: Ctx, q: str = "", policy: str = "",
                 status: str = "") -> Response:
    _reg, err = ctx.svc.catalog.registry()
    rows = camera_rows(ctx, user, q, policy, status)
    return ctx.page(request, "cameras.html", rows=rows, q=q, policy=policy, status=status, registry_error=err,
                    policies=sorted(ctx.svc.access.policies))


@router.get("/api/cameras/{camera_id}/days/{date}")
def api_timeline(camera_id: str, date: str, user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    ctx.camera_or_404(camera_id)
    ctx.role_or_403(user, "view", camera_id, "view footage")
    return ctx.timeline(camera_id, check_date(date))


@router.get("/cameras/{camera_id}", response_class=HTMLResponse)
def camera_page(request: Request, camera_id: str, user: CurrentUser, ctx: Ctx, date: str = "") -> Response:
    svc = ctx.svc
    ctx.camera_or_404(camera_id)
    ctx.role_or_403(user, "view", camera_id, "view footage")
    date, dates = ctx.day_or_latest(camera_id, date)
    tl = ctx.timeline(camera_id, date)
    st = svc.catalog.status([camera_id])[0]
    return ctx.page(request, "camera.html", camera=st.as_json(), tl=tl, tl_json=script_json(tl), dates=dates,
                    date=date, can=svc.access.capabilities(user.roles, camera_id), share_ttl=svc.share_ttl_s)
