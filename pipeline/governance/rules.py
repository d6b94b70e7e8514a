"""Policy -> retention, lifecycle rules and IAM-style documents (pure; see the package doc)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.policy import Policy

__all__ = ["LifecycleRule", "audit_retention", "lifecycle_rules", "raw_lifecycle_rules", "raw_sink_document", "retain_until",
           "role_documents", "sink_document"]

POLICY_TAG = "policy-id"
"""The object tag every segment and manifest carries; lifecycle rules filter on it."""


@dataclass(frozen=True)
class LifecycleRule:
    """Expire current objects tagged ``policy-id=<policy_id>`` after ``days``; versions a
    replay superseded (object lock keeps them) after the same number of days."""

    rule_id: str
    policy_id: str
    days: int

    @property
    def tag(self) -> tuple[str, str]:
        return (POLICY_TAG, self.policy_id)


def retain_until(policy: Policy, now: dt.datetime | None = None) -> dt.datetime:
    """Object-lock retain-until for an object written ``now`` (UTC, whole seconds)."""
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return (now.astimezone(dt.UTC) + dt.timedelta(days=policy.retention.redacted_days)).replace(
        microsecond=0)


def lifecycle_rules(policies: Iterable[Policy]) -> list[LifecycleRule]:
    """One rule per policy, sorted by id (S3 rule ids: at most 255 chars, unique)."""
    return [LifecycleRule(rule_id=f"veilstream-policy-{p.policy_id}"[:255], policy_id=p.policy_id,
                          days=p.retention.redacted_days)
            for p in sorted(policies, key=lambda p: p.policy_id)]


AUDIT_MIN_DAYS = 365


def audit_retention(policies: Iterable[Policy], now: dt.datetime | None = None) -> tuple[str, dt.datetime]:
    """Object-lock retention of audit events: at least as long as any footage they are about
    (the longest redacted or raw retention) and at least a year; COMPLIANCE when any policy
    asks for it."""
    pols = list(policies)
    days = max([AUDIT_MIN_DAYS, *(p.retention.redacted_days for p in pols), *(p.retention.raw_days for p in pols)])
    mode = "COMPLIANCE" if any(p.retention.mode == "COMPLIANCE" for p in pols) else "GOVERNANCE"
    now = now or dt.datetime.now(dt.UTC)
    return mode, (now + dt.timedelta(days=days)).replace(microsecond=0)


def raw_lifecycle_rules(policies: Iterable[Policy]) -> list[LifecycleRule]:
    """The raw bucket's rules: expire each policy's raw objects after its ``raw_days``
    (policies that keep no raw footage get none)."""
    return [LifecycleRule(rule_id=f"veilstream-raw-{p.policy_id}"[:255], policy_id=p.policy_id,
                          days=p.retention.raw_days)
            for p in sorted(policies, key=lambda p: p.policy_id) if p.retention.raw_days > 0]


_GLOB_OK = re.compile(r"^[A-Za-z0-9._*?-]+$")


def _camera_prefixes(cameras: Iterable[str]) -> list[str]:
    """``camera=<glob>/`` key prefixes; S3 resource ARNs understand ``*`` and ``?`` too."""
    out = []
    for g in cameras:
        if not _GLOB_OK.match(g):
            raise ValueError(f"camera glob {g!r}: only letters, digits, '.', '_', '-', '*' and '?' are allowed")
        out.append(f"camera={g}/")
    return out


def _arn(bucket: str, key: str = "") -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key else "")


def role_documents(policy: Policy, *, bucket: str, audit_bucket: str, raw_bucket: str) -> dict[str, dict[str, Any]]:
    """IAM-style policy documents, one per role of the policy.

    ``redacted`` grants the role's cameras' segments (``*.mp4``), ``manifests`` their JSON
    manifests, ``raw`` the raw vault under the same camera prefixes, ``audit`` the audit
    bucket. Listing is limited to the same prefixes. Every document also denies what no
    reader may do to footage under retention: delete versions, bypass governance
    retention, change retention or tags. ``export`` is enforced by ``veilstream`` itself,
    not by storage, so it is carried only as the document's ``Sid`` suffix.
    """
    docs: dict[str, dict[str, Any]] = {}
    for role in policy.roles:
        prefixes = _camera_prefixes(role.cameras)
        statements: list[dict[str, Any]] = []
        object_arns: list[str] = []
        if "redacted" in role.read:
            object_arns += [_arn(bucket, f"{p}*.mp4") for p in prefixes]
        if "manifests" in role.read:
            object_arns += [_arn(bucket, f"{p}*.json") for p in prefixes]
        if object_arns:
            statements.append({"Sid": "ReadRedacted", "Effect": "Allow",
                               "Action": ["s3:GetObject", "s3:GetObjectTagging", "s3:GetObjectVersion"],
                               "Resource": object_arns})
            statements.append({"Sid": "ListRedacted", "Effect": "Allow", "Action": ["s3:ListBucket"],
                               "Resource": [_arn(bucket)],
                               "Condition": {"StringLike": {"s3:prefix": [*prefixes, *(f"{p}*" for p in prefixes)]}}})
        if "raw" in role.read:
            statements.append({"Sid": "ReadRawVault", "Effect": "Allow",
                               "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                               "Resource": [_arn(raw_bucket, f"{p}*") for p in prefixes]})
            statements.append({"Sid": "ListRawVault", "Effect": "Allow", "Action": ["s3:ListBucket"],
                               "Resource": [_arn(raw_bucket)],
                               "Condition": {"StringLike": {"s3:prefix": [*prefixes, *(f"{p}*" for p in prefixes)]}}})
        if "audit" in role.read:
            statements.append({"Sid": "ReadAudit", "Effect": "Allow",
                               "Action": ["s3:GetObject", "s3:ListBucket"],
                               "Resource": [_arn(audit_bucket), _arn(audit_bucket, "*")]})
        statements.append({"Sid": "DenyTamper", "Effect": "Deny",
                           "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention",
                                      "s3:PutObjectRetention", "s3:PutObjectLegalHold", "s3:PutObjectTagging",
                                      "s3:PutLifecycleConfiguration"],
                           "Resource": [_arn(b) for b in (bucket, audit_bucket, raw_bucket)]
                           + [_arn(b, "*") for b in (bucket, audit_bucket, raw_bucket)]})
        docs[role.name] = {"Version": "2012-10-17", "Statement": statements}
    return docs


def sink_document(*, bucket: str) -> dict[str, Any]:
    """What the sink's own credentials need, and nothing more: create/configure the bucket,
    write segments, manifests, tags and retention, read manifests back (replay planning)."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "SinkBucket", "Effect": "Allow",
         "Action": ["s3:CreateBucket", "s3:ListBucket", "s3:GetBucketLocation", "s3:GetBucketObjectLockConfiguration",
                    "s3:PutLifecycleConfiguration", "s3:GetLifecycleConfiguration"],
         "Resource": [_arn(bucket)]},
        {"Sid": "SinkObjects", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:PutObjectTagging", "s3:PutObjectRetention", "s3:GetObject",
                    "s3:GetObjectTagging"],
         "Resource": [_arn(bucket, "camera=*")]},
        {"Sid": "SinkNeverDeletes", "Effect": "Deny",
         "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"],
         "Resource": [_arn(bucket, "*")]},
    ]}


def raw_sink_document(*, raw_bucket: str) -> dict[str, Any]:
    """The raw sink's credentials: the only writer of the raw vault. It writes sealed
    chunks and the camera-day wrapped data keys under retention, reads back only the
    wrapped keys (never a chunk), and never deletes."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "RawSinkBucket", "Effect": "Allow",
         "Action": ["s3:CreateBucket", "s3:ListBucket", "s3:GetBucketLocation", "s3:GetBucketObjectLockConfiguration",
                    "s3:PutLifecycleConfiguration", "s3:GetLifecycleConfiguration"],
         "Resource": [_arn(raw_bucket)]},
        {"Sid": "RawSinkWrite", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:PutObjectTagging", "s3:PutObjectRetention"],
         "Resource": [_arn(raw_bucket, "camera=*"), _arn(raw_bucket, "keys/*")]},
        {"Sid": "RawSinkReadWrappedKeys", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [_arn(raw_bucket, "keys/*")]},
        {"Sid": "RawSinkNeverDeletes", "Effect": "Deny",
         "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"],
         "Resource": [_arn(raw_bucket, "*")]},
    ]}


def documents_for(policies: Mapping[str, Policy], *, bucket: str, audit_bucket: str,
                  raw_bucket: str) -> dict[str, dict[str, Any]]:
    """Every role document of every policy (named ``<policy_id>-<role>``) plus ``veilstream-sink``
    and ``veilstream-raw-sink``."""
    out: dict[str, dict[str, Any]] = {"veilstream-sink": sink_document(bucket=bucket),
                                      "veilstream-raw-sink": raw_sink_document(raw_bucket=raw_bucket)}
    for pid, pol in sorted(policies.items()):
        for role, doc in role_documents(pol, bucket=bucket, audit_bucket=audit_bucket, raw_bucket=raw_bucket).items():
            out[f"{pid}-{role}"] = doc
    return out
