"""Presigned share links to one redacted segment (``veilstream share``), and opening one.

    share(gov, key, ttl_s=900, case_id="C-9")             -> ShareLink
    open_share(url, output)                               (refuses an expired link)
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import InputError

from .context import AccessError, Governance
from .timeparse import iso


@dataclass(frozen=True)
class ShareLink:
    url: str
    key: str
    case_id: str
    expires_at_ms: int
    event_id: str


def share(gov: Governance, key: str, *, ttl_s: int, case_id: str) -> ShareLink:
    """A presigned GET link to one redacted segment (never raw footage, never a manifest of
    another bucket), valid ``ttl_s`` (at most 7 days, S3's limit)."""
    if not case_id:
        raise InputError("share: --case is required")
    if not 1 <= ttl_s <= 7 * 86400:
        raise InputError(f"share: --ttl must be between 1s and 7d, got {ttl_s}s")
    if not key.endswith(".mp4") or not key.startswith("camera=") or key.endswith(".raw"):
        raise AccessError(f"share: {key!r} is not a redacted segment key (camera=<id>/date=.../<start>_<end>.mp4); "
                          "raw footage is never shared by link")
    if gov.store.stat_object(key) is None:
        raise AccessError(f"share: no redacted segment {key!r} in bucket {gov.store.bucket}")
    camera_id = key.split("/", 1)[0][len("camera="):]
    expires = int(time.time() * 1000) + ttl_s * 1000
    ev = gov.record("share", camera_id=camera_id, case_id=case_id, object_keys=[key],
                    details={"ttl_s": ttl_s, "expires_at": iso(expires), "bucket": gov.store.bucket})
    url = gov.store.client.presigned_get_object(gov.store.bucket, key, expires=dt.timedelta(seconds=ttl_s))
    return ShareLink(url, key, case_id, expires, ev.event_id)


def share_expiry_ms(url: str) -> int:
    """When a presigned (SigV4) link expires: ``X-Amz-Date`` + ``X-Amz-Expires``."""
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    try:
        signed = dt.datetime.strptime(q["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        return int(signed.timestamp() * 1000) + int(q["X-Amz-Expires"][0]) * 1000
    except (KeyError, ValueError, IndexError):
        raise InputError("not a VeilStream share link (no X-Amz-Date / X-Amz-Expires)") from None


def open_share(url: str, output: Path, *, now_ms: int | None = None) -> int:
    """Download what a share link points to; an expired link is refused (checked here as
    well as by the storage, which enforces the signature's expiry). Returns bytes written."""
    import urllib.error
    import urllib.request

    exp = share_expiry_ms(url)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    if now >= exp:
        raise AccessError(f"share link expired at {iso(exp)} ({(now - exp) // 1000}s ago): ask the privacy "
                          "office for a new one")
    try:
        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - a presigned http(s) link
            data = r.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()[:500].decode("utf-8", "replace")
        if "expired" in body.lower():
            raise AccessError(f"share link expired at {iso(exp)}: the storage refused it") from None
        raise AccessError(f"share link refused by the storage: HTTP {exc.code}") from None
    output.write_bytes(data)
    return len(data)
