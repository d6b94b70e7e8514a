"""Redacted segments, their manifests, and downloads: each read is checked against the
user's roles for that camera and recorded before a byte leaves."""

from __future__ import annotations

import io
import zipfile

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..auth import User
from ..context import (
    ConsoleContext,
    ConsoleError,
    Ctx,
    CurrentUser,
    get_or_error,
    ranged,
    segment_key_or_404,
)

router = APIRouter()


def read_segment(ctx: ConsoleContext, user: User, key: str, what: str = "view") -> tuple[str, str, bytes]:
    m = segment_key_or_404(key)
    cam = ctx.camera_or_404(m["camera"])
    role = ctx.role_or_403(user, what, cam, "view footage" if what == "view" else "read manifests")
    store = ctx.svc.stores(role)
    target = key if what == "view" else key[:-4] + ".json"
    return cam, role, get_or_error(store, target, key)


@router.get("/api/segments/{key:path}")
def api_segment(request: Request, key: str, user: CurrentUser, ctx: Ctx) -> Response:
    m = segment_key_or_404(key)
    cam = ctx.camera_or_404(m["camera"])
    ctx.role_or_403(user, "view", cam, "view footage")
    ctx.record_read(user.username, user.roles, "view", ("segment", key), camera_id=cam, keys=[key])
    _cam, _role, data = read_segment(ctx, user, key)
    return ranged(data, request, "video/mp4")


@router.get("/api/manifests/{key:path}")
def api_manifest(key: str, user: CurrentUser, ctx: Ctx) -> Response:
    m = segment_key_or_404(key)
    cam = ctx.camera_or_404(m["camera"])
    ctx.role_or_403(user, "manifest", cam, "read manifests")
    ctx.record_read(user.username, user.roles, "manifest", ("manifest", key), camera_id=cam,
                    keys=[key[:-4] + ".json"])
    cam, _role, data = read_segment(ctx, user, key, "manifest")
    return Response(data, media_type="application/json")


@router.get("/api/download/{key:path}")
def api_download(key: str, user: CurrentUser, ctx: Ctx) -> Response:
    m = segment_key_or_404(key)
    cam = ctx.camera_or_404(m["camera"])
    ctx.role_or_403(user, "view", cam, "download footage")
    ctx.audit(user, "download", camera_id=cam, keys=[key, key[:-4] + ".json"])
    _c, _r, mp4 = read_segment(ctx, user, key)
    try:
        _c, _r, man = read_segment(ctx, user, key, "manifest")
    except ConsoleError as exc:
        if exc.status != 403:
            raise
        man = b""
    name = key.rsplit("/", 1)[-1][:-4]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{cam}_{name}.mp4", mp4)
        if man:
            z.writestr(f"{cam}_{name}.json", man)
    return Response(buf.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{cam}_{name}.zip"'})
