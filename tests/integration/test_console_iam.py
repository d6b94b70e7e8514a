"""The console on least-privilege credentials, enforced by the local S3 server in IAM mode:
its own (``veilstream-console``: list, manifests, audit events) for the camera list and
timelines, and the analyst's rendered role document for the analyst's footage. Storage and
console agree: what the console refuses, the analyst's credentials could not fetch either."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SETUP_CALLS = 9  # 3 users x (create user, put policy, create key): the iam_s3 fixture's unsigned calls


def test_console_works_on_least_privilege_credentials(iam_s3: Any, iam_user: Any, tmp_path: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient
    from minio.error import S3Error

    from pipeline.console.access import AccessControl, Buckets, console_document
    from pipeline.console.app import Services, create_app
    from pipeline.console.audit import AuditLog, AuditQuery
    from pipeline.console.auth import LocalUsers, User, hash_password
    from pipeline.console.catalog import Catalog
    from pipeline.console.jobs import JobManager
    from pipeline.governance.rules import documents_for
    from pipeline.objectkeys import manifest_key, segment_key
    from pipeline.objectstore import MinioSegmentStore
    from schemas.policy import parse_policy

    pols = {"subway": parse_policy({"policy_id": "subway", "roles": {
                "analyst": {"read": ["redacted", "manifests"], "cameras": ["line2-*"]}}}),
            "street": parse_policy({"policy_id": "street"})}
    b = Buckets("veil-redacted", "veil-audit", "veil-raw")
    docs = documents_for(pols, bucket=b.redacted, audit_bucket=b.audit, raw_bucket=b.raw)
    keys = {user: iam_user(user, doc) for user, doc in (
        ("admin", {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["*"]}]}),
        ("console", console_document(bucket=b.redacted, audit_bucket=b.audit)),
        ("ana", docs["subway-analyst"]))}

    def store(user: str, bucket: str) -> MinioSegmentStore:
        monkeypatch.setenv(f"K_{user}", keys[user][0])
        monkeypatch.setenv(f"S_{user}", keys[user][1])
        return MinioSegmentStore(iam_s3.endpoint, bucket, access_key_env=f"K_{user}", secret_key_env=f"S_{user}",
                                 region="us-east-1")

    admin = store("admin", b.redacted)
    admin.ensure_bucket()
    store("admin", b.audit).ensure_bucket()
    now = int(time.time() * 1000)
    start = now - now % 60_000 - 120_000
    seg = {}
    for cam, pol in (("line2-a", "subway"), ("street-1", "street")):
        key = segment_key(cam, start, start + 60_000)
        admin.put_object(key, b"\x00\x00\x00\x18ftypisom" + bytes(4000), "video/mp4", {}, {})
        admin.put_object(manifest_key(key), json.dumps({"frames": 10, "fps": 25, "policy_id": pol, "width": 64,
                                                        "height": 48}).encode(), "application/json", {}, {})
        seg[cam] = key
    registry = {"line2-a": type("C", (), {"policy_id": "subway", "enabled": True, "notice": {}})(),
                "street-1": type("C", (), {"policy_id": "street", "enabled": True, "notice": {}})()}
    console_store, analyst_store = store("console", b.redacted), store("ana", b.redacted)
    catalog = Catalog(console_store, lambda: registry)
    svc = Services(access=AccessControl(pols, b, catalog.policy_of), catalog=catalog,
                   audit=AuditLog(store("console", b.audit)), jobs=JobManager(tmp_path / "jobs"),
                   users=LocalUsers({"ana": User("ana", ("analyst",), hash_password("pw"))}),
                   stores=lambda role: analyst_store if role == "analyst" else console_store)
    try:
        c = TestClient(create_app(svc, secure_cookies=False), follow_redirects=False)
        tok = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text)[1]
        assert c.post("/login", data={"username": "ana", "password": "pw", "csrf_token": tok}).status_code == 303
        assert [r["camera_id"] for r in c.get("/api/cameras").json()["cameras"]] == ["line2-a"]
        day = seg["line2-a"].split("date=")[1][:10]
        assert len(c.get(f"/api/cameras/line2-a/days/{day}").json()["segments"]) == 1
        r = c.get(f"/api/segments/{seg['line2-a']}", headers={"Range": "bytes=0-11"})
        assert r.status_code == 206 and r.content[4:8] == b"ftyp"  # read with the analyst's own credentials
        assert c.get(f"/api/segments/{seg['street-1']}").status_code == 403
        # the storage agrees: the analyst's credentials cannot fetch it, the console's cannot read footage
        for s, key in ((analyst_store, seg["street-1"]), (console_store, seg["line2-a"])):
            with pytest.raises(S3Error) as e:
                s.get_object(key)
            assert e.value.code == "AccessDenied"
        with pytest.raises(S3Error):
            store("console", b.audit).client.remove_object(b.audit, next(iter(
                store("admin", b.audit).list_objects("events/"))))
        assert any(e["action"] == "view" and e["actor"] == "ana" for e in svc.audit.search(AuditQuery()))
    finally:
        svc.jobs.close()
