"""Who may do what in the console, decided by the same role documents the storage enforces.

A camera's policy (``policies_dir/<policy_id>.yaml``) names roles and what each may read
(``redacted``, ``manifests``, ``raw``, ``audit``) for which camera globs;
:func:`pipeline.governance.rules.role_documents` renders that into the IAM-style JSON the
operator loads into MinIO. The console does not re-implement the rules: it evaluates
those very documents (:func:`allowed`: an explicit Deny wins, then any Allow whose action
and resource match, else no) for the S3 request the page stands for. So a page can never
show more than the role's own S3 credentials could fetch.

On top of storage, a few actions are the console's own (a role must also be entitled to
them by name): ``subject_export`` needs the policy's ``export: true``, holds and case
exports are the investigator's, ``verify`` the auditor's (and anyone who reads audit).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.policy import Policy

ROLES = ("analyst", "privacy-officer", "investigator", "auditor", "sre")
"""The roles the console knows (the policy role names)."""

# Console actions that are not plain S3 reads: which role names may ever ask for them.
# The storage grant (below) is checked as well; both must say yes.
ACTION_ROLES: dict[str, frozenset[str]] = {
    "subject_export": frozenset({"privacy-officer"}),
    "case_export": frozenset({"investigator"}),
    "hold": frozenset({"investigator", "privacy-officer"}),
    "verify": frozenset({"auditor", "privacy-officer", "investigator"}),
    "share": frozenset({"privacy-officer", "investigator"}),
    "status": frozenset(ROLES),
}

# What each console action reads, as (bucket kind, S3 action, key suffix pattern)
_READS: dict[str, tuple[str, str, str]] = {
    "view": ("redacted", "s3:GetObject", "x.mp4"),
    "manifest": ("redacted", "s3:GetObject", "x.json"),
    "raw": ("raw", "s3:GetObject", "x.bin"),
    "audit": ("audit", "s3:GetObject", ""),
}


def console_document(*, bucket: str, audit_bucket: str) -> dict[str, Any]:
    """The console's own credentials (camera list, status, timelines): list the redacted
    bucket and read manifests (never segments), and append access events to the audit bucket
    (read them back for the audit page). Footage is read with the role's own credentials
    (``console.s3_credentials.<role>``: the role's documents, one per policy)."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ConsoleList", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{audit_bucket}"]},
        {"Sid": "ConsoleManifests", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/camera=*.json"]},
        {"Sid": "ConsoleAuditEvents", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:PutObjectTagging", "s3:PutObjectRetention", "s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{audit_bucket}/events/*"]},
        {"Sid": "ConsoleNeverDeletes", "Effect": "Deny",
         "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention",
                    "s3:PutObjectLegalHold", "s3:PutLifecycleConfiguration"],
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*", f"arn:aws:s3:::{audit_bucket}",
                      f"arn:aws:s3:::{audit_bucket}/*"]},
    ]}


@dataclass(frozen=True)
class Buckets:
    redacted: str
    audit: str
    raw: str


def _match(pattern: str, value: str) -> bool:
    # IAM wildcards: * any run of characters (including '/'), ? one character
    return fnmatch.fnmatchcase(value, pattern)


def _as_list(v: Any) -> list[str]:
    return [v] if isinstance(v, str) else list(v or [])


def allowed(document: Mapping[str, Any], action: str, resource: str, prefix: str | None = None) -> bool:
    """Evaluate an IAM-style policy document for one request (explicit Deny wins).

    Args:
        document: ``{"Statement": [{"Effect", "Action", "Resource", "Condition"?}, ...]}``.
        action: e.g. ``s3:GetObject``.
        resource: ``arn:aws:s3:::bucket/key`` (or the bucket ARN for ListBucket).
        prefix: the ``s3:prefix`` condition value of a ListBucket request.
    """
    allow = False
    for st in document.get("Statement", ()):
        if not any(_match(a, action) for a in _as_list(st.get("Action"))):
            continue
        if not any(_match(r, resource) for r in _as_list(st.get("Resource"))):
            continue
        cond = st.get("Condition") or {}
        like = (cond.get("StringLike") or {}).get("s3:prefix")
        if like is not None and (prefix is None or not any(_match(p, prefix) for p in _as_list(like))):
            continue
        if st.get("Effect") == "Deny":
            return False
        allow = allow or st.get("Effect") == "Allow"
    return allow


class AccessControl:
    """Decisions per (roles, action, camera) from the policies and the camera -> policy map.

    ``camera_policy`` returns a camera's policy id (the registry record's ``policy_id``);
    an unknown camera or a policy nobody wrote grants nothing (fail closed).
    """

    def __init__(self, policies: Mapping[str, Policy], buckets: Buckets,
                 camera_policy: Any = None) -> None:
        from pipeline.governance.rules import role_documents

        self.policies = dict(policies)
        self.buckets = buckets
        self.camera_policy = camera_policy or (lambda _cid: "default")
        self._docs: dict[str, dict[str, dict[str, Any]]] = {
            pid: role_documents(p, bucket=buckets.redacted, audit_bucket=buckets.audit, raw_bucket=buckets.raw)
            for pid, p in self.policies.items()}

    def document(self, camera_id: str, role: str) -> dict[str, Any] | None:
        pid = self.camera_policy(camera_id)
        return self._docs.get(pid or "", {}).get(role)

    def _storage_ok(self, role: str, what: str, camera_id: str) -> bool:
        bucket_kind, s3_action, suffix = _READS[what]
        if what == "audit":
            # the audit bucket is not per camera: any policy granting the role audit reads
            arn = f"arn:aws:s3:::{self.buckets.audit}/events/x.json"
            docs = [d.get(role) for d in self._docs.values()]
            return any(d is not None and allowed(d, s3_action, arn) for d in docs)
        doc = self.document(camera_id, role)
        if doc is None:
            return False
        bucket = getattr(self.buckets, bucket_kind)
        arn = f"arn:aws:s3:::{bucket}/camera={camera_id}/date=2000-01-01/hour=00/{suffix}"
        return allowed(doc, s3_action, arn)

    def role_for(self, roles: Iterable[str], what: str, camera_id: str = "") -> str | None:
        """The first of ``roles`` allowed ``what`` on ``camera_id``, else ``None``.

        ``what``: ``view`` (play/download redacted segments), ``manifest``, ``raw``,
        ``audit``, or a console action of :data:`ACTION_ROLES`.
        """
        for role in roles:
            if what in _READS:
                if self._storage_ok(role, what, camera_id):
                    return role
                continue
            if role not in ACTION_ROLES.get(what, frozenset()):
                continue
            if what == "status":
                return role
            if what == "subject_export":
                pol = self.policies.get(self.camera_policy(camera_id) or "")
                grant = next((r for r in (pol.roles if pol else ()) if r.name == role), None)
                if grant and grant.export and self._storage_ok(role, "view", camera_id):
                    return role
            elif what == "case_export":
                if self._storage_ok(role, "raw", camera_id):
                    return role
            elif what == "hold":
                if self._storage_ok(role, "raw", camera_id) or self._storage_ok(role, "manifest", camera_id):
                    return role
            elif what == "share":
                if self._storage_ok(role, "view", camera_id):
                    return role
            elif what == "verify":
                if self._storage_ok(role, "manifest", camera_id) or self._storage_ok(role, "audit", camera_id):
                    return role
        return None

    def can(self, roles: Iterable[str], what: str, camera_id: str = "") -> bool:
        return self.role_for(roles, what, camera_id) is not None

    def capabilities(self, roles: Sequence[str], camera_id: str) -> dict[str, bool]:
        """Every decision for one camera (what the pages show as buttons)."""
        return {w: self.can(roles, w, camera_id)
                for w in ("view", "manifest", "raw", "subject_export", "case_export", "hold", "verify", "share")}
