"""Health, sign-in (local users, OpenID Connect), sign-out and who is signed in."""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..audit import AuditError
from ..auth import User, oidc_user
from ..context import (
    ConsoleContext,
    ConsoleError,
    Ctx,
    CurrentUser,
    check_csrf,
    csrf_token,
    safe_next,
)

logger = logging.getLogger(__name__)

router = APIRouter()


def sign_in(ctx: ConsoleContext, request: Request, user: User, how: str) -> None:
    old = str(request.session.get("sid") or "")
    if old:
        ctx.sessions.revoke(old)
    request.session.clear()  # a fresh session (and CSRF token) at every sign-in
    ctx.svc.audit.record(user.username, user.roles, "sign_in", detail={"via": how})  # no event, no session
    sid = ctx.sessions.create(user.username, user.roles, how)
    request.session.update({"user": user.username, "sid": sid, "auth": how, "csrf": secrets.token_urlsafe(32)})
    logger.info("signed in user=%s roles=%s via=%s", user.username, ",".join(user.roles), how)


# ---------------------------------------------------------------- public
@router.get("/healthz", include_in_schema=True, tags=["public"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/login", response_class=HTMLResponse, tags=["public"])
def login_page(request: Request, ctx: Ctx, next: str = "/cameras") -> Response:  # noqa: A002 - the query name
    svc = ctx.svc
    return ctx.page(request, "login.html", next=safe_next(next), oidc=svc.oauth is not None,
                    local=svc.users is not None, message="")


@router.post("/login", response_class=HTMLResponse, tags=["public"], dependencies=[Depends(check_csrf)])
async def login(request: Request, ctx: Ctx) -> Response:
    svc = ctx.svc
    form = await request.form()
    username, password = str(form.get("username") or ""), str(form.get("password") or "")
    nxt = safe_next(str(form.get("next") or "/cameras"))
    if svc.users is None or not username:
        return ctx.page(request, "login.html", http_status=401, next=nxt, oidc=svc.oauth is not None,
                        local=svc.users is not None, message="unknown user or wrong password")
    name, addr = username[:128], request.client.host if request.client else ""
    wait = svc.throttle.retry_after(name, addr)
    if wait > 0:  # answered before any argon2 hash: guessing costs the console nothing while locked
        secs = max(1, math.ceil(wait))
        resp = ctx.page(request, "login.html", http_status=429, next=nxt, oidc=svc.oauth is not None, local=True,
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
        return ctx.page(request, "login.html", http_status=401, next=nxt, oidc=svc.oauth is not None,
                        local=True, message="unknown user or wrong password")
    svc.throttle.succeeded(name)
    sign_in(ctx, request, user, "local")
    return RedirectResponse(nxt, status_code=303)


@router.get("/auth/oidc/login", tags=["public"])
async def oidc_login(request: Request, ctx: Ctx) -> Response:
    svc = ctx.svc
    if svc.oauth is None:
        raise ConsoleError(404, "OpenID Connect sign-in is not configured (console.oidc.issuer)")
    return await svc.oauth.city.authorize_redirect(request, f"{ctx.base_url(request)}/auth/oidc/callback")  # type: ignore[no-any-return]


@router.get("/auth/oidc/callback", tags=["public"])
async def oidc_callback(request: Request, ctx: Ctx) -> Response:
    svc = ctx.svc
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
    sign_in(ctx, request, user, "oidc")
    return RedirectResponse("/cameras", status_code=303)


# ---------------------------------------------------------------- session
@router.post("/logout", dependencies=[Depends(check_csrf)])
def logout(request: Request, user: CurrentUser, ctx: Ctx) -> Response:
    ctx.sessions.revoke(str(request.session.get("sid") or ""))  # the cookie is worthless from here on
    request.session.clear()
    logger.info("signed out user=%s", user.username)
    try:
        ctx.audit(user, "sign_out")
    except AuditError:
        pass  # the session has ended either way; the error is in the log
    return RedirectResponse("/login", status_code=303)


@router.get("/", include_in_schema=True)
def home(user: CurrentUser) -> Response:
    return RedirectResponse("/cameras", status_code=303)


@router.get("/api/me")
def me(request: Request, user: CurrentUser) -> dict[str, Any]:
    return {"username": user.username, "roles": list(user.roles), "csrf_token": csrf_token(request)}
