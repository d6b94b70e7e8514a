"""What privacy officers and investigators do with stored footage: the Python API behind
``veilstream subject|case|share|hold|verify`` and the console, by concern:

    gov = Governance.from_config(load_config(path), actor="officer.kim")      (this module)
    export.subject_export(gov, "cam-001", t1_ms, t2_ms, SubjectBox(...), case_id="SR-17", output=Path("me.mp4"))
    export.case_export(gov, "cam-001", t1_ms, t2_ms, case_id="C-9", legal_basis="...", official="...", output=...)
    shares.share(gov, key, ttl_s=900, case_id="C-9")      -> ShareLink
    shares.open_share(url, output)                        (refuses an expired link)
    holds.hold(gov, "cam-001", t1_ms, t2_ms, case_id="C-9", enable=True, role="investigator") -> HoldResult
                                                          (per case: lifting C-9 releases only what no other case holds)
    verify.verify(gov, "cam-001", "2026-11-23")           -> chain.VerifyReport
    cameras(gov)                                          -> camera records with their notice (this module)
    audit_events(gov, day)                                -> recorded events (this module)

(:mod:`.timeparse` parses the commands' times and durations, :mod:`.clips` decodes and encodes
the video.) Every action takes a :class:`Governance` (stores, vault, audit log, actor) and
records an audit event (who, when, case, object keys) in the WORM audit bucket and on
``veil.audit`` through :meth:`Governance.record` BEFORE it hands anything out; an action that
cannot be recorded fails. Errors are :class:`AccessError` (or a
:class:`~pipeline.governance.vault.VaultError`) with one clear line: the CLI prints it and
exits non-zero.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import VeilStreamError

from .audit import AuditLog, current_actor
from .vault import RawVault, key_provider_from_config

logger = logging.getLogger(__name__)


class AccessError(VeilStreamError):
    """A governance action refused or impossible, with the reason in one line."""



# ---------------------------------------------------------------- context
@dataclass
class Governance:
    """Stores, vault and audit log of one deployment, and who is acting."""

    cfg: Any
    store: Any  # redacted segments and manifests
    audit_store: Any
    raw_store: Any
    audit: AuditLog
    actor: str
    _vault: RawVault | None = None
    policies: dict[str, Any] = field(default_factory=dict)
    registry: Any = None  # f() -> {camera_id: CameraConfig}; default reads the registry topic

    @classmethod
    def from_config(cls, cfg: Any, actor: str | None = None, *, kafka: bool = True) -> Governance:
        from pipeline.objectstore import MinioSegmentStore, audit_store_for

        from .rawsink import raw_store

        store = MinioSegmentStore.from_config(cfg.object_store)
        audit_store = audit_store_for(cfg)
        producer = None
        if kafka:
            from pipeline.kafka import chunk_producer

            producer = chunk_producer(cfg.kafka, "veil-governance")
        pols: dict[str, Any] = {}
        if cfg.policies_dir:
            from schemas.policy import load_policies

            pols = load_policies(cfg.policies_dir)
        keep = None
        if audit_store.object_lock:  # events are WORM like the footage they are about
            from pipeline.objectstore import RetentionSpec

            from .rules import audit_retention

            keep = RetentionSpec(*audit_retention(pols.values()))
        return cls(cfg=cfg, store=store, audit_store=audit_store, raw_store=raw_store(cfg),
                   audit=AuditLog(audit_store, producer, cfg.kafka.topics.audit, retention=keep),
                   actor=current_actor(actor), policies=pols)

    @property
    def vault(self) -> RawVault:
        if self._vault is None:
            self._vault = RawVault(self.raw_store, key_provider_from_config(self.cfg.raw_vault))
        return self._vault

    def camera_records(self) -> dict[str, Any]:
        if self.registry is not None:
            return dict(self.registry())
        from pipeline.ingest.registry import read_registry

        return read_registry(self.cfg, timeout_s=10.0)

    def camera(self, camera_id: str) -> Any:
        """The camera's registry record; ``AccessError`` for an unknown camera."""
        cams = self.camera_records()
        if camera_id not in cams:
            known = ", ".join(sorted(cams)[:10]) or "none"
            raise AccessError(f"unknown camera {camera_id!r}: not in the camera registry "
                              f"({self.cfg.kafka.topics.cameras}; known: {known})")
        return cams[camera_id]

    def policy_of(self, camera_id: str) -> Any:
        cam = self.camera(camera_id)
        pid = cam.policy_id or self.cfg.process.policy_id
        pol = self.policies.get(pid)
        if pol is None:
            raise AccessError(f"camera {camera_id!r}: its policy {pid!r} is not in policies_dir "
                              f"{self.cfg.policies_dir or '(unset)'}")
        return pol

    def record(self, action: str, **kw: Any) -> Any:
        try:
            return self.audit.record(action, self.actor, **kw)
        except Exception as exc:  # noqa: BLE001 - nothing leaves unrecorded
            raise AccessError(f"{action} refused: the audit event could not be stored in bucket "
                              f"{getattr(self.audit.store, 'bucket', '?')}: {str(exc).splitlines()[0][:200]}") from None



# ---------------------------------------------------------------- cameras, events
def cameras(gov: Governance) -> list[dict[str, Any]]:
    """Camera records with policy and notice (purpose, scope, contact)."""
    out = []
    for cam in gov.camera_records().values():
        pol = gov.policies.get(cam.policy_id)
        out.append({"camera_id": cam.camera_id, "kind": cam.kind, "enabled": cam.enabled, "policy_id": cam.policy_id,
                    "raw_days": pol.retention.raw_days if pol else None, "notice": dict(cam.notice or {})})
    return out


def record_camera_change(cfg: Any, action: str, camera_ids: Sequence[str], *, actor: str | None = None,
                         details: dict[str, Any] | None = None) -> Any:
    """The audit event of ``cameras add|import|remove``, recorded before the registry
    changes. Without reachable object storage it goes to the audit topic alone (managing
    cameras must not depend on S3), with a warning; without either it is refused."""
    kw = {"camera_id": camera_ids[0] if len(camera_ids) == 1 else None,
          "object_keys": [f"{cfg.kafka.topics.cameras}/{c}" for c in camera_ids], "details": details or {}}
    try:
        gov = Governance.from_config(cfg, actor=actor)
        return gov.record(action, **kw)
    except Exception as exc:  # noqa: BLE001 - fall back to the topic alone
        logger.warning("audit bucket unavailable (%s): %s recorded on %s only", str(exc).splitlines()[0][:200],
                       action, cfg.kafka.topics.audit)
    from pipeline.kafka import chunk_producer

    k = cfg.kafka
    producer = chunk_producer(k, "veil-governance")
    try:
        return AuditLog(None, producer, k.topics.audit).record(action, current_actor(actor), **kw)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001
        raise AccessError(f"{action} refused: the audit event could not be recorded on {k.topics.audit}: "
                          f"{str(exc).splitlines()[0][:200]}") from None


def audit_events(gov: Governance, day: str | None = None) -> list[dict[str, Any]]:
    return gov.audit.events(day)


def redacted_keys(gov: Governance, camera_id: str, day: str) -> list[str]:
    """Redacted segment keys of a camera-day (for the console's pickers)."""
    from pipeline.objectkeys import key_component

    return [k for k in gov.store.list_objects(f"camera={key_component(camera_id)}/date={day}/") if k.endswith(".mp4")]
