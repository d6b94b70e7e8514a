"""Links: shared redacted segments, opening a released export's or a shared segment's link
(the link is the credential: signed, short-lived, revocable, every opening recorded), revocation."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from itsdangerous import BadSignature, SignatureExpired

from ..catalog import iso
from ..context import (
    ConsoleError,
    Ctx,
    CurrentUser,
    check_case,
    check_csrf,
    get_or_error,
    json_body,
    ranged,
    segment_key_or_404,
)

logger = logging.getLogger(__name__)

router = APIRouter()


@router.get("/shared/{token}")
def shared(request: Request, token: str, ctx: Ctx, file: str = "video") -> Response:
    """A released export: the link is the credential (signed, short-lived, recorded)."""
    try:
        data = ctx.signer.loads(token, max_age=ctx.svc.share_ttl_s)
    except SignatureExpired:
        raise ConsoleError(410, "this link has expired: ask the privacy office for a new one") from None
    except BadSignature:
        raise ConsoleError(403, "this link is not valid") from None
    job = ctx.svc.jobs.get(str(data.get("job")))
    if job is None or job.state != "released" or file not in ("video", "report"):
        raise ConsoleError(404, "the export behind this link is no longer available")
    ctx.live_link(str(data.get("n") or ""), "export", job.job_id)
    p = job.file(file)
    if p is None:
        raise ConsoleError(404, "the export behind this link is no longer available")
    client = request.client.host if request.client else ""
    ctx.record_read(f"link:{job.owner}", (), "share_open", ("job", job.job_id, file, str(data.get("n")), client),
                    camera_id=job.camera_id, case=job.case, detail={"job": job.job_id, "file": file,
                                                                    "client": client})
    ctype = "video/mp4" if p.suffix == ".mp4" else "application/json"
    return ranged(p.read_bytes(), request, ctype,
                  {"Content-Disposition": f'inline; filename="{job.case}-{p.name}"'})


def share_ttl(body: dict[str, Any], max_ttl_s: int) -> int:
    try:
        ttl = int(body.get("ttl_s") or max_ttl_s)
    except (TypeError, ValueError):
        raise ConsoleError(400, "ttl_s: expected seconds") from None
    if not 30 <= ttl <= max_ttl_s:
        raise ConsoleError(400, f"ttl_s: between 30 and {max_ttl_s} seconds")
    return ttl


@router.post("/api/shares", dependencies=[Depends(check_csrf)])
async def share_segment(request: Request, user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    """A short-lived presigned link to one redacted segment (never raw), recorded."""
    body = await json_body(request)
    key = str(body.get("key") or "")
    m = segment_key_or_404(key)
    cam = ctx.camera_or_404(m["camera"])
    ctx.role_or_403(user, "share", cam, "share footage by link")
    case = check_case(body.get("case"))
    ttl = share_ttl(body, ctx.svc.share_ttl_s)
    role = ctx.role_or_403(user, "view", cam, "share footage by link")
    store = ctx.svc.stores(role)
    if hasattr(store, "stat_object") and store.stat_object(key) is None:
        raise ConsoleError(404, f"no such segment: {key[:160]}")
    # served by the console (not a presigned storage URL), so that it can be revoked and
    # every opening is recorded; read with the sharing role's storage credentials
    link = ctx.links.issue("segment", key, camera_id=cam, case=case, by=user.username, ttl_s=ttl, role=role)
    exp = iso(int(link.expires_at * 1000))
    ev = ctx.audit(user, "share", camera_id=cam, case=case, keys=[key],
                   detail={"ttl_s": ttl, "expires_at": exp, "link": link.link_id, "what": "segment link"})
    token = ctx.seg_signer.dumps({"id": link.link_id})
    return {"url": f"{ctx.base_url(request)}/shared/segments/{token}", "key": key, "case": case,
            "expires_at": exp, "event_id": ev.get("event_id", ""), "link_id": link.link_id,
            "revoke": f"/api/links/{link.link_id}/revoke"}


@router.get("/shared/segments/{token}")
def shared_segment(request: Request, token: str, ctx: Ctx) -> Response:
    """A shared redacted segment: the link is the credential (signed, short-lived, revocable, recorded)."""
    try:
        data = ctx.seg_signer.loads(token, max_age=max(ctx.svc.share_ttl_s, 30))
    except SignatureExpired:
        raise ConsoleError(410, "this link has expired: ask the privacy office for a new one") from None
    except BadSignature:
        raise ConsoleError(403, "this link is not valid") from None
    link = ctx.live_link(str(data.get("id") or "") if isinstance(data, dict) else "", "segment")
    client = request.client.host if request.client else ""
    ctx.record_read(f"link:{link.by}", (), "share_open", ("segment", link.link_id, client),
                    camera_id=link.camera_id, case=link.case, keys=[link.target],
                    detail={"link": link.link_id, "client": client})
    data_ = get_or_error(ctx.svc.stores(link.role), link.target, link.target)
    name = link.target.rsplit("/", 1)[-1]
    return ranged(data_, request, "video/mp4", {"Content-Disposition": f'inline; filename="{link.case}-{name}"'})


@router.post("/api/links/{link_id}/revoke", dependencies=[Depends(check_csrf)])
def revoke_link(link_id: str, user: CurrentUser, ctx: Ctx) -> dict[str, Any]:
    """Revoke a released export's or a shared segment's link before it expires (recorded first).
    Who issued it may, and anyone whose role may share that camera's footage."""
    svc = ctx.svc
    link = ctx.links.get(link_id) if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", link_id) else None
    if link is None or not (link.by == user.username or svc.access.can(user.roles, "share", link.camera_id)):
        raise ConsoleError(404, f"no such link {link_id[:20]!r}")
    if link.revoked_at is None:
        ctx.audit(user, "share_revoke", camera_id=link.camera_id, case=link.case,
                  keys=[link.target] if link.kind == "segment" else [],
                  detail={"link": link.link_id, "kind": link.kind, "target": link.target, "issued_by": link.by})
        link = ctx.links.revoke(link_id, user.username) or link
        logger.info("link revoked link=%s kind=%s by=%s", link.link_id, link.kind, user.username)
        if link.kind == "export":
            job = svc.jobs.get(link.target)
            for rel in job.released if job else ():
                if rel.get("link_id") == link.link_id:
                    rel["revoked_at"] = iso(int((link.revoked_at or 0) * 1000))
    return {"link_id": link.link_id, "kind": link.kind, "revoked_at": iso(int((link.revoked_at or 0) * 1000)),
            "revoked_by": link.revoked_by}
