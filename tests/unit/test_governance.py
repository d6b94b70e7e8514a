"""Policies: typed parsing, loading a policies directory, and what they render to
(object-lock retention, lifecycle rules, IAM-style documents)."""

from __future__ import annotations

import datetime as dt
import fnmatch

import pytest
import yaml

from pipeline.governance import lifecycle_rules, retain_until, role_documents, sink_document
from pipeline.governance.rules import documents_for
from schemas.errors import ConfigError
from schemas.policy import load_policies, load_policy, parse_policy

SUBWAY = {
    "policy_id": "subway", "version": 3, "classes": ["face", "plate", "person"], "style": "blur",
    "strength": 0.8, "on_failure": "drop", "thresholds": {"face": 0.3}, "padding": {"face": 0.4},
    "zones": [{"name": "ticket-window", "polygon": [[0, 0], [0.2, 0], [0.2, 0.2]], "normalized": True}],
    "retention": {"redacted_days": 90, "mode": "COMPLIANCE"},
    "roles": {"analyst": {"read": ["redacted", "manifests"], "cameras": ["line2-*"]},
              "auditor": {"read": ["audit"]}},
}


def test_parse_policy_fills_defaults():
    p = parse_policy({"policy_id": "default"})
    assert p.classes == ("face", "plate") and p.style == "mosaic" and p.on_failure == "mask"
    assert p.retention.redacted_days == 30 and p.retention.raw_days == 0 and p.retention.mode == "GOVERNANCE"
    assert p.roles == () and p.zones == () and p.version == 1


def test_parse_policy_full():
    p = parse_policy(SUBWAY)
    assert p.classes == ("face", "plate", "person") and p.strength == 0.8
    assert p.thresholds == {"face": 0.3} and p.padding == {"face": 0.4}
    assert p.retention.redacted_days == 90 and p.retention.mode == "COMPLIANCE"
    assert [r.name for r in p.roles] == ["analyst", "auditor"]
    assert p.roles[0].cameras == ("line2-*",) and p.roles[1].cameras == ("*",)


@pytest.mark.parametrize("doc, needle", [
    ([], "expected a mapping"),
    ({}, "policy_id"),
    ({"policy_id": "p", "classes": ["faces"]}, "classes"),
    ({"policy_id": "p", "retention": {"redacted_days": 0}}, "retention.redacted_days"),
    ({"policy_id": "p", "on_failure": "pass"}, "on_failure"),
])
def test_parse_policy_errors_name_the_key(doc, needle):
    with pytest.raises(ConfigError) as ei:
        parse_policy(doc)
    assert needle in str(ei.value)


def test_load_policies_directory(tmp_path):
    (tmp_path / "subway.yaml").write_text(yaml.safe_dump(SUBWAY))
    (tmp_path / "default.yml").write_text("policy_id: default\n")
    (tmp_path / "README.md").write_text("not a policy")
    (tmp_path / "..data").mkdir()  # what a mounted ConfigMap also holds
    pols = load_policies(tmp_path)
    assert sorted(pols) == ["default", "subway"]
    assert load_policy(tmp_path / "subway.yaml") == pols["subway"]


def test_load_policies_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        load_policies(tmp_path / "nope")
    (tmp_path / "wrong.yaml").write_text("policy_id: right\n")
    with pytest.raises(ConfigError, match="must equal the file name"):
        load_policies(tmp_path)
    (tmp_path / "wrong.yaml").write_text("policy_id: [\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_policies(tmp_path)
    with pytest.raises(ConfigError, match="policy file .* not found"):
        load_policy(tmp_path / "missing.yaml")


def test_retain_until_adds_the_policy_days():
    p = parse_policy(SUBWAY)
    now = dt.datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=dt.UTC)
    assert retain_until(p, now) == dt.datetime(2027, 2, 21, 10, 0, 0, tzinfo=dt.UTC)
    with pytest.raises(ValueError):
        retain_until(p, dt.datetime(2026, 1, 1))


def test_lifecycle_rules_one_per_policy_by_tag():
    assert lifecycle_rules([]) == []
    rules = lifecycle_rules([parse_policy(SUBWAY), parse_policy({"policy_id": "default"})])
    assert [(r.rule_id, r.tag, r.days) for r in rules] == [
        ("veilstream-policy-default", ("policy-id", "default"), 30),
        ("veilstream-policy-subway", ("policy-id", "subway"), 90)]


def _allowed(doc, action, resource):
    """A tiny IAM evaluator: explicit deny wins, else any allow (no conditions)."""
    hit = {"Allow": False, "Deny": False}
    for st in doc["Statement"]:
        if action in st["Action"] and any(fnmatch.fnmatchcase(resource, r) for r in st["Resource"]):
            hit[st["Effect"]] = True
    return hit["Allow"] and not hit["Deny"]


def test_role_documents_grant_only_what_the_role_reads():
    docs = role_documents(parse_policy(SUBWAY), bucket="veil-redacted", audit_bucket="veil-audit",
                          raw_bucket="veil-raw")
    assert sorted(docs) == ["analyst", "auditor"]
    a, au = docs["analyst"], docs["auditor"]
    seg = "arn:aws:s3:::veil-redacted/camera=line2-cam7/date=2026-11-23/hour=10/a_b.mp4"
    assert _allowed(a, "s3:GetObject", seg)
    assert _allowed(a, "s3:GetObject", seg[:-4] + ".json")
    assert not _allowed(a, "s3:GetObject", seg.replace("line2-cam7", "line1-cam1"))
    assert not _allowed(a, "s3:GetObject", "arn:aws:s3:::veil-raw/camera=line2-cam7/x")
    assert not _allowed(a, "s3:GetObject", "arn:aws:s3:::veil-audit/x")
    assert not _allowed(a, "s3:DeleteObject", seg)
    assert not _allowed(a, "s3:BypassGovernanceRetention", seg)
    assert _allowed(au, "s3:GetObject", "arn:aws:s3:::veil-audit/2026/x.json")
    assert not _allowed(au, "s3:GetObject", seg)
    listing = [s for s in a["Statement"] if s["Sid"] == "ListRedacted"][0]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["camera=line2-*/", "camera=line2-*/*"]


def test_role_documents_reject_globs_that_escape_the_prefix():
    bad = dict(SUBWAY, roles={"x": {"read": ["redacted"], "cameras": ["a/../b"]}})
    with pytest.raises(ValueError, match="camera glob"):
        role_documents(parse_policy(bad), bucket="b1x", audit_bucket="b2x", raw_bucket="b3x")


def test_sink_document_writes_but_never_deletes():
    d = sink_document(bucket="veil-redacted")
    key = "arn:aws:s3:::veil-redacted/camera=c1/date=2026-11-23/hour=10/a_b.mp4"
    assert _allowed(d, "s3:PutObject", key) and _allowed(d, "s3:PutObjectRetention", key)
    assert not _allowed(d, "s3:DeleteObject", key)
    assert not _allowed(d, "s3:PutObject", "arn:aws:s3:::other/camera=c1/x")


def test_documents_for_names_roles_by_policy():
    pols = {"subway": parse_policy(SUBWAY), "default": parse_policy({"policy_id": "default"})}
    names = sorted(documents_for(pols, bucket="r1x", audit_bucket="a1x", raw_bucket="w1x"))
    assert names == ["subway-analyst", "subway-auditor", "veilstream-raw-sink", "veilstream-sink"]


# The S3 actions of AWS's service authorization reference that VeilStream's documents may name
# (MinIO implements the same names). moto 5.2.6 checked lifecycle writes against
# "s3:PutBucketLifecycleConfiguration", an action that does not exist: the documents keep the
# real name, and the lock file holds moto back (requirements/test.lock).
REAL_S3_ACTIONS = {
    "s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging", "s3:GetObjectRetention",
    "s3:GetObjectLegalHold", "s3:ListBucket", "s3:ListBucketVersions", "s3:PutObject", "s3:PutObjectTagging",
    "s3:PutObjectRetention", "s3:PutObjectLegalHold", "s3:DeleteObject", "s3:DeleteObjectVersion",
    "s3:BypassGovernanceRetention", "s3:PutLifecycleConfiguration", "s3:GetLifecycleConfiguration",
    "s3:CreateBucket", "s3:GetBucketLocation", "s3:GetBucketObjectLockConfiguration",
    "s3:PutBucketObjectLockConfiguration", "s3:GetBucketVersioning", "s3:PutBucketVersioning",
}


def test_rendered_documents_name_only_real_s3_actions():
    from pipeline.console.access import console_document
    from pipeline.governance.rules import raw_sink_document

    pol = parse_policy({"policy_id": "p", "roles": {
        "analyst": {"read": ["redacted", "manifests"], "cameras": ["a-*"]},
        "auditor": {"read": ["audit"]}, "investigator": {"read": ["raw"], "export": True}}})
    docs = [*documents_for({"p": pol}, bucket="r", audit_bucket="a", raw_bucket="w").values(),
            sink_document(bucket="r"), raw_sink_document(raw_bucket="w"),
            console_document(bucket="r", audit_bucket="a")]
    named = {a for d in docs for st in d["Statement"]
             for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    assert named and named <= REAL_S3_ACTIONS, sorted(named - REAL_S3_ACTIONS)
    assert "s3:PutLifecycleConfiguration" in named
