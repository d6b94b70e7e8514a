"""Policy changes as audit events: the first time a stage runs with a policy whose content
it has not seen recorded, a ``policy_change`` event (id, version, sha256 of its content)
goes to the audit bucket and ``veil.audit``, and the policy's content is kept there
(``policies/<id>/<sha256>.json``) so an auditor can say which rules produced a segment."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from .audit import AuditLog

logger = logging.getLogger(__name__)


def policy_fingerprint(policy: Any) -> tuple[bytes, str]:
    body = json.dumps(dataclasses.asdict(policy), sort_keys=True, default=str).encode("utf-8")
    return body, hashlib.sha256(body).hexdigest()


def record_policy_changes(policies: Mapping[str, Any], audit_store: Any, producer: Any, topic: str,
                          actor: str | None = None) -> list[str]:
    """Record every policy whose content is new to the audit bucket. Returns their ids.
    Best effort: a stage never refuses to start over its policy log (logged instead)."""
    changed: list[str] = []
    keep = None
    if getattr(audit_store, "object_lock", False):
        from pipeline.objectstore import RetentionSpec

        from .rules import audit_retention

        keep = RetentionSpec(*audit_retention(policies.values()))
    log = AuditLog(audit_store, producer, topic, retention=keep)
    who = actor or f"stage:{os.environ.get('HOSTNAME') or 'local'}"
    for pid, pol in sorted(policies.items()):
        body, sha = policy_fingerprint(pol)
        key = f"policies/{pid}/{sha}.json"
        try:
            if audit_store.stat_object(key) is not None:
                continue
            previous = sorted(audit_store.list_objects(f"policies/{pid}/"))
            audit_store.put_object(key, body, "application/json", {"policy-id": pid}, {"kind": "policy"},
                                   retention=keep)
            log.record("policy_change", who, object_keys=[key],
                       details={"policy_id": pid, "version": pol.version, "sha256": sha,
                                "first_seen": not previous, "retention": dataclasses.asdict(pol.retention)})
            changed.append(pid)
        except Exception as exc:  # noqa: BLE001
            logger.error("policy change of %s not recorded: %s", pid, str(exc).splitlines()[0][:200])
    return changed
