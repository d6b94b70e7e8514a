"""OpenID Connect sign-in against a fake identity provider on loopback (discovery, JWKS,
authorization code with PKCE, RS256 ID tokens): the redirect the console builds, the
callback, roles from the token's claim, and the refusals."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
import urllib.parse
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


class FakeIdP:
    """Just enough of an OpenID provider: one client, users chosen by the test."""

    def __init__(self, port: int) -> None:
        from authlib.jose import JsonWebKey

        self.issuer = f"http://127.0.0.1:{port}"
        self.key = JsonWebKey.generate_key("RSA", 2048, is_private=True)
        self.kid = "k1"
        self.codes: dict[str, dict] = {}
        self.claims = {"preferred_username": "officer.kim", "roles": ["privacy-officer", "mayor"]}
        self.token_requests: list[dict] = []

    def app(self):
        from authlib.jose import jwt
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, RedirectResponse
        from starlette.routing import Route

        def discovery(_r: Request):
            return JSONResponse({"issuer": self.issuer, "authorization_endpoint": self.issuer + "/authorize",
                                 "token_endpoint": self.issuer + "/token", "jwks_uri": self.issuer + "/jwks",
                                 "response_types_supported": ["code"], "subject_types_supported": ["public"],
                                 "id_token_signing_alg_values_supported": ["RS256"],
                                 "code_challenge_methods_supported": ["S256"]})

        def jwks(_r: Request):
            pub = self.key.as_dict(is_private=False)
            pub["kid"] = self.kid
            return JSONResponse({"keys": [pub]})

        def authorize(r: Request):
            q = r.query_params
            code = secrets.token_urlsafe(12)
            self.codes[code] = dict(q)
            return RedirectResponse(f"{q['redirect_uri']}?{urllib.parse.urlencode({'code': code, 'state': q['state']})}",
                                    status_code=302)

        async def token(r: Request):
            form = dict(await r.form())
            self.token_requests.append(form)
            req = self.codes.pop(form.get("code", ""), None)
            if req is None:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if challenge != req.get("code_challenge"):
                return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, status_code=400)
            now = int(time.time())
            claims = {"iss": self.issuer, "aud": req["client_id"], "sub": "u-1", "iat": now, "exp": now + 300,
                      "nonce": req.get("nonce"), **self.claims}
            id_token = jwt.encode({"alg": "RS256", "kid": self.kid}, claims, self.key).decode()
            return JSONResponse({"access_token": "at", "token_type": "Bearer", "expires_in": 300,
                                 "id_token": id_token})

        return Starlette(routes=[Route("/.well-known/openid-configuration", discovery), Route("/jwks", jwks),
                                 Route("/authorize", authorize), Route("/token", token, methods=["POST"])])


@pytest.fixture(scope="module")
def idp():
    import uvicorn

    from pipeline.devstack import free_port

    port = free_port()
    fake = FakeIdP(port)
    server = uvicorn.Server(uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(100):
        try:
            httpx.get(fake.issuer + "/jwks", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield fake
    server.should_exit = True
    t.join(10)


@pytest.fixture()
def console(idp, monkeypatch, tmp_path):
    from pipeline.console.access import AccessControl, Buckets
    from pipeline.console.app import Services, create_app
    from pipeline.console.audit import AuditLog
    from pipeline.console.auth import build_oauth
    from pipeline.console.catalog import Catalog
    from pipeline.console.jobs import JobManager
    from schemas.policy import parse_policy
    from tests.fakes import InMemoryObjectStore

    monkeypatch.setenv("VEIL_OIDC_CLIENT_SECRET", "s3cr3t")
    oidc = SimpleNamespace(issuer=idp.issuer, client_id="veilstream", client_secret_env="VEIL_OIDC_CLIENT_SECRET",
                           client_secret_file=None, scope="openid profile", roles_claim="roles",
                           username_claim="preferred_username")
    store, audit = InMemoryObjectStore(), InMemoryObjectStore()
    catalog = Catalog(store, lambda: {})
    access = AccessControl({"default": parse_policy({"policy_id": "default"})}, Buckets("r", "a", "w"),
                           catalog.policy_of)
    svc = Services(access=access, catalog=catalog, audit=AuditLog(audit), jobs=JobManager(tmp_path / "jobs"),
                   users=None, stores=lambda _r: store, oauth=build_oauth(oidc), oidc=oidc)
    yield SimpleNamespace(client=TestClient(create_app(svc, secure_cookies=False), follow_redirects=False),
                          audit=audit)
    svc.jobs.close()


def _login(c: TestClient, idp: FakeIdP):
    r = c.get("/auth/oidc/login")
    assert r.status_code == 302, r.text
    loc = urllib.parse.urlsplit(r.headers["location"])
    q = dict(urllib.parse.parse_qsl(loc.query))
    back = httpx.get(r.headers["location"], follow_redirects=False)  # the browser at the IdP
    cb = urllib.parse.urlsplit(back.headers["location"])
    return loc, q, cb


def test_redirect_then_callback_signs_in_with_the_roles_of_the_token(idp, console):
    c = console.client
    assert "sign in with the city" in c.get("/login").text.lower()
    loc, q, cb = _login(c, idp)
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == idp.issuer + "/authorize"
    assert q["client_id"] == "veilstream" and q["response_type"] == "code"
    assert q["redirect_uri"] == "http://testserver/auth/oidc/callback"
    assert q["code_challenge_method"] == "S256" and q["code_challenge"] and q["nonce"] and q["state"]
    assert "openid" in q["scope"].split()
    r = c.get(f"{cb.path}?{cb.query}")
    assert r.status_code == 303 and r.headers["location"] == "/cameras", r.text
    me = c.get("/api/me").json()
    assert me == {**me, "username": "officer.kim", "roles": ["privacy-officer"]}  # unknown roles dropped
    assert idp.token_requests[-1]["code_verifier"]


def test_forged_state_and_tokens_without_a_console_role_are_refused(idp, console):
    c = console.client
    _loc, _q, cb = _login(c, idp)
    params = dict(urllib.parse.parse_qsl(cb.query))
    r = c.get(cb.path, params={**params, "state": "forged"})
    assert r.status_code == 401 and "sign-in with the identity provider failed" in r.text
    assert "Traceback" not in r.text
    idp.claims = {"preferred_username": "visitor", "roles": ["mayor"]}
    try:
        _loc, _q, cb = _login(c, idp)
        r = c.get(f"{cb.path}?{cb.query}")
        assert r.status_code == 403 and "no console role" in r.text
        assert c.get("/api/me").status_code == 401
    finally:
        idp.claims = {"preferred_username": "officer.kim", "roles": ["privacy-officer", "mayor"]}
