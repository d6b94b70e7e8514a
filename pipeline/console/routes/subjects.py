"""Subject requests: the data subject's own footage, everyone else masked (a background job)."""

from __future__ import annotations

import functools
import math
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from ..catalog import iso
from ..context import (
    ConsoleError,
    Ctx,
    CurrentUser,
    check_case,
    check_csrf,
    interval,
    json_body,
    parse_time,
    run_export,
    script_json,
)

router = APIRouter()


def subject_box(box: Any) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(box[k]) for k in ("x", "y", "w", "h"))
    except (KeyError, TypeError, ValueError):
        raise ConsoleError(400, "subject: expected a box {x, y, w, h, at} in video pixels") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ConsoleError(400, "subject: x, y, w and h must be finite numbers of video pixels "
                                "(not NaN or infinity)")
    return x, y, w, h


@router.post("/api/subject-requests", status_code=202, dependencies=[Depends(check_csrf)])
async def subject_request(request: Request, user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    body = await json_body(request)
    cam = ctx.camera_or_404(str(body.get("camera_id") or ""))
    role = ctx.role_or_403(user, "subject_export", cam, "export subject footage")
    case = check_case(body.get("case"))
    t0, t1 = interval(cam, body)
    segs = ctx.stored_in(cam, t0, t1)
    box = body.get("subject") or {}
    x, y, w, h = subject_box(box)
    at = parse_time(box.get("at"), "subject.at")
    if not t0 <= at <= t1:
        raise ConsoleError(400, f"subject.at ({iso(at)}) must lie inside the interval")
    seg_at = next((s for s in segs if s.first_frame_ms <= at <= s.last_frame_ms + 1000), segs[0])
    fw, fh = ctx.frame_size(ctx.svc.stores(role), seg_at)
    if w < 2 or h < 2 or x < 0 or y < 0 or x + w > fw or y + h > fh:
        raise ConsoleError(400, f"subject box {x:.0f},{y:.0f},{w:.0f},{h:.0f} lies outside the "
                                f"{fw}x{fh} frame (or is empty)")
    box_xywh = (round(x), round(y), round(w), round(h))
    params = {"from_ms": t0, "to_ms": t1, "box_xywh": list(box_xywh), "at_ms": at, "frame_wh": [fw, fh],
              "segments": [s.key for s in segs]}
    # the export records its own audit event (as this user) before it writes the result
    export = ctx.svc.gov("subject_export", "subject export")
    kw = {"camera_id": cam, "from_ms": t0, "to_ms": t1, "box_xywh": box_xywh, "at_ms": at, "case": case}
    job = ctx.svc.jobs.submit("subject_export", functools.partial(run_export, export, "subject-export.mp4",
                                                                  user.username, kw),
                              owner=user.username, roles=user.roles, camera_id=cam, case=case, params=params)
    return {"job_id": job.job_id, "url": f"/jobs/{job.job_id}", "state": job.state}


@router.get("/cameras/{camera_id}/subject", response_class=HTMLResponse)
def subject_page(request: Request, camera_id: str, user: CurrentUser, ctx: Ctx, date: str = "",
                 key: str = "") -> Response:
    ctx.camera_or_404(camera_id)
    ctx.role_or_403(user, "subject_export", camera_id, "export subject footage")
    date, dates = ctx.day_or_latest(camera_id, date)
    tl = ctx.timeline(camera_id, date)
    return ctx.page(request, "subject.html", camera_id=camera_id, tl=tl, tl_json=script_json(tl), date=date,
                    dates=dates, key=key)
