"""Audit events for every access-relevant action: on ``veil.audit`` AND in the WORM audit bucket.

An :class:`AuditEvent` says who did what, when, under which case, to which objects. The
event object in the audit bucket (``events/date=<D>/<at>_<id>.json``, under object lock
when the bucket has it) is the durable record; the Kafka event is the live feed. An
action whose event cannot be stored durably is refused (:func:`AuditLog.record` raises
before the caller hands anything out), so nothing is exported or shared unrecorded.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

ACTIONS = ("subject_export", "case_export", "share", "share_open", "hold_add", "hold_remove", "hold_refused", "verify",
           "policy_change", "camera_add", "camera_remove",
           # the console (pipeline.console): every view of footage or manifest, download, export preview,
           # sign-in and sign-out; revoking a released link before its expiry
           "view", "manifest", "download", "preview", "sign_in", "sign_out", "share_revoke")
EVENTS_PREFIX = "events/"
ACTOR_ENV = "VEILSTREAM_ACTOR"


def current_actor(explicit: str | None = None) -> str:
    """Who acts: ``--actor``, else ``$VEILSTREAM_ACTOR``, else the OS user."""
    if explicit:
        return explicit
    env = os.environ.get(ACTOR_ENV)
    if env:
        return env
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in a container
        return f"uid:{os.getuid()}"


@dataclass(frozen=True)
class AuditEvent:
    action: str
    actor: str
    at_ms: int
    camera_id: str | None = None
    case_id: str | None = None
    object_keys: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    schema_version: int = 1
    kind: str = "AccessAudited"

    def to_json(self) -> bytes:
        d = asdict(self)
        d["object_keys"] = list(self.object_keys)
        d["at"] = dt.datetime.fromtimestamp(self.at_ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @property
    def key(self) -> str:
        t = dt.datetime.fromtimestamp(self.at_ms / 1000, tz=dt.UTC)
        return f"{EVENTS_PREFIX}date={t:%Y-%m-%d}/{t:%Y%m%dT%H%M%S}{self.at_ms % 1000:03d}Z_{self.event_id}.json"


class AuditLog:
    """Writes events to the audit bucket (durable, first) and the audit topic.

    Args:
        store: the audit bucket's ``ObjectStore`` (``None``: the topic alone, for actions
            that must not depend on object storage, e.g. camera registry changes).
        producer: a ``ChunkProducer``-like (``produce``/``flush``) or ``None`` (bucket only).
        topic: the audit topic.
        retention: object-lock retention of event objects (``RetentionSpec`` or ``None``).
    """

    def __init__(self, store: Any, producer: Any = None, topic: str = "veil.audit", retention: Any = None) -> None:
        self.store = store
        self.producer = producer
        self.topic = topic
        self.retention = retention

    def record(self, action: str, actor: str, *, camera_id: str | None = None, case_id: str | None = None,
               object_keys: Sequence[str] = (), details: Mapping[str, Any] | None = None) -> AuditEvent:
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        ev = AuditEvent(action=action, actor=actor, at_ms=int(time.time() * 1000), camera_id=camera_id,
                        case_id=case_id, object_keys=tuple(object_keys), details=dict(details or {}))
        body = ev.to_json()
        if self.store is not None:
            self.store.put_object(ev.key, body, "application/json", {"action": action},
                                  {"kind": "event", "action": action}, retention=self.retention)
        if self.producer is not None:
            from schemas.messages import HEADER_CONTENT_TYPE, HEADER_TYPE, HEADER_VERSION

            headers = [(HEADER_TYPE, b"AccessAudited"), (HEADER_VERSION, b"1"),
                       (HEADER_CONTENT_TYPE, b"application/json")]
            try:
                d = self.producer.produce(self.topic, body, (camera_id or action).encode("utf-8"), headers)
                self.producer.flush(10.0)
                if getattr(d, "error", None) or not getattr(d, "done", True):
                    raise RuntimeError(str(getattr(d, "error", None) or "not acknowledged"))
            except Exception as exc:  # noqa: BLE001 - the bucket record is the durable one
                if self.store is None:  # nowhere else: the action must not go unrecorded
                    raise
                logger.error("audit event not on %s (stored in the audit bucket): %s", self.topic, exc)
        elif self.store is None:
            raise ValueError("AuditLog needs an audit bucket, a producer, or both")
        logger.info("audit action=%s actor=%s case=%s camera=%s objects=%d", action, actor, case_id, camera_id,
                    len(ev.object_keys))
        return ev

    def events(self, day: str | None = None) -> list[dict[str, Any]]:
        prefix = EVENTS_PREFIX + (f"date={day}/" if day else "")
        return [json.loads(self.store.get_object(k)) for k in sorted(self.store.list_objects(prefix))]
