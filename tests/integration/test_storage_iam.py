"""The IAM-style documents `veilstream policy render` writes, enforced by a real evaluator: the
local S3 server in IAM mode (moto with INITIAL_NO_AUTH_ACTION_COUNT: after the setup calls,
every request must be signed by an IAM user and is checked against that user's policies).

The sink's own least-privilege document must let the real sink code create the object-lock
bucket, set lifecycle and write segments under retention, and nothing destructive; a role
document must grant exactly its cameras and what it may read.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SETUP_CALLS = 15  # 5 users x (create user, put policy, create key): the iam_s3 fixture's unsigned calls


def test_rendered_documents_are_enforced_by_the_s3_server(iam_s3: Any, iam_user: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from minio import Minio
    from minio.error import S3Error

    from pipeline.governance import lifecycle_rules, retain_until
    from pipeline.governance.rules import documents_for
    from pipeline.objectstore import MinioSegmentStore, RetentionSpec
    from schemas.policy import parse_policy

    pol = parse_policy({"policy_id": "subway", "retention": {"redacted_days": 10},
                        "roles": {"analyst": {"read": ["redacted"], "cameras": ["line2-*"]},
                                  "auditor": {"read": ["audit", "manifests"]},
                                  "investigator": {"read": ["raw"], "cameras": ["line2-*"], "export": True}}})
    docs = documents_for({"subway": pol}, bucket="veil-redacted", audit_bucket="veil-audit", raw_bucket="veil-raw")
    keys = {name: iam_user(name, docs[doc]) for name, doc in
            (("sink", "veilstream-sink"), ("ana", "subway-analyst"), ("aud", "subway-auditor"),
             ("rawsink", "veilstream-raw-sink"), ("inv", "subway-investigator"))}

    # the real sink code, with the sink's credentials only
    monkeypatch.setenv("VEIL_IAM_AK", keys["sink"][0])
    monkeypatch.setenv("VEIL_IAM_SK", keys["sink"][1])
    store = MinioSegmentStore(iam_s3.url, "veil-redacted", access_key_env="VEIL_IAM_AK", secret_key_env="VEIL_IAM_SK",
                              object_lock=True)
    store.ensure_bucket()
    store.set_lifecycle(lifecycle_rules([pol]))
    keep = RetentionSpec(pol.retention.mode, retain_until(pol))
    seg2, seg1 = "camera=line2-a/date=2026-11-23/hour=10/a_b.mp4", "camera=line1-a/date=2026-11-23/hour=10/a_b.mp4"
    for key in (seg2, seg1):
        store.put_object(key, b"mp4" + key.encode(), "video/mp4", {"camera": "x"}, {"policy-id": "subway"},
                         retention=keep)
        store.put_object(key[:-4] + ".json", b"{}", "application/json", {}, {"policy-id": "subway"},
                         retention=keep)
    ret = store.get_retention(seg2)
    assert ret is not None and ret.until > dt.datetime.now(dt.UTC) + dt.timedelta(days=9)
    with pytest.raises(S3Error) as ei:
        store.client.remove_object("veil-redacted", seg2)
    assert ei.value.code == "AccessDenied"

    def client(user: str) -> Minio:
        return Minio(iam_s3.endpoint, access_key=keys[user][0], secret_key=keys[user][1], secure=False,
                     region="us-east-1")

    def can_get(user: str, key: str, bucket: str = "veil-redacted") -> bool:
        try:
            r = client(user).get_object(bucket, key)
            r.read()
            r.close()
            return True
        except S3Error as exc:
            assert exc.code == "AccessDenied", exc
            return False

    # the analyst reads line 2's segments and nothing else
    assert can_get("ana", seg2)
    assert not can_get("ana", seg1)
    assert not can_get("ana", seg2[:-4] + ".json")
    with pytest.raises(S3Error, match="AccessDenied"):
        client("ana").remove_object("veil-redacted", seg2)
    # the auditor reads manifests, not footage
    assert can_get("aud", seg1[:-4] + ".json") and can_get("aud", seg2[:-4] + ".json")
    assert not can_get("aud", seg2)

    # the raw vault: only the raw-sink role writes it (sealed), nobody but the investigator reads it
    from pipeline.governance.vault import LocalKeyFileProvider, RawVault, make_key_file

    monkeypatch.setenv("VEIL_IAM_RAW_AK", keys["rawsink"][0])
    monkeypatch.setenv("VEIL_IAM_RAW_SK", keys["rawsink"][1])
    raw = MinioSegmentStore(iam_s3.url, "veil-raw", access_key_env="VEIL_IAM_RAW_AK", secret_key_env="VEIL_IAM_RAW_SK",
                            object_lock=True)
    raw.ensure_bucket()
    key_file = Path(str(iam_s3.process.log_path)).parent / "master.key"
    make_key_file(key_file)
    vault = RawVault(raw, LocalKeyFileProvider(key_file))
    rkey = vault.put_chunk({"camera_id": "line2-a", "chunk_seq": 1, "pts_ms": [1795378500000], "codec": "h264"},
                           b"\x00\x00\x00\x01\x67raw", tags={"policy-id": "subway"}, retention=keep)
    vault._keys.clear()  # the next chunk of the day reads the stored wrapped key back (allowed to the raw sink)
    vault.put_chunk({"camera_id": "line2-a", "chunk_seq": 2, "pts_ms": [1795378501000], "codec": "h264"}, b"raw2",
                    tags={"policy-id": "subway"}, retention=keep)
    assert not can_get("rawsink", rkey, "veil-raw")  # it writes chunks, never reads one back
    for user in ("sink", "ana", "aud"):
        assert not can_get(user, rkey, "veil-raw"), user
    with pytest.raises(S3Error, match="AccessDenied"):  # the redacted sink cannot write there either
        client("sink").put_object("veil-raw", "camera=line2-a/x.raw", io.BytesIO(b"x"), 1)
    assert can_get("inv", rkey, "veil-raw")
