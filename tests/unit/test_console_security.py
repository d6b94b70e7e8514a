"""Findings of the console security review, one test (or table) per finding: every footage
read is recorded whatever its Range header, sessions end server-side, sign-in is throttled,
non-finite subject boxes are refused, released links can be revoked."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from pipeline.console.ranges import ByteRange, RangeError, parse_range

# the env fixture of test_console (in-memory stores, fake governance), used by name
# ruff: noqa: F811
from tests.unit.test_console import NOW_MS, client, csrf, env, events  # noqa: F401

SIZE = 256 * 40  # the fake segments' size


# ---------------------------------------------------------------- 1. Range headers and audit
@pytest.mark.parametrize("header, want", [
    (None, None), ("", None),
    ("bytes=0-", ByteRange(0, 99)), ("bytes=00-", ByteRange(0, 99)), ("BYTES = 0-9", ByteRange(0, 9)),
    ("bytes=10-19", ByteRange(10, 19)), ("bytes=90-", ByteRange(90, 99)), ("bytes=90-1000", ByteRange(90, 99)),
    ("bytes=-10", ByteRange(90, 99)), ("bytes=-999999999", ByteRange(0, 99)),
    ("bytes=-" + "9" * 5000, ByteRange(0, 99)), ("bytes=0-" + "0" * 5000 + "9", ByteRange(0, 9)),
    ("bytes=0-9,20-29", None), ("bytes=0-0,-1", None), ("bytes=0-9, ,", ByteRange(0, 9)),
    ("items=0-9", None), ("bytes", None),
])
def test_range_parser_follows_rfc_9110(header, want):
    assert parse_range(header, 100) == want


@pytest.mark.parametrize("header", ["bytes=", "bytes=,", "bytes=x-", "bytes=5-3", "bytes=1-2-3", "bytes=--5",
                                    "bytes=100-", "bytes=-0", "bytes=200-300,400-", "bytes=\u0661-"])
def test_range_parser_416(header):
    with pytest.raises(RangeError):
        parse_range(header, 100)


def _range_cases(full: bytes) -> list[tuple[str | None, int, bytes | None]]:
    return [(None, 200, full), ("bytes=0-", 206, full), ("bytes=00-", 206, full), ("bytes=-999999999", 206, full),
            ("bytes=-10", 206, full[-10:]), ("bytes=5-", 206, full[5:]), ("bytes=0-9,20-29", 200, full),
            ("bytes=1-2,00-", 200, full), ("items=0-5", 200, full), ("bytes=x-", 416, None),
            ("bytes=5-3", 416, None), (f"bytes={len(full)}-", 416, None)]


def test_every_segment_read_is_recorded_whatever_the_range(env):
    env.svc.recent.window_s = 0  # no dedupe: one event per request, counted exactly
    ana = client(env, "ana")
    key = env.keys["cam-001"][1]
    full = env.redacted.get_object(key)
    cases = _range_cases(full)
    for header, status, body in cases:
        r = ana.get(f"/api/segments/{key}", headers={"Range": header} if header else {})
        assert r.status_code == status, (header, r.status_code, r.text[:200])
        if body is not None:
            assert r.content == body, header
        else:
            assert r.headers["content-range"] == f"bytes */{len(full)}"
    views = [e for e in events(env) if e["action"] == "view" and e["keys"] == [key]]
    assert len(views) == len(cases) and all(e["actor"] == "ana" for e in views)


def test_one_event_covers_a_playback_within_the_window_only(env):
    now = [1000.0]
    env.svc.recent.clock = lambda: now[0]
    ana = client(env, "ana")
    key = env.keys["cam-001"][0]
    for h in ("bytes=0-", "bytes=100-199", "bytes=-50"):
        assert ana.get(f"/api/segments/{key}", headers={"Range": h}).status_code == 206
    assert len([e for e in events(env) if e["action"] == "view"]) == 1
    now[0] += env.svc.recent.window_s  # past the window: the next request (any range) records again
    assert ana.get(f"/api/segments/{key}", headers={"Range": "bytes=500-"}).status_code == 206
    assert len([e for e in events(env) if e["action"] == "view"]) == 2
    # another user, another object: their own events
    pia = client(env, "pia")
    assert pia.get(f"/api/segments/{key}", headers={"Range": "bytes=500-"}).status_code == 206
    assert ana.get(f"/api/segments/{env.keys['cam-001'][1]}", headers={"Range": "bytes=9-"}).status_code == 206
    assert len([e for e in events(env) if e["action"] == "view"]) == 4


def test_a_failed_event_covers_nothing(env):
    ana = client(env, "ana")
    key = env.keys["cam-001"][0]
    env.audit.fail_puts = 1
    assert ana.get(f"/api/segments/{key}", headers={"Range": "bytes=00-"}).status_code == 503
    r = ana.get(f"/api/segments/{key}", headers={"Range": "bytes=-999999999"})
    assert r.status_code == 206
    assert len([e for e in events(env) if e["action"] == "view"]) == 1


def test_manifest_reads_are_recorded(env):
    ana = client(env, "ana")
    key = env.keys["cam-001"][0]
    r = ana.get(f"/api/manifests/{key}")
    assert r.status_code == 200 and r.json()["key"] == key
    evs = [e for e in events(env) if e["action"] == "manifest"]
    assert len(evs) == 1 and evs[0]["actor"] == "ana" and evs[0]["keys"] == [key[:-4] + ".json"]
    assert ana.get(f"/api/manifests/{env.keys['cam-002'][0]}").status_code == 403
    assert len([e for e in events(env) if e["action"] == "manifest"]) == 1


def _finished_export(env, pia):
    body = {"camera_id": "cam-001", "from": NOW_MS - 100_000, "to": NOW_MS - 50_000, "case": "DSR-9",
            "subject": {"x": 10, "y": 20, "w": 50, "h": 80, "at": NOW_MS - 70_000}}
    jid = pia.post("/api/subject-requests", json=body, headers=csrf(pia)).json()["job_id"]
    for _ in range(200):
        if pia.get(f"/api/jobs/{jid}").json()["state"] in ("done", "failed"):
            break
        time.sleep(0.02)
    assert pia.get(f"/api/jobs/{jid}").json()["state"] == "done"
    return jid


def test_job_files_and_share_links_are_recorded_whatever_the_range(env):
    pia = client(env, "pia")
    jid = _finished_export(env, pia)
    env.svc.recent.window_s = 0
    full = pia.get(f"/api/jobs/{jid}/files/video").content
    cases = _range_cases(full)
    for header, status, _body in cases:
        r = pia.get(f"/api/jobs/{jid}/files/video", headers={"Range": header} if header else {})
        assert r.status_code == status, (header, r.status_code)
    previews = [e for e in events(env) if e["action"] == "preview"]
    assert len(previews) == len(cases) + 1
    rel = pia.post(f"/api/jobs/{jid}/release", headers=csrf(pia)).json()
    path = rel["url"].split("testserver", 1)[1]
    anon = TestClient(env.app, base_url="https://testserver")
    for header, status, _body in cases:
        r = anon.get(path, headers={"Range": header} if header else {})
        assert r.status_code == status, (header, r.status_code)
    opens = [e for e in events(env) if e["action"] == "share_open"]
    assert len(opens) == len(cases) and all(e["actor"] == "link:pia" for e in opens)


# ---------------------------------------------------------------- 4. non-finite subject boxes
@pytest.mark.parametrize("subject, words", [
    ({"x": "nan", "y": 20, "w": 50, "h": 80}, "finite"),
    ({"x": 10, "y": 20, "w": "inf", "h": 80}, "finite"),
    ({"x": 10, "y": "-Infinity", "w": 50, "h": 80}, "finite"),
    ({"x": float("nan"), "y": 20, "w": 50, "h": 80}, "finite"),
    ({"x": 10, "y": 20, "w": 50, "h": 80, "at": float("nan")}, "subject.at"),
    ({"x": 10, "y": 20, "w": 50, "h": 80, "at": 1e300}, "subject.at"),
    ({"x": 10, "y": 20, "w": 50, "h": 80, "at": "9" * 400}, "subject.at"),
])
def test_non_finite_subject_box_is_400(env, subject, words):
    pia = client(env, "pia")
    body = {"camera_id": "cam-001", "from": NOW_MS - 100_000, "to": NOW_MS - 50_000, "case": "DSR-1",
            "subject": {"at": NOW_MS - 70_000, **subject}}
    r = pia.post("/api/subject-requests", content=json.dumps(body),  # allow_nan: NaN / Infinity literals
                 headers={**csrf(pia), "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert words in err and "\n" not in err
    assert not env.calls


# ---------------------------------------------------------------- 2. server-side sessions
def _me(c: TestClient) -> int:
    return c.get("/api/me").status_code


def test_a_cookie_replayed_after_sign_out_is_refused(env):
    ana = client(env, "ana")
    stolen = dict(ana.cookies)
    assert _me(ana) == 200
    assert ana.post("/logout", headers=csrf(ana)).status_code == 303
    assert _me(ana) == 401
    replay = TestClient(env.app, base_url="https://testserver", follow_redirects=False, cookies=stolen)
    assert _me(replay) == 401
    key = env.keys["cam-001"][0]
    assert replay.get(f"/api/segments/{key}").status_code == 401
    assert any(e["action"] == "sign_out" and e["actor"] == "ana" for e in events(env))
    # signing in again gives a new session; the old cookie stays dead
    ana2 = client(env, "ana")
    assert _me(ana2) == 200 and _me(replay) == 401


def test_removed_user_and_changed_role_apply_to_open_sessions(env, tmp_path):
    from pipeline.console.auth import LocalUsers
    from tests.unit.test_console import HASH

    f = tmp_path / "users.yaml"

    def write(users: dict[str, str]) -> None:
        f.write_text("users:\n" + "".join(f"  - username: {u}\n    password_hash: '{HASH}'\n    roles: [{r}]\n"
                                          for u, r in users.items()))

    write({"ana": "analyst", "pia": "privacy-officer"})
    now = [0.0]
    env.svc.users = LocalUsers.from_file(f, reload_s=30)
    env.svc.users.clock = lambda: now[0]
    env.svc.users._checked = 0.0
    ana, pia = client(env, "ana"), client(env, "pia")
    key = env.keys["cam-002"][0]
    assert ana.get("/api/me").json()["roles"] == ["analyst"] and ana.get(f"/api/segments/{key}").status_code == 403
    write({"ana": "privacy-officer"})  # ana promoted, pia removed
    now[0] = 29.0
    assert _me(pia) == 200  # not yet looked at again
    now[0] = 31.0
    assert ana.get("/api/me").json()["roles"] == ["privacy-officer"]
    assert ana.get(f"/api/segments/{key}").status_code == 200
    assert _me(pia) == 401
    write({"ana": "privacy-officer", "pia": "privacy-officer"})  # back in the file: the old session stays ended
    now[0] = 70.0
    assert _me(pia) == 401
    f.write_text("users: [oops")  # a broken file keeps the users read before
    now[0] = 110.0
    assert _me(ana) == 200


def test_sessions_persist_hashed_and_revocations_too(tmp_path):
    from pipeline.console.sessions import SessionStore

    p = tmp_path / "console" / "sessions.json"
    now = [1000.0]
    a = SessionStore(p, max_age_s=100, clock=lambda: now[0])
    sid = a.create("ana", ("analyst",), "local")
    other = a.create("ana", ("analyst",), "local")
    assert sid not in p.read_text() and (p.stat().st_mode & 0o777) == 0o600
    b = SessionStore(p, max_age_s=100, clock=lambda: now[0])  # a restart
    assert b.get(sid).username == "ana" and b.get("forged") is None
    assert b.revoke(sid) and SessionStore(p, clock=lambda: now[0]).get(sid) is None
    assert SessionStore(p, clock=lambda: now[0]).get(other) is not None
    assert b.revoke_user("ana") == 1 and SessionStore(p, clock=lambda: now[0]).get(other) is None
    c = b.create("pia", ("privacy-officer",), "oidc")
    now[0] += 100
    assert b.get(c) is None  # expired
    p.write_text("{not json")
    assert SessionStore(p).get(c) is None  # unreadable: nobody is let in


# ---------------------------------------------------------------- 3. sign-in throttling
def _login_as(env, address: str = "10.0.0.1"):
    c = TestClient(env.app, base_url="https://testserver", follow_redirects=False, client=(address, 50000))
    import re

    def attempt(user: str, password: str):
        tok = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text)[1]
        return c.post("/login", data={"username": user, "password": password, "csrf_token": tok})
    return attempt


@pytest.fixture()
def counted(env):
    """The clock of the throttle, and how many passwords were hashed."""
    now = [1_800_000_000.0]
    env.svc.throttle.clock = lambda: now[0]
    hashed = []
    real = env.svc.users.authenticate

    def authenticate(username, password):
        hashed.append(username)
        return real(username, password)

    env.svc.users.authenticate = authenticate
    return now, hashed


def test_sixth_wrong_password_is_429_without_hashing(env, counted):
    from tests.unit.test_console import PASSWORD

    now, hashed = counted
    attempt = _login_as(env)
    for _ in range(5):
        assert attempt("ana", "wrong").status_code == 401
    assert len(hashed) == 5
    r = attempt("ana", "wrong")
    assert r.status_code == 429 and int(r.headers["retry-after"]) == 30 and "try again" in r.text
    assert attempt("ana", PASSWORD).status_code == 429  # even the right password, while locked
    assert len(hashed) == 5  # no hash computed while locked
    now[0] += 30
    assert attempt("ana", "wrong").status_code == 401  # one more try after the lock ...
    r = attempt("ana", PASSWORD)
    assert r.status_code == 429 and int(r.headers["retry-after"]) == 60  # ... doubled the next lock
    assert len(hashed) == 6
    now[0] += 60
    assert attempt("ana", PASSWORD).status_code == 303
    assert _login_as(env)("pia", PASSWORD).status_code == 303  # other users were never locked


def test_lock_is_logged_for_the_operator(env, counted, caplog):
    attempt = _login_as(env, "10.9.8.7")
    with caplog.at_level("WARNING", logger="pipeline.console.app"):
        for _ in range(5):
            attempt("ana", "wrong")
    lines = [r.getMessage() for r in caplog.records if "sign-in locked" in r.getMessage()]
    assert len(lines) == 1, lines
    assert all(w in lines[0] for w in ("user=ana", "by=user", "address=10.9.8.7", "failures=5", "locked_until=20"))


def test_a_success_resets_the_username(env, counted):
    from tests.unit.test_console import PASSWORD

    _now, hashed = counted
    attempt = _login_as(env)
    for _ in range(2):
        for _ in range(4):
            assert attempt("ana", "wrong").status_code == 401
        assert attempt("ana", PASSWORD).status_code == 303
    assert len(hashed) == 10


def test_address_limit_spans_usernames(env, counted):
    from tests.unit.test_console import PASSWORD

    now, hashed = counted
    env.svc.throttle.address_limit = 8
    attempt = _login_as(env, "192.0.2.7")
    for i in range(8):
        assert attempt(f"guess{i}", "wrong").status_code == 401
    r = attempt("ivan", PASSWORD)
    assert r.status_code == 429 and r.headers["retry-after"] == "30"
    assert len(hashed) == 8
    assert _login_as(env, "192.0.2.8")("ivan", PASSWORD).status_code == 303  # another address is not locked
    now[0] += 30
    assert attempt("ivan", PASSWORD).status_code == 303


# ---------------------------------------------------------------- 5. revocable links
def test_released_export_link_can_be_revoked(env):
    pia = client(env, "pia")
    jid = _finished_export(env, pia)
    first = pia.post(f"/api/jobs/{jid}/release", headers=csrf(pia)).json()
    second = pia.post(f"/api/jobs/{jid}/release", headers=csrf(pia)).json()
    anon = TestClient(env.app, base_url="https://testserver")
    p1, p2 = (r["url"].split("testserver", 1)[1] for r in (first, second))
    assert anon.get(p1).status_code == 200 and anon.get(p2).status_code == 200
    # only the issuer, or a role that may share the camera, may revoke; others learn nothing
    ana = client(env, "ana")
    assert ana.post(f"/api/links/{first['link_id']}/revoke", headers=csrf(ana)).status_code == 404
    assert pia.post(f"/api/links/{first['link_id']}/revoke").status_code == 403  # CSRF
    r = pia.post(first["revoke"], headers=csrf(pia))
    assert r.status_code == 200 and r.json()["revoked_by"] == "pia"
    for path in (p1, p1 + "?file=report"):
        r = anon.get(path, headers={"Range": "bytes=0-"})
        assert r.status_code == 410 and "revoked" in r.text
    assert anon.get(p2).status_code == 200  # the other link stays
    revs = [e for e in events(env) if e["action"] == "share_revoke"]
    assert len(revs) == 1 and revs[0]["actor"] == "pia" and revs[0]["detail"]["link"] == first["link_id"]
    assert pia.post(first["revoke"], headers=csrf(pia)).status_code == 200  # idempotent, not recorded twice
    assert len([e for e in events(env) if e["action"] == "share_revoke"]) == 1
    job = pia.get(f"/api/jobs/{jid}").json()
    assert [bool(r.get("revoked_at")) for r in job["released"]] == [True, False]


def test_segment_link_is_served_recorded_and_revocable(env):
    pia = client(env, "pia")
    key = env.keys["cam-001"][0]
    r = pia.post("/api/shares", json={"key": key, "case": "DSR-5", "ttl_s": 60}, headers=csrf(pia))
    assert r.status_code == 200, r.text
    link = r.json()
    path = link["url"].split("testserver", 1)[1]
    assert path.startswith("/shared/segments/") and link["key"] == key
    anon = TestClient(env.app, base_url="https://testserver")
    got = anon.get(path, headers={"Range": "bytes=-999999999"})
    assert got.status_code == 206 and got.content == env.redacted.get_object(key)
    assert anon.get(path[:-3] + "xyz").status_code == 403  # forged
    acts = [(e["action"], e["actor"]) for e in events(env)]
    assert ("share", "pia") in acts and ("share_open", "link:pia") in acts
    assert pia.post(link["revoke"], headers=csrf(pia)).status_code == 200
    assert anon.get(path).status_code == 410
    # a segment that is not there is not shared
    assert pia.post("/api/shares", json={"key": key + "x", "case": "DSR-5"}, headers=csrf(pia)).status_code == 404


def test_segment_link_expires(env, monkeypatch):
    pia = client(env, "pia")
    key = env.keys["cam-001"][0]
    link = pia.post("/api/shares", json={"key": key, "case": "DSR-5", "ttl_s": 30}, headers=csrf(pia)).json()
    path = link["url"].split("testserver", 1)[1]
    anon = TestClient(env.app, base_url="https://testserver")
    assert anon.get(path).status_code == 200
    later = time.time() + 31
    monkeypatch.setattr(time, "time", lambda: later)
    r = anon.get(path)
    assert r.status_code == 410 and "expired" in r.text


def test_cli_revocation_reaches_the_running_console(env, tmp_path):
    from pipeline.console.links import LinkRegistry, revoke_from_cli

    env.svc.links.__init__(tmp_path / "links.json")  # the console's registry, in its work_dir
    pia = client(env, "pia")
    key = env.keys["cam-001"][0]
    link = pia.post("/api/shares", json={"key": key, "case": "DSR-5"}, headers=csrf(pia)).json()
    path = link["url"].split("testserver", 1)[1]
    anon = TestClient(env.app, base_url="https://testserver")
    assert anon.get(path).status_code == 200
    recorded = []
    out = revoke_from_cli(tmp_path, link["link_id"], "officer.kim", lambda action, **kw: recorded.append((action, kw)))
    assert out.revoked_by == "officer.kim"
    assert recorded[0][0] == "share_revoke" and recorded[0][1]["object_keys"] == [key]
    assert anon.get(path).status_code == 410  # the console re-read the file
    assert LinkRegistry(tmp_path / "links.json").get(link["link_id"]).revoked_at is not None
    with pytest.raises(LookupError, match="no link"):
        revoke_from_cli(tmp_path, "nope", "x", lambda *a, **k: None)
    with pytest.raises(LookupError, match="work_dir"):
        revoke_from_cli(None, link["link_id"], "x", lambda *a, **k: None)
    assert len(recorded) == 1


def test_unreadable_link_registry_refuses_every_link(env, tmp_path):
    f = tmp_path / "links.json"
    env.svc.links.__init__(f)
    pia = client(env, "pia")
    link = pia.post("/api/shares", json={"key": env.keys["cam-001"][0], "case": "C-1"}, headers=csrf(pia)).json()
    path = link["url"].split("testserver", 1)[1]
    anon = TestClient(env.app, base_url="https://testserver")
    assert anon.get(path).status_code == 200
    f.write_text("{broken")
    assert anon.get(path).status_code == 404


def test_cli_revoke_link_command(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    import pipeline.governance.context as gcontext
    from pipeline.cli import main
    from pipeline.console.links import LinkRegistry

    work = tmp_path / "work"
    reg = LinkRegistry(work / "links.json")
    link = reg.issue("segment", "camera=cam-001/x.mp4", camera_id="cam-001", case="C-1", by="pia", ttl_s=600,
                     role="privacy-officer")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"console: {{work_dir: {work}}}\n")
    recorded = []
    monkeypatch.setattr(gcontext.Governance, "from_config", classmethod(
        lambda cls, cfg, actor=None, **kw: SimpleNamespace(actor=actor or "os-user",
                                                           record=lambda action, **k: recorded.append(action))))
    assert main(["console", "--config", str(cfg), "--revoke-link", link.link_id, "--actor", "kim"]) == 0
    assert "revoked by kim" in capsys.readouterr().out and recorded == ["share_revoke"]
    assert LinkRegistry(work / "links.json").get(link.link_id).revoked_by == "kim"
    assert main(["console", "--config", str(cfg), "--revoke-link", "nope"]) != 0
    assert "no link" in capsys.readouterr().err
