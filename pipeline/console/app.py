"""The console web application (FastAPI): pages, the JSON API behind them, and the checks.

Every route but sign-in, health and static files needs a signed-in user; every footage
route also asks :class:`~pipeline.console.access.AccessControl` whether one of the
user's roles may read that camera (the policies' own role documents), and records an
audit event before a byte of footage leaves. Unsafe methods need the session's CSRF token
(``X-CSRF-Token`` header or ``csrf_token`` form field). Errors are one line: a page for
browsers, ``{"error": ...}`` for ``/api``; never a traceback.
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
import uuid
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from schemas.errors import VeilStreamError

from .access import AccessControl
from .audit import AuditError, AuditLog, AuditQuery, RecentEvents
from .auth import LocalUsers, User, oidc_user
from .catalog import CAMERA_ID, DATE, SEGMENT_KEY, Catalog, gaps, iso
from .exports import NotAvailableError
from .jobs import Job, JobManager
from .links import Link, LinkRegistry
from .ranges import RangeError, parse_range
from .sessions import SessionStore
from .throttle import SignInThrottle

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
SESSION_COOKIE = "veil_session"
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


# ---------------------------------------------------------------- app
def create_app(svc: Services, *, secure_cookies: bool = True, session_max_age_s: int = 8 * 3600) -> FastAPI:
    app = FastAPI(title="VeilStream console", version="1", docs_url=None, redoc_url=None,
                  description="De-identified footage, subject requests, investigations and the audit trail.")
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["iso"] = iso
    signer = URLSafeTimedSerializer(svc.secret_key, salt="veilstream-release")
    seg_signer = URLSafeTimedSerializer(svc.secret_key, salt="veilstream-segment-link")
    if svc.sessions is None:
        svc.sessions = SessionStore(None, session_max_age_s)
    sessions = svc.sessions
    if svc.links is None:
        svc.links = LinkRegistry()
    links = svc.links
    app.state.services = svc

    app.add_middleware(SessionMiddleware, secret_key=svc.secret_key, session_cookie=SESSION_COOKIE,
                       max_age=session_max_age_s, same_site="lax", https_only=secure_cookies)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        resp: Response = await call_next(request)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
                                "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
        return resp

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def page(request: Request, name: str, http_status: int = 200, **ctx: Any) -> HTMLResponse:
        user = session_user(request)
        return templates.TemplateResponse(request, name, {"user": user, "csrf": csrf_token(request), **ctx},
                                          status_code=http_status)

    def error(request: Request, status: int, message: str) -> Response:
        if wants_json(request):
            return JSONResponse({"error": message, "status": status}, status_code=status)
        return page(request, "error.html", http_status=status, status_code=status, message=message)

    @app.exception_handler(ConsoleError)
    async def _console_error(request: Request, exc: ConsoleError) -> Response:
        resp = error(request, exc.status, exc.message)
        resp.headers.update(exc.headers)
        return resp

    @app.exception_handler(NotSignedInError)
    async def _not_signed_in(request: Request, exc: NotSignedInError) -> Response:
        if wants_json(request) or request.method != "GET":
            return JSONResponse({"error": "sign in first", "status": 401}, status_code=401)
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={_quote(nxt)}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        msg = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"no such page: {request.url.path[:100]}"
        return error(request, exc.status_code, msg)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return error(request, 400, "invalid request: " + "; ".join(parts))

    @app.exception_handler(AuditError)
    async def _audit_down(request: Request, exc: AuditError) -> Response:
        return error(request, 503, str(exc))

    @app.exception_handler(NotAvailableError)
    async def _not_available(request: Request, exc: NotAvailableError) -> Response:
        return error(request, 501, str(exc))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        ref = uuid.uuid4().hex[:8]
        logger.error("request failed ref=%s path=%s error=%s: %s", ref, request.url.path, type(exc).__name__, exc,
                     exc_info=(type(exc), exc, exc.__traceback__))
        return error(request, 500, f"internal error (reference {ref}); the details are in the console log")

    # ------------------------------------------------------------ guards
    def camera_or_404(camera_id: str) -> str:
        if not CAMERA_ID.match(camera_id) or not svc.catalog.exists(camera_id):
            raise ConsoleError(404, f"unknown camera {camera_id[:64]!r}")
        return camera_id

    def role_or_403(user: User, what: str, camera_id: str = "", noun: str = "") -> str:
        role = svc.access.role_for(user.roles, what, camera_id)
        if role is None:
            target = f" for camera {camera_id}" if camera_id else ""
            raise ConsoleError(403, f"your role ({', '.join(user.roles) or 'none'}) may not {noun or what}{target}")
        return role

    def segment_key_or_404(key: str) -> re.Match[str]:
        m = SEGMENT_KEY.match(key)
        if not m:
            raise ConsoleError(404, f"not a segment key: {key[:120]!r}")
        return m

    def visible_cameras(user: User) -> list[str]:
        ids = svc.catalog.camera_ids()
        if svc.access.can(user.roles, "status") and "sre" in user.roles:
            return ids
        return [c for c in ids if any(svc.access.can(user.roles, w, c) for w in ("view", "manifest", "raw"))]

    def audit(user: User, action: str, **kw: Any) -> dict[str, Any]:
        return svc.audit.record(user.username, user.roles, action, **kw)

    def record_read(actor: str, roles: tuple[str, ...], action: str, what: tuple[str, ...], **kw: Any) -> None:
        """Before any byte of ``what`` leaves, whatever the Range header: store an event unless one
        for the same (actor, action, object) was stored in the last ``svc.recent.window_s``."""
        k = (actor, action, *what)
        if svc.recent.covered(k):
            return
        svc.audit.record(actor, roles, action, **kw)  # AuditError -> 503, nothing sent
        svc.recent.mark(k)

    # ------------------------------------------------------------ public
    @app.get("/healthz", include_in_schema=True, tags=["public"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/login", response_class=HTMLResponse, tags=["public"])
    def login_page(request: Request, next: str = "/cameras") -> Response:  # noqa: A002 - the query name
        return page(request, "login.html", next=_safe_next(next), oidc=svc.oauth is not None,
                    local=svc.users is not None, message="")

    @app.post("/login", response_class=HTMLResponse, tags=["public"], dependencies=[Depends(check_csrf)])
    async def login(request: Request) -> Response:
        form = await request.form()
        username, password = str(form.get("username") or ""), str(form.get("password") or "")
        nxt = _safe_next(str(form.get("next") or "/cameras"))
        if svc.users is None or not username:
            return page(request, "login.html", http_status=401, next=nxt, oidc=svc.oauth is not None,
                        local=svc.users is not None, message="unknown user or wrong password")
        name, addr = username[:128], request.client.host if request.client else ""
        wait = svc.throttle.retry_after(name, addr)
        if wait > 0:  # answered before any argon2 hash: guessing costs the console nothing while locked
            secs = max(1, math.ceil(wait))
            resp = page(request, "login.html", http_status=429, next=nxt, oidc=svc.oauth is not None, local=True,
                        message=f"too many failed sign-ins: try again in {secs} s")
            resp.headers["Retry-After"] = str(secs)
            return resp
        user = svc.users.authenticate(username, password)
        if user is None:
            logger.info("sign-in refused user=%s address=%s", name[:64], addr)
            for lk in svc.throttle.failed(name, addr):
                until = dt.datetime.fromtimestamp(lk.locked_until, tz=dt.UTC).isoformat(timespec="seconds")
                logger.warning("sign-in locked by=%s user=%s address=%s failures=%d locked_until=%s lock_s=%.0f",
                               lk.kind, name[:64], addr, lk.failures, until, lk.lock_s)
            return page(request, "login.html", http_status=401, next=nxt, oidc=svc.oauth is not None,
                        local=True, message="unknown user or wrong password")
        svc.throttle.succeeded(name)
        _sign_in(request, user, "local")
        return RedirectResponse(nxt, status_code=303)

    @app.get("/auth/oidc/login", tags=["public"])
    async def oidc_login(request: Request) -> Response:
        if svc.oauth is None:
            raise ConsoleError(404, "OpenID Connect sign-in is not configured (console.oidc.issuer)")
        base = (svc.public_url or str(request.base_url)).rstrip("/")
        return await svc.oauth.city.authorize_redirect(request, f"{base}/auth/oidc/callback")  # type: ignore[no-any-return]

    @app.get("/auth/oidc/callback", tags=["public"])
    async def oidc_callback(request: Request) -> Response:
        if svc.oauth is None:
            raise ConsoleError(404, "OpenID Connect sign-in is not configured (console.oidc.issuer)")
        from authlib.integrations.base_client.errors import OAuthError

        try:
            token = await svc.oauth.city.authorize_access_token(request)
        except OAuthError as exc:
            raise ConsoleError(401, f"sign-in with the identity provider failed: {exc.error}") from None
        claims = token.get("userinfo") or {}
        user = oidc_user(claims, svc.oidc.roles_claim, svc.oidc.username_claim)
        if user is None:
            raise ConsoleError(403, f"the identity provider's token names no console role in claim "
                                    f"{svc.oidc.roles_claim!r}")
        _sign_in(request, user, "oidc")
        return RedirectResponse("/cameras", status_code=303)

    # ------------------------------------------------------------ session
    @app.post("/logout", dependencies=[Depends(check_csrf)])
    def logout(request: Request, user: User = Depends(current_user)) -> Response:
        sessions.revoke(str(request.session.get("sid") or ""))  # the cookie is worthless from here on
        request.session.clear()
        logger.info("signed out user=%s", user.username)
        try:
            audit(user, "sign_out")
        except AuditError:
            pass  # the session has ended either way; the error is in the log
        return RedirectResponse("/login", status_code=303)

    @app.get("/", include_in_schema=True)
    def home(user: User = Depends(current_user)) -> Response:
        return RedirectResponse("/cameras", status_code=303)

    @app.get("/api/me")
    def me(request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
        return {"username": user.username, "roles": list(user.roles), "csrf_token": csrf_token(request)}

    # ------------------------------------------------------------ cameras
    def camera_rows(user: User, q: str, policy: str, status: str) -> list[dict[str, Any]]:
        rows = []
        for st in svc.catalog.status(visible_cameras(user)):
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

    @app.get("/api/cameras")
    def api_cameras(q: str = "", policy: str = "", status: str = "",
                    user: User = Depends(current_user)) -> dict[str, Any]:
        _reg, err = svc.catalog.registry()
        return {"cameras": camera_rows(user, q, policy, status), "registry_error": err}

    @app.get("/cameras", response_class=HTMLResponse)
    def cameras_page(request: Request, q: str = "", policy: str = "", status: str = "",
                     user: User = Depends(current_user)) -> Response:
        _reg, err = svc.catalog.registry()
        rows = camera_rows(user, q, policy, status)
        return page(request, "cameras.html", rows=rows, q=q, policy=policy, status=status, registry_error=err,
                    policies=sorted(svc.access.policies))

    def timeline(camera_id: str, date: str) -> dict[str, Any]:
        d = dt.date.fromisoformat(date)
        start = int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp() * 1000)
        segs = svc.catalog.day(camera_id, date)
        return {"camera_id": camera_id, "date": date, "day_start_ms": start, "day_end_ms": start + 86400_000,
                "segments": [s.as_json() for s in segs],
                "gaps": [g.as_json() for g in gaps(segs, segs[0].first_frame_ms if segs else start,
                                                   segs[-1].last_frame_ms if segs else start)]}

    def check_date(date: str) -> str:
        if not DATE.match(date):
            raise ConsoleError(400, f"date: {date[:20]!r} is not a date (expected YYYY-MM-DD)")
        try:
            dt.date.fromisoformat(date)
        except ValueError:
            raise ConsoleError(400, f"date: {date!r} is not a calendar date") from None
        return date

    @app.get("/api/cameras/{camera_id}/days/{date}")
    def api_timeline(camera_id: str, date: str, user: User = Depends(current_user)) -> dict[str, Any]:
        camera_or_404(camera_id)
        role_or_403(user, "view", camera_id, "view footage")
        return timeline(camera_id, check_date(date))

    @app.get("/cameras/{camera_id}", response_class=HTMLResponse)
    def camera_page(request: Request, camera_id: str, date: str = "", user: User = Depends(current_user)) -> Response:
        camera_or_404(camera_id)
        role_or_403(user, "view", camera_id, "view footage")
        dates = svc.catalog.dates(camera_id)
        date = check_date(date) if date else (dates[0] if dates else dt.datetime.now(dt.UTC).date().isoformat())
        tl = timeline(camera_id, date)
        st = svc.catalog.status([camera_id])[0]
        return page(request, "camera.html", camera=st.as_json(), tl=tl, tl_json=_script_json(tl), dates=dates,
                    date=date, can=svc.access.capabilities(user.roles, camera_id), share_ttl=svc.share_ttl_s)

    # ------------------------------------------------------------ footage
    def read_segment(user: User, key: str, what: str = "view") -> tuple[str, str, bytes]:
        m = segment_key_or_404(key)
        cam = camera_or_404(m["camera"])
        role = role_or_403(user, what, cam, "view footage" if what == "view" else "read manifests")
        store = svc.stores(role)
        target = key if what == "view" else key[:-4] + ".json"
        return cam, role, get_or_error(store, target, key)

    @app.get("/api/segments/{key:path}")
    def api_segment(request: Request, key: str, user: User = Depends(current_user)) -> Response:
        m = segment_key_or_404(key)
        cam = camera_or_404(m["camera"])
        role_or_403(user, "view", cam, "view footage")
        record_read(user.username, user.roles, "view", ("segment", key), camera_id=cam, keys=[key])
        _cam, _role, data = read_segment(user, key)
        return ranged(data, request, "video/mp4")

    @app.get("/api/manifests/{key:path}")
    def api_manifest(key: str, user: User = Depends(current_user)) -> Response:
        m = segment_key_or_404(key)
        cam = camera_or_404(m["camera"])
        role_or_403(user, "manifest", cam, "read manifests")
        record_read(user.username, user.roles, "manifest", ("manifest", key), camera_id=cam,
                    keys=[key[:-4] + ".json"])
        cam, _role, data = read_segment(user, key, "manifest")
        return Response(data, media_type="application/json")

    @app.get("/api/download/{key:path}")
    def api_download(key: str, user: User = Depends(current_user)) -> Response:
        m = segment_key_or_404(key)
        cam = camera_or_404(m["camera"])
        role_or_403(user, "view", cam, "download footage")
        audit(user, "download", camera_id=cam, keys=[key, key[:-4] + ".json"])
        _c, _r, mp4 = read_segment(user, key)
        try:
            _c, _r, man = read_segment(user, key, "manifest")
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

    # ------------------------------------------------------------ exports (jobs)
    def interval(camera_id: str, body: Mapping[str, Any]) -> tuple[int, int]:
        t0, t1 = parse_time(body.get("from"), "from"), parse_time(body.get("to"), "to")
        if t1 <= t0:
            raise ConsoleError(400, f"interval: 'to' ({iso(t1)}) must be after 'from' ({iso(t0)})")
        if t1 - t0 > 6 * 3600_000:
            raise ConsoleError(400, "interval: at most 6 hours per request")
        return t0, t1

    def stored_in(camera_id: str, t0: int, t1: int) -> list[Any]:
        days = {dt.datetime.fromtimestamp(t / 1000, tz=dt.UTC).date().isoformat() for t in (t0, t1)}
        segs = [s for d in sorted(days) for s in svc.catalog.day(camera_id, d)
                if s.last_frame_ms >= t0 and s.first_frame_ms <= t1]
        if not segs:
            raise ConsoleError(404, f"nothing stored for camera {camera_id} between {iso(t0)} and {iso(t1)}")
        return segs

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

    def frame_size(store: Any, seg: Any) -> tuple[int, int]:
        man = svc.catalog.manifest(seg.key) or {}
        if man.get("width") and man.get("height"):
            return int(man["width"]), int(man["height"])
        import av

        with av.open(io.BytesIO(store.get_object(seg.key))) as c:
            s = c.streams.video[0]
            return int(s.codec_context.width), int(s.codec_context.height)

    @app.post("/api/subject-requests", status_code=202, dependencies=[Depends(check_csrf)])
    async def subject_request(request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
        body = await json_body(request)
        cam = camera_or_404(str(body.get("camera_id") or ""))
        role = role_or_403(user, "subject_export", cam, "export subject footage")
        case = check_case(body.get("case"))
        t0, t1 = interval(cam, body)
        segs = stored_in(cam, t0, t1)
        box = body.get("subject") or {}
        try:
            x, y, w, h = (float(box[k]) for k in ("x", "y", "w", "h"))
        except (KeyError, TypeError, ValueError):
            raise ConsoleError(400, "subject: expected a box {x, y, w, h, at} in video pixels") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise ConsoleError(400, "subject: x, y, w and h must be finite numbers of video pixels "
                                    "(not NaN or infinity)")
        at = parse_time(box.get("at"), "subject.at")
        if not t0 <= at <= t1:
            raise ConsoleError(400, f"subject.at ({iso(at)}) must lie inside the interval")
        seg_at = next((s for s in segs if s.first_frame_ms <= at <= s.last_frame_ms + 1000), segs[0])
        fw, fh = frame_size(svc.stores(role), seg_at)
        if w < 2 or h < 2 or x < 0 or y < 0 or x + w > fw or y + h > fh:
            raise ConsoleError(400, f"subject box {x:.0f},{y:.0f},{w:.0f},{h:.0f} lies outside the "
                                    f"{fw}x{fh} frame (or is empty)")
        params = {"from_ms": t0, "to_ms": t1, "box_xywh": [round(x), round(y), round(w), round(h)], "at_ms": at,
                  "frame_wh": [fw, fh], "segments": [s.key for s in segs]}
        # the export records its own audit event (as this user) before it writes the result
        export = svc.gov("subject_export", "subject export")

        def run(job: Job) -> Mapping[str, Any]:
            out = job.dir / "subject-export.mp4"
            report = export(camera_id=cam, from_ms=t0, to_ms=t1, box_xywh=tuple(params["box_xywh"]), at_ms=at,  # type: ignore[arg-type]
                            case=case, output=out, actor=user.username, progress=job.progress)
            rep = dict(report) if isinstance(report, Mapping) else getattr(report, "__dict__", {})
            (job.dir / "report.json").write_text(json.dumps(rep, indent=2, default=str))
            return {"files": {"video": out.name, "report": "report.json"}, "report": rep}

        job = svc.jobs.submit("subject_export", run, owner=user.username, roles=user.roles, camera_id=cam,
                              case=case, params=params)
        return {"job_id": job.job_id, "url": f"/jobs/{job.job_id}", "state": job.state}

    @app.post("/api/case-exports", status_code=202, dependencies=[Depends(check_csrf)])
    async def case_export(request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
        body = await json_body(request)
        cam = camera_or_404(str(body.get("camera_id") or ""))
        role_or_403(user, "case_export", cam, "export raw footage (case export)")
        case = check_case(body.get("case"))
        basis, official = str(body.get("legal_basis") or "").strip(), str(body.get("official") or "").strip()
        if not basis or not official:
            raise ConsoleError(400, "a case export needs the legal basis and the requesting official")
        t0, t1 = interval(cam, body)
        export = svc.gov("case_export", "case export")
        params = {"from_ms": t0, "to_ms": t1, "legal_basis": basis[:500], "official": official[:200]}

        def run(job: Job) -> Mapping[str, Any]:
            out = job.dir / "case-export.mp4"
            report = export(camera_id=cam, from_ms=t0, to_ms=t1, case=case, legal_basis=basis, official=official,
                            output=out, actor=user.username, progress=job.progress)
            rep = dict(report) if isinstance(report, Mapping) else getattr(report, "__dict__", {})
            (job.dir / "report.json").write_text(json.dumps(rep, indent=2, default=str))
            return {"files": {"video": out.name, "report": "report.json"}, "report": rep}

        job = svc.jobs.submit("case_export", run, owner=user.username, roles=user.roles, camera_id=cam, case=case,
                              params=params)
        return {"job_id": job.job_id, "url": f"/jobs/{job.job_id}", "state": job.state}

    def own_job(user: User, job_id: str) -> Job:
        job = svc.jobs.get(job_id) if re.fullmatch(r"[0-9a-f]{16}", job_id) else None
        if job is None or job.owner != user.username:
            raise ConsoleError(404, f"no such job {job_id[:20]!r}")
        return job

    @app.get("/api/jobs")
    def api_jobs(user: User = Depends(current_user)) -> dict[str, Any]:
        return {"jobs": [j.as_json() for j in svc.jobs.list(user.username)]}

    @app.get("/api/jobs/{job_id}")
    def api_job(job_id: str, user: User = Depends(current_user)) -> dict[str, Any]:
        return own_job(user, job_id).as_json()

    @app.get("/api/jobs/{job_id}/files/{role}")
    def api_job_file(request: Request, job_id: str, role: str, user: User = Depends(current_user)) -> Response:
        job = own_job(user, job_id)
        p = job.file(role)
        if p is None:
            raise ConsoleError(404, f"job {job_id} has no {role[:20]!r} file (state {job.state})")
        record_read(user.username, user.roles, "preview", ("job", job.job_id, role), camera_id=job.camera_id,
                    case=job.case, detail={"job": job.job_id, "file": role})
        ctype = "video/mp4" if p.suffix == ".mp4" else "application/json"
        return ranged(p.read_bytes(), request, ctype)

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: str, user: User = Depends(current_user)) -> Response:
        return page(request, "job.html", job=own_job(user, job_id).as_json())

    @app.post("/api/jobs/{job_id}/release", dependencies=[Depends(check_csrf)])
    def release(request: Request, job_id: str, user: User = Depends(current_user)) -> dict[str, Any]:
        job = own_job(user, job_id)
        if job.state not in ("done", "released"):
            raise ConsoleError(409, f"job {job_id} is {job.state}: only a finished export can be released")
        exp = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=svc.share_ttl_s)
        link = links.issue("export", job.job_id, camera_id=job.camera_id, case=job.case, by=user.username,
                           ttl_s=svc.share_ttl_s)  # nobody holds its token unless the event below is stored
        token = signer.dumps({"job": job.job_id, "n": link.link_id})
        audit(user, "share", camera_id=job.camera_id, case=job.case,
              detail={"job": job.job_id, "kind": job.kind, "expires_at": exp.isoformat(timespec="seconds"),
                      "what": "released export", "link": link.link_id})
        job.state = "released"
        base = (svc.public_url or str(request.base_url)).rstrip("/")
        rel = {"url": f"{base}/shared/{token}", "expires_at": exp.isoformat(timespec="seconds"), "by": user.username,
               "link_id": link.link_id, "revoke": f"/api/links/{link.link_id}/revoke"}
        job.released.append(rel)
        return rel

    @app.get("/shared/{token}")
    def shared(request: Request, token: str, file: str = "video") -> Response:
        """A released export: the link is the credential (signed, short-lived, recorded)."""
        try:
            data = signer.loads(token, max_age=svc.share_ttl_s)
        except SignatureExpired:
            raise ConsoleError(410, "this link has expired: ask the privacy office for a new one") from None
        except BadSignature:
            raise ConsoleError(403, "this link is not valid") from None
        job = svc.jobs.get(str(data.get("job")))
        if job is None or job.state != "released" or file not in ("video", "report"):
            raise ConsoleError(404, "the export behind this link is no longer available")
        live_link(str(data.get("n") or ""), "export", job.job_id)
        p = job.file(file)
        if p is None:
            raise ConsoleError(404, "the export behind this link is no longer available")
        client = request.client.host if request.client else ""
        record_read(f"link:{job.owner}", (), "share_open", ("job", job.job_id, file, str(data.get("n")), client),
                    camera_id=job.camera_id, case=job.case, detail={"job": job.job_id, "file": file,
                                                                    "client": client})
        ctype = "video/mp4" if p.suffix == ".mp4" else "application/json"
        return ranged(p.read_bytes(), request, ctype,
                      {"Content-Disposition": f'inline; filename="{job.case}-{p.name}"'})

    @app.get("/cameras/{camera_id}/subject", response_class=HTMLResponse)
    def subject_page(request: Request, camera_id: str, date: str = "", key: str = "",
                     user: User = Depends(current_user)) -> Response:
        camera_or_404(camera_id)
        role_or_403(user, "subject_export", camera_id, "export subject footage")
        dates = svc.catalog.dates(camera_id)
        date = check_date(date) if date else (dates[0] if dates else dt.datetime.now(dt.UTC).date().isoformat())
        tl = timeline(camera_id, date)
        return page(request, "subject.html", camera_id=camera_id, tl=tl, tl_json=_script_json(tl), date=date,
                    dates=dates, key=key)

    # ------------------------------------------------------------ holds, verify, cases
    @app.post("/api/holds", dependencies=[Depends(check_csrf)])
    async def holds(request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
        body = await json_body(request)
        cam = camera_or_404(str(body.get("camera_id") or ""))
        role = role_or_403(user, "hold", cam, "place or lift legal holds")
        if body.get("role"):  # a user with two hold roles says which one acts (only it lifts the hold)
            role = str(body["role"])
            if role not in user.roles or not svc.access.can([role], "hold", cam):
                raise ConsoleError(403, f"role {role[:40]!r}: not one of your roles that may hold camera {cam}")
        case = check_case(body.get("case"))
        t0, t1 = interval(cam, body)
        action = str(body.get("action") or "add")
        if action not in ("add", "remove"):
            raise ConsoleError(400, f"action: expected add or remove, got {action[:20]!r}")
        fn = svc.gov("legal_hold", "legal hold")
        try:
            result = fn(action=action, camera_id=cam, from_ms=t0, to_ms=t1, case=case, actor=user.username,
                        role=role)
        except VeilStreamError as exc:  # refused (another role's or case's hold) or nothing to lift: say why
            raise ConsoleError(int(getattr(exc, "status", 409)), str(exc)) from None
        res = dict(result) if isinstance(result, Mapping) else {"objects": result}
        res["keys"] = list(res.get("keys", ()))[:50]  # the audit event (recorded by the hold) has them all
        return {"action": action, "camera_id": cam, "case": case, **res}

    @app.post("/api/verify", dependencies=[Depends(check_csrf)])
    async def verify(request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
        body = await json_body(request)
        cam = camera_or_404(str(body.get("camera_id") or ""))
        role_or_403(user, "verify", cam, "verify the audit chain")
        date = check_date(str(body.get("date") or ""))
        fn = svc.gov("verify_day", "verify")
        res = dict(fn(camera_id=cam, date=date, actor=user.username))
        return {**res, "camera_id": cam, "date": date}

    @app.post("/api/shares", dependencies=[Depends(check_csrf)])
    async def share_segment(request: Request, user: User = Depends(current_user)) -> dict[str, Any]:
        """A short-lived presigned link to one redacted segment (never raw), recorded."""
        body = await json_body(request)
        key = str(body.get("key") or "")
        m = segment_key_or_404(key)
        cam = camera_or_404(m["camera"])
        role_or_403(user, "share", cam, "share footage by link")
        case = check_case(body.get("case"))
        try:
            ttl = int(body.get("ttl_s") or svc.share_ttl_s)
        except (TypeError, ValueError):
            raise ConsoleError(400, "ttl_s: expected seconds") from None
        if not 30 <= ttl <= svc.share_ttl_s:
            raise ConsoleError(400, f"ttl_s: between 30 and {svc.share_ttl_s} seconds")
        role = role_or_403(user, "view", cam, "share footage by link")
        store = svc.stores(role)
        if hasattr(store, "stat_object") and store.stat_object(key) is None:
            raise ConsoleError(404, f"no such segment: {key[:160]}")
        # served by the console (not a presigned storage URL), so that it can be revoked and
        # every opening is recorded; read with the sharing role's storage credentials
        link = links.issue("segment", key, camera_id=cam, case=case, by=user.username, ttl_s=ttl, role=role)
        exp = iso(int(link.expires_at * 1000))
        ev = audit(user, "share", camera_id=cam, case=case, keys=[key],
                   detail={"ttl_s": ttl, "expires_at": exp, "link": link.link_id, "what": "segment link"})
        base = (svc.public_url or str(request.base_url)).rstrip("/")
        return {"url": f"{base}/shared/segments/{seg_signer.dumps({'id': link.link_id})}", "key": key, "case": case,
                "expires_at": exp, "event_id": ev.get("event_id", ""), "link_id": link.link_id,
                "revoke": f"/api/links/{link.link_id}/revoke"}

    def live_link(link_id: str, kind: str, target: str | None = None) -> Link:
        """The registry's word on a link: unknown -> 404, revoked -> 410, expired -> 410."""
        link = links.get(link_id)
        if link is None or link.kind != kind or (target is not None and link.target != target):
            raise ConsoleError(404, "the footage behind this link is no longer available")
        if link.revoked_at is not None:
            raise ConsoleError(410, "this link was revoked: ask the privacy office for a new one")
        if time.time() >= link.expires_at:
            raise ConsoleError(410, "this link has expired: ask the privacy office for a new one")
        return link

    @app.get("/shared/segments/{token}")
    def shared_segment(request: Request, token: str) -> Response:
        """A shared redacted segment: the link is the credential (signed, short-lived, revocable, recorded)."""
        try:
            data = seg_signer.loads(token, max_age=max(svc.share_ttl_s, 30))
        except SignatureExpired:
            raise ConsoleError(410, "this link has expired: ask the privacy office for a new one") from None
        except BadSignature:
            raise ConsoleError(403, "this link is not valid") from None
        link = live_link(str(data.get("id") or "") if isinstance(data, dict) else "", "segment")
        client = request.client.host if request.client else ""
        record_read(f"link:{link.by}", (), "share_open", ("segment", link.link_id, client), camera_id=link.camera_id,
                    case=link.case, keys=[link.target], detail={"link": link.link_id, "client": client})
        data_ = get_or_error(svc.stores(link.role), link.target, link.target)
        name = link.target.rsplit("/", 1)[-1]
        return ranged(data_, request, "video/mp4", {"Content-Disposition": f'inline; filename="{link.case}-{name}"'})

    @app.post("/api/links/{link_id}/revoke", dependencies=[Depends(check_csrf)])
    def revoke_link(link_id: str, user: User = Depends(current_user)) -> dict[str, Any]:
        """Revoke a released export's or a shared segment's link before it expires (recorded first).
        Who issued it may, and anyone whose role may share that camera's footage."""
        link = links.get(link_id) if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", link_id) else None
        if link is None or not (link.by == user.username or svc.access.can(user.roles, "share", link.camera_id)):
            raise ConsoleError(404, f"no such link {link_id[:20]!r}")
        if link.revoked_at is None:
            audit(user, "share_revoke", camera_id=link.camera_id, case=link.case,
                  keys=[link.target] if link.kind == "segment" else [],
                  detail={"link": link.link_id, "kind": link.kind, "target": link.target, "issued_by": link.by})
            link = links.revoke(link_id, user.username) or link
            logger.info("link revoked link=%s kind=%s by=%s", link.link_id, link.kind, user.username)
            if link.kind == "export":
                job = svc.jobs.get(link.target)
                for rel in job.released if job else ():
                    if rel.get("link_id") == link.link_id:
                        rel["revoked_at"] = iso(int((link.revoked_at or 0) * 1000))
        return {"link_id": link.link_id, "kind": link.kind, "revoked_at": iso(int((link.revoked_at or 0) * 1000)),
                "revoked_by": link.revoked_by}

    @app.get("/api/audit")
    def api_audit(camera: str = "", user_q: str = "", case: str = "", action: str = "", date: str = "",
                  user: User = Depends(current_user)) -> dict[str, Any]:
        role_or_403(user, "audit", "", "read the audit trail")
        if date:
            check_date(date)
        evs = svc.audit.search(AuditQuery(camera, user_q, case, action, date))
        return {"events": evs}

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request, camera: str = "", user_q: str = "", case: str = "", action: str = "",
                   date: str = "", user: User = Depends(current_user)) -> Response:
        role_or_403(user, "audit", "", "read the audit trail")
        if date:
            check_date(date)
        evs = svc.audit.search(AuditQuery(camera, user_q, case, action, date))
        return page(request, "audit.html", events=evs, f={"camera": camera, "user_q": user_q, "case": case,
                                                          "action": action, "date": date},
                    cameras=svc.catalog.camera_ids())

    @app.get("/cases", response_class=HTMLResponse)
    def cases_page(request: Request, user: User = Depends(current_user)) -> Response:
        cams = [c for c in svc.catalog.camera_ids() if svc.access.can(user.roles, "case_export", c)]
        if not cams and not any(svc.access.can(user.roles, "subject_export", c) for c in svc.catalog.camera_ids()):
            raise ConsoleError(403, f"your role ({', '.join(user.roles)}) has no cases")
        return page(request, "cases.html", jobs=[j.as_json() for j in svc.jobs.list(user.username)], cameras=cams)

    def _sign_in(request: Request, user: User, how: str) -> None:
        old = str(request.session.get("sid") or "")
        if old:
            sessions.revoke(old)
        request.session.clear()  # a fresh session (and CSRF token) at every sign-in
        svc.audit.record(user.username, user.roles, "sign_in", detail={"via": how})  # no event, no session
        sid = sessions.create(user.username, user.roles, how)
        request.session.update({"user": user.username, "sid": sid, "auth": how, "csrf": secrets.token_urlsafe(32)})
        logger.info("signed in user=%s roles=%s via=%s", user.username, ",".join(user.roles), how)

    return app


def _quote(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="/")


def _safe_next(nxt: str) -> str:
    """Only same-site paths (no open redirect to another host)."""
    return nxt if nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt else "/cameras"


def _script_json(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>`` breakout)."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
