"""What every console route shares: the services, the request checks, and the context object.

:class:`ConsoleContext` is built once by :func:`pipeline.console.app.create_app` and kept on
``app.state.console``; routes get it with ``ctx: ConsoleContext = Depends(console_context)``
(FastAPI's own dependency mechanism), so each router in :mod:`pipeline.console.routes` is a
module of plain functions, not a closure over the app's locals. The guards (camera exists,
role may, segment key well formed) and the audit helpers raise :class:`ConsoleError`, which
the app's exception handlers turn into a page or ``{"error": ...}`` with one line.
"""

from __future__ import annotations

import datetime as dt
import hmac
import io
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from itsdangerous import URLSafeTimedSerializer

from .access import AccessControl
from .audit import AuditLog, RecentEvents
from .auth import LocalUsers, User
from .catalog import CAMERA_ID, DATE, SEGMENT_KEY, Catalog, gaps, iso
from .jobs import Job, JobManager
from .links import Link, LinkRegistry
from .ranges import RangeError, parse_range
from .sessions import SessionStore
from .throttle import SignInThrottle

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
MAX_TIME_MS = 253402300799999  # 9999-12-31T23:59:59.999Z: the last time datetime can show
CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


class ConsoleError(Exception):
    """An error page / JSON error with a status code and one line."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class NotSignedInError(Exception):
    pass


@dataclass
class Services:
    """What the routes use; built by :func:`pipeline.console.server.build_services` (or tests)."""

    access: AccessControl
    catalog: Catalog  # the console's status view (listing + manifests)
    audit: AuditLog
    jobs: JobManager
    users: LocalUsers | None
    stores: Callable[[str], Any]  # role -> ObjectStore with that role's credentials
    oauth: Any = None
    oidc: Any = None  # OidcConfig
    share_ttl_s: int = 900
    public_url: str | None = None
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    governance: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    """Optional overrides of the governance functions (tests); else pipeline.governance."""
    recent: RecentEvents = field(default_factory=RecentEvents)
    sessions: SessionStore | None = None
    throttle: SignInThrottle = field(default_factory=SignInThrottle)
    links: LinkRegistry | None = None
    """Released exports and shared segments by link id, revocable (``None``: in memory)."""
    """Failed sign-ins lock the username and the client address (429 without hashing)."""
    """Server-side sessions (``None``: in memory, made by :func:`create_app` with its max age)."""
    """Footage reads recorded in the last minute (one event covers a playback's range requests)."""

    def gov(self, name: str, what: str) -> Callable[..., Any]:
        from .exports import lookup

        return lookup(self.governance, name, what)


# ---------------------------------------------------------------- helpers
def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def session_user(request: Request) -> User | None:
    """The signed-in user, checked against the server side on every request: the session must
    still exist (not signed out, not expired) and a local user must still be in the users file,
    with the roles it gives now. A session that fails either is ended (its cookie cleared)."""
    s = request.session
    if not s.get("user"):
        return None
    svc: Services = request.app.state.services
    sid = str(s.get("sid") or "")
    rec = svc.sessions.get(sid) if svc.sessions is not None else None
    if rec is None or rec.username != s.get("user"):
        s.clear()
        return None
    if rec.via != "local":
        return User(rec.username, rec.roles)
    u = svc.users.get(rec.username) if svc.users is not None else None
    if u is None:
        logger.info("session ended: user no longer in the users file user=%s", rec.username[:64])
        svc.sessions.revoke(sid)  # type: ignore[union-attr]
        s.clear()
        return None
    return User(rec.username, u.roles)


def current_user(request: Request) -> User:
    u = session_user(request)
    if u is None:
        raise NotSignedInError()
    return u


def csrf_token(request: Request) -> str:
    tok = request.session.get("csrf")
    if not tok:
        tok = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(tok)


async def check_csrf(request: Request) -> None:
    """Unsafe methods carry the session's token in ``X-CSRF-Token`` or a form field."""
    want = request.session.get("csrf")
    got = request.headers.get("x-csrf-token")
    if got is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        got = str(form.get("csrf_token") or "")
    if not want or not got or not hmac.compare_digest(str(want), str(got)):
        raise ConsoleError(403, "CSRF token missing or invalid: reload the page and try again")


def get_or_error(store: Any, target: str, key: str) -> bytes:
    """One GET with the role's credentials: missing -> 404, refused by storage -> 403."""
    try:
        return bytes(store.get_object(target))
    except KeyError:  # the in-memory store of the tests
        raise ConsoleError(404, f"no such segment: {key[:160]}") from None
    except Exception as exc:
        code = getattr(exc, "code", "")
        if code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
            raise ConsoleError(404, f"no such segment: {key[:160]}") from None
        if code == "AccessDenied":
            raise ConsoleError(403, "the storage refused this role's credentials for this object "
                                    "(console.s3_credentials out of step with the policies?)") from None
        raise


def parse_time(value: Any, what: str) -> int:
    """Epoch ms from an int (ms) or an ISO 8601 time (UTC when no zone is given)."""
    if isinstance(value, bool) or value is None or value == "":
        raise ConsoleError(400, f"{what}: expected a time (ISO 8601 or epoch ms)")
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 <= value <= MAX_TIME_MS:
            raise ConsoleError(400, f"{what}: {str(value)[:24]} is not a time (epoch ms from 1970 to 9999)")
        return int(value)
    s = str(value).strip()
    if s.isascii() and s.isdigit():
        if len(s) > 15 or int(s) > MAX_TIME_MS:
            raise ConsoleError(400, f"{what}: {s[:24]} is not a time (epoch ms from 1970 to 9999)")
        return int(s)
    try:
        d = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ConsoleError(400, f"{what}: {s[:40]!r} is not a time (expected e.g. 2026-11-29T14:00:00Z)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    ms = int(d.timestamp() * 1000)
    if not 0 <= ms <= MAX_TIME_MS:
        raise ConsoleError(400, f"{what}: {s[:40]!r} is before 1970")
    return ms


def check_case(case: Any, required: bool = True) -> str:
    c = str(case or "").strip()
    if not c and required:
        raise ConsoleError(400, "case: a case id is required (e.g. DSR-2026-0042)")
    if c and not CASE_ID.match(c):
        raise ConsoleError(400, f"case: {c[:40]!r} is not a case id (letters, digits, . _ : / -; at most 128)")
    return c


def ranged(data: bytes, request: Request, content_type: str, extra: Mapping[str, str] | None = None) -> Response:
    """``data`` whole (200) or the one range asked for (206), by :func:`~pipeline.console.ranges.parse_range`.

    The caller has recorded the read already: this decides which bytes leave, not whether."""
    size = len(data)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, no-store", **(extra or {})}
    try:
        r = parse_range(request.headers.get("range"), size)
    except RangeError as exc:
        raise ConsoleError(416, str(exc), {"Content-Range": f"bytes */{size}"}) from None
    if r is None:
        return Response(data, media_type=content_type, headers={**headers, "Content-Length": str(size)})
    headers.update({"Content-Range": f"bytes {r.start}-{r.end}/{size}", "Content-Length": str(r.length)})
    return Response(data[r.start:r.end + 1], status_code=206, media_type=content_type, headers=headers)


def segment_key_or_404(key: str) -> re.Match[str]:
    m = SEGMENT_KEY.match(key)
    if not m:
        raise ConsoleError(404, f"not a segment key: {key[:120]!r}")
    return m


def check_date(date: str) -> str:
    if not DATE.match(date):
        raise ConsoleError(400, f"date: {date[:20]!r} is not a date (expected YYYY-MM-DD)")
    try:
        dt.date.fromisoformat(date)
    except ValueError:
        raise ConsoleError(400, f"date: {date!r} is not a calendar date") from None
    return date


async def json_body(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            raise ConsoleError(400, "request body is not valid JSON") from None
    else:
        body = dict(await request.form())
    if not isinstance(body, dict):
        raise ConsoleError(400, "request body: expected a JSON object")
    return body


def quote_path(s: str) -> str:
    return quote(s, safe="/")


def safe_next(nxt: str) -> str:
    """Only same-site paths (no open redirect to another host)."""
    return nxt if nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt else "/cameras"


def script_json(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>`` breakout)."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# ---------------------------------------------------------------- the context
@dataclass
class ConsoleContext:
    """The state the routes share, and the checks that need it (one per app)."""

    svc: Services
    templates: Jinja2Templates
    signer: URLSafeTimedSerializer  # released exports' links
    seg_signer: URLSafeTimedSerializer  # shared segments' links
    sessions: SessionStore
    links: LinkRegistry

    @classmethod
    def build(cls, svc: Services, session_max_age_s: int) -> ConsoleContext:
        templates = Jinja2Templates(directory=str(HERE / "templates"))
        templates.env.globals["iso"] = iso
        if svc.sessions is None:
            svc.sessions = SessionStore(None, session_max_age_s)
        if svc.links is None:
            svc.links = LinkRegistry()
        return cls(svc, templates, URLSafeTimedSerializer(svc.secret_key, salt="veilstream-release"),
                   URLSafeTimedSerializer(svc.secret_key, salt="veilstream-segment-link"), svc.sessions, svc.links)

    # ------------------------------------------------------------ pages and errors
    def page(self, request: Request, name: str, http_status: int = 200, **ctx: Any) -> HTMLResponse:
        user = session_user(request)
        return self.templates.TemplateResponse(request, name, {"user": user, "csrf": csrf_token(request), **ctx},
                                               status_code=http_status)

    def error(self, request: Request, status: int, message: str) -> Response:
        if wants_json(request):
            return JSONResponse({"error": message, "status": status}, status_code=status)
        return self.page(request, "error.html", http_status=status, status_code=status, message=message)

    def base_url(self, request: Request) -> str:
        return (self.svc.public_url or str(request.base_url)).rstrip("/")

    # ------------------------------------------------------------ guards
    def camera_or_404(self, camera_id: str) -> str:
        if not CAMERA_ID.match(camera_id) or not self.svc.catalog.exists(camera_id):
            raise ConsoleError(404, f"unknown camera {camera_id[:64]!r}")
        return camera_id

    def role_or_403(self, user: User, what: str, camera_id: str = "", noun: str = "") -> str:
        role = self.svc.access.role_for(user.roles, what, camera_id)
        if role is None:
            target = f" for camera {camera_id}" if camera_id else ""
            raise ConsoleError(403, f"your role ({', '.join(user.roles) or 'none'}) may not {noun or what}{target}")
        return role

    def visible_cameras(self, user: User) -> list[str]:
        svc = self.svc
        ids = svc.catalog.camera_ids()
        if svc.access.can(user.roles, "status") and "sre" in user.roles:
            return ids
        return [c for c in ids if any(svc.access.can(user.roles, w, c) for w in ("view", "manifest", "raw"))]

    def own_job(self, user: User, job_id: str) -> Job:
        job = self.svc.jobs.get(job_id) if re.fullmatch(r"[0-9a-f]{16}", job_id) else None
        if job is None or job.owner != user.username:
            raise ConsoleError(404, f"no such job {job_id[:20]!r}")
        return job

    def live_link(self, link_id: str, kind: str, target: str | None = None) -> Link:
        """The registry's word on a link: unknown -> 404, revoked -> 410, expired -> 410."""
        link = self.links.get(link_id)
        if link is None or link.kind != kind or (target is not None and link.target != target):
            raise ConsoleError(404, "the footage behind this link is no longer available")
        if link.revoked_at is not None:
            raise ConsoleError(410, "this link was revoked: ask the privacy office for a new one")
        if time.time() >= link.expires_at:
            raise ConsoleError(410, "this link has expired: ask the privacy office for a new one")
        return link

    # ------------------------------------------------------------ audit
    def audit(self, user: User, action: str, **kw: Any) -> dict[str, Any]:
        return self.svc.audit.record(user.username, user.roles, action, **kw)

    def record_read(self, actor: str, roles: tuple[str, ...], action: str, what: tuple[str, ...], **kw: Any) -> None:
        """Before any byte of ``what`` leaves, whatever the Range header: store an event unless one
        for the same (actor, action, object) was stored in the last ``svc.recent.window_s``."""
        svc = self.svc
        k = (actor, action, *what)
        if svc.recent.covered(k):
            return
        svc.audit.record(actor, roles, action, **kw)  # AuditError -> 503, nothing sent
        svc.recent.mark(k)

    # ------------------------------------------------------------ footage in time
    def timeline(self, camera_id: str, date: str) -> dict[str, Any]:
        d = dt.date.fromisoformat(date)
        start = int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp() * 1000)
        segs = self.svc.catalog.day(camera_id, date)
        return {"camera_id": camera_id, "date": date, "day_start_ms": start, "day_end_ms": start + 86400_000,
                "segments": [s.as_json() for s in segs],
                "gaps": [g.as_json() for g in gaps(segs, segs[0].first_frame_ms if segs else start,
                                                   segs[-1].last_frame_ms if segs else start)]}

    def day_or_latest(self, camera_id: str, date: str) -> tuple[str, list[str]]:
        """The day asked for (checked), else the camera's latest day with footage, else today."""
        dates = self.svc.catalog.dates(camera_id)
        date = check_date(date) if date else (dates[0] if dates else dt.datetime.now(dt.UTC).date().isoformat())
        return date, dates

    def stored_in(self, camera_id: str, t0: int, t1: int) -> list[Any]:
        days = {dt.datetime.fromtimestamp(t / 1000, tz=dt.UTC).date().isoformat() for t in (t0, t1)}
        segs = [s for d in sorted(days) for s in self.svc.catalog.day(camera_id, d)
                if s.last_frame_ms >= t0 and s.first_frame_ms <= t1]
        if not segs:
            raise ConsoleError(404, f"nothing stored for camera {camera_id} between {iso(t0)} and {iso(t1)}")
        return segs

    def frame_size(self, store: Any, seg: Any) -> tuple[int, int]:
        man = self.svc.catalog.manifest(seg.key) or {}
        if man.get("width") and man.get("height"):
            return int(man["width"]), int(man["height"])
        import av

        with av.open(io.BytesIO(store.get_object(seg.key))) as c:
            s = c.streams.video[0]
            return int(s.codec_context.width), int(s.codec_context.height)


def interval(camera_id: str, body: Mapping[str, Any]) -> tuple[int, int]:
    t0, t1 = parse_time(body.get("from"), "from"), parse_time(body.get("to"), "to")
    if t1 <= t0:
        raise ConsoleError(400, f"interval: 'to' ({iso(t1)}) must be after 'from' ({iso(t0)})")
    if t1 - t0 > 6 * 3600_000:
        raise ConsoleError(400, "interval: at most 6 hours per request")
    return t0, t1


def console_context(request: Request) -> ConsoleContext:
    """The FastAPI dependency that hands a route its app's :class:`ConsoleContext`."""
    ctx: ConsoleContext = request.app.state.console
    return ctx


def run_export(export: Callable[..., Any], filename: str, actor: str, kw: Mapping[str, Any],
               job: Job) -> Mapping[str, Any]:
    """The body of an export job (``functools.partial`` of it goes to :meth:`JobManager.submit`):
    the governance export writes ``filename`` in the job's directory, its report beside it."""
    out = job.dir / filename
    report = export(**kw, output=out, actor=actor, progress=job.progress)
    rep = dict(report) if isinstance(report, Mapping) else getattr(report, "__dict__", {})
    (job.dir / "report.json").write_text(json.dumps(rep, indent=2, default=str))
    return {"files": {"video": out.name, "report": "report.json"}, "report": rep}


CurrentUser = Annotated[User, Depends(current_user)]
"""A route's signed-in user (else :class:`NotSignedInError`: 401 for the API, a redirect for pages)."""
Ctx = Annotated[ConsoleContext, Depends(console_context)]
"""A route's :class:`ConsoleContext`."""
