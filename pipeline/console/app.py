"""The console web application (FastAPI): pages, the JSON API behind them, and the checks.

Every route but sign-in, health and static files needs a signed-in user; every footage
route also asks :class:`~pipeline.console.access.AccessControl` whether one of the
user's roles may read that camera (the policies' own role documents), and records an
audit event before a byte of footage leaves. Unsafe methods need the session's CSRF token
(``X-CSRF-Token`` header or ``csrf_token`` form field). Errors are one line: a page for
browsers, ``{"error": ...}`` for ``/api``; never a traceback.

The routes live in :mod:`pipeline.console.routes`, one ``APIRouter`` per concern; what they
share (services, templates, link signers, guards) is the
:class:`~pipeline.console.context.ConsoleContext` this module builds and keeps on
``app.state.console``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from .audit import AuditError
from .context import (
    HERE,
    ConsoleContext,
    ConsoleError,
    NotSignedInError,
    Services,
    quote_path,
    wants_json,
)
from .exports import NotAvailableError
from .routes import ROUTERS

__all__ = ["SESSION_COOKIE", "Services", "create_app"]

logger = logging.getLogger(__name__)

SESSION_COOKIE = "veil_session"
CSP = ("default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
       "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def create_app(svc: Services, *, secure_cookies: bool = True, session_max_age_s: int = 8 * 3600) -> FastAPI:
    app = FastAPI(title="VeilStream console", version="1", docs_url=None, redoc_url=None,
                  description="De-identified footage, subject requests, investigations and the audit trail.")
    app.state.console = ConsoleContext.build(svc, session_max_age_s)
    app.state.services = svc
    app.add_middleware(SessionMiddleware, secret_key=svc.secret_key, session_cookie=SESSION_COOKIE,
                       max_age=session_max_age_s, same_site="lax", https_only=secure_cookies)
    app.middleware("http")(security_headers)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for exc_class, handler in HANDLERS:
        app.add_exception_handler(exc_class, handler)
    for router in ROUTERS:
        app.include_router(router)
    return app


async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    resp: Response = await call_next(request)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    resp.headers.setdefault("Content-Security-Policy", CSP)
    return resp


# ---------------------------------------------------------------- errors: one line, a page or JSON
def _error(request: Request, status: int, message: str) -> Response:
    ctx: ConsoleContext = request.app.state.console
    return ctx.error(request, status, message)


async def _console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleError)
    resp = _error(request, exc.status, exc.message)
    resp.headers.update(exc.headers)
    return resp


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    if wants_json(request) or request.method != "GET":
        return JSONResponse({"error": "sign in first", "status": 401}, status_code=401)
    nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote_path(nxt)}", status_code=303)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    msg = exc.detail if isinstance(exc.detail, str) else "request refused"
    if exc.status_code == 404 and msg == "Not Found":
        msg = f"no such page: {request.url.path[:100]}"
    return _error(request, exc.status_code, msg)


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return _error(request, 400, "invalid request: " + "; ".join(parts))


async def _audit_down(request: Request, exc: Exception) -> Response:
    return _error(request, 503, str(exc))


async def _not_available(request: Request, exc: Exception) -> Response:
    return _error(request, 501, str(exc))


async def _crash(request: Request, exc: Exception) -> Response:
    ref = uuid.uuid4().hex[:8]
    logger.error("request failed ref=%s path=%s error=%s: %s", ref, request.url.path, type(exc).__name__, exc,
                 exc_info=(type(exc), exc, exc.__traceback__))
    return _error(request, 500, f"internal error (reference {ref}); the details are in the console log")


HANDLERS: tuple[tuple[type[Exception], Callable[[Request, Exception], Awaitable[Response]]], ...] = (
    (ConsoleError, _console_error), (NotSignedInError, _not_signed_in), (StarletteHTTPException, _http_error),
    (RequestValidationError, _invalid), (AuditError, _audit_down), (NotAvailableError, _not_available),
    (Exception, _crash))
"""Registered in this order, as the decorators of the single-closure app did."""


