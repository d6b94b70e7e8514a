"""Export jobs (subject and case exports): status, files, pages, and release by link."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from ..context import (
    ConsoleError,
    Ctx,
    CurrentUser,
    check_csrf,
    ranged,
)

router = APIRouter()


@router.get("/api/jobs")
def api_jobs(user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    return {"jobs": [j.as_json() for j in ctx.svc.jobs.list(user.username)]}


@router.get("/api/jobs/{job_id}")
def api_job(job_id: str, user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    return ctx.own_job(user, job_id).as_json()


@router.get("/api/jobs/{job_id}/files/{role}")
def api_job_file(request: Request, job_id: str, role: str, user: CurrentUser, ctx: Ctx) -> Response:
    job = ctx.own_job(user, job_id)
    p = job.file(role)
    if p is None:
        raise ConsoleError(404, f"job {job_id} has no {role[:20]!r} file (state {job.state})")
    ctx.record_read(user.username, user.roles, "preview", ("job", job.job_id, role), camera_id=job.camera_id,
                    case=job.case, detail={"job": job.job_id, "file": role})
    ctype = "video/mp4" if p.suffix == ".mp4" else "application/json"
    return ranged(p.read_bytes(), request, ctype)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, user: CurrentUser, ctx: Ctx) -> Response:
    return ctx.page(request, "job.html", job=ctx.own_job(user, job_id).as_json())


@router.post("/api/jobs/{job_id}/release", dependencies=[Depends(check_csrf)])
def release(request: Request, job_id: str, user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    svc = ctx.svc
    job = ctx.own_job(user, job_id)
    if job.state not in ("done", "released"):
        raise ConsoleError(409, f"job {job_id} is {job.state}: only a finished export can be released")
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=svc.share_ttl_s)
    link = ctx.links.issue("export", job.job_id, camera_id=job.camera_id, case=job.case, by=user.username,
                           ttl_s=svc.share_ttl_s)  # nobody holds its token unless the event below is stored
    token = ctx.signer.dumps({"job": job.job_id, "n": link.link_id})
    ctx.audit(user, "share", camera_id=job.camera_id, case=job.case,
              detail={"job": job.job_id, "kind": job.kind, "expires_at": exp.isoformat(timespec="seconds"),
                      "what": "released export", "link": link.link_id})
    job.state = "released"
    rel = {"url": f"{ctx.base_url(request)}/shared/{token}", "expires_at": exp.isoformat(timespec="seconds"),
           "by": user.username, "link_id": link.link_id, "revoke": f"/api/links/{link.link_id}/revoke"}
    job.released.append(rel)
    return rel
