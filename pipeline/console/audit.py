"""Audit events of the console: who did what, when, to which camera, case and objects.

Every view of footage, download, export, release, hold and verify is one JSON event in the
audit bucket (``events/date=YYYY-MM-DD/<time>_<event id>.json``, object lock where the
bucket has it) written BEFORE the footage leaves the console: if the event cannot be
stored, the request is refused (nobody watches unrecorded). Events are also produced to
``veil.audit`` (keyed by camera) when a producer is given.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.errors import VeilStreamError

logger = logging.getLogger(__name__)

EVENT_PREFIX = "events/"


class AuditError(VeilStreamError):
    """The audit event could not be stored: the action it records must not happen."""


@dataclass(frozen=True)
class AuditQuery:
    camera: str = ""
    user: str = ""
    case: str = ""
    action: str = ""
    date: str = ""  # YYYY-MM-DD; empty = the last ``days`` days

    def matches(self, ev: Mapping[str, Any]) -> bool:
        def has(field: str, want: str) -> bool:
            return not want or want.lower() in str(ev.get(field) or "").lower()
        return (has("camera_id", self.camera) and has("actor", self.user) and has("case", self.case)
                and has("action", self.action))


def event(actor: str, roles: Sequence[str], action: str, *, camera_id: str = "", case: str = "",
          keys: Iterable[str] = (), detail: Mapping[str, Any] | None = None, outcome: str = "ok",
          now_ms: int | None = None) -> dict[str, Any]:
    """One audit event (``kind: AccessEvent``)."""
    at = int(now_ms if now_ms is not None else time.time() * 1000)
    return {"schema_version": 1, "kind": "AccessEvent", "event_id": uuid.uuid4().hex, "at_ms": at,
            "at": dt.datetime.fromtimestamp(at / 1000, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "actor": actor, "roles": list(roles), "action": action, "camera_id": camera_id, "case": case,
            "keys": list(keys), "detail": dict(detail or {}), "outcome": outcome, "source": "console"}


def event_key(ev: Mapping[str, Any]) -> str:
    d = dt.datetime.fromtimestamp(int(ev["at_ms"]) / 1000, tz=dt.UTC)
    return f"{EVENT_PREFIX}date={d:%Y-%m-%d}/{d:%Y%m%dT%H%M%S}{int(ev['at_ms']) % 1000:03d}Z_{ev['event_id']}.json"


class AuditLog:
    """Append-only audit events in an ``ObjectStore`` (the audit bucket)."""

    def __init__(self, store: Any, publish: Callable[[dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.publish = publish
        self.clock = clock
        self._ready = False
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def _ensure(self) -> None:
        if not self._ready:
            self.store.ensure_bucket()
            self._ready = True

    def record(self, actor: str, roles: Sequence[str], action: str, **kw: Any) -> dict[str, Any]:
        """Store one event durably; raises :class:`AuditError` when it cannot."""
        ev = event(actor, roles, action, now_ms=int(self.clock() * 1000), **kw)
        data = json.dumps(ev, sort_keys=True, separators=(",", ":")).encode("utf-8")
        try:
            self._ensure()
            self.store.put_object(event_key(ev), data, "application/json", {}, {"kind": "audit"})
        except Exception as exc:  # noqa: BLE001 - any storage failure refuses the action
            logger.error("audit event not stored action=%s actor=%s error=%s", action, actor, exc)
            raise AuditError(f"the audit trail is unavailable ({type(exc).__name__}); the action was not performed") \
                from None
        if self.publish is not None:
            try:
                self.publish(ev)
            except Exception as exc:  # noqa: BLE001 - the bucket holds the durable copy
                logger.warning("audit event not published to Kafka event=%s error=%s", ev["event_id"], exc)
        logger.info("audit action=%s actor=%s camera=%s case=%s keys=%d", action, actor, ev["camera_id"],
                    ev["case"], len(ev["keys"]))
        return ev

    def _read(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        try:
            ev = json.loads(self.store.get_object(key))
        except Exception as exc:  # noqa: BLE001 - an unreadable event is reported, not fatal to the page
            logger.warning("audit event unreadable key=%s error=%s", key, exc)
            return None
        with self._lock:
            self._cache[key] = ev
            while len(self._cache) > 20000:
                self._cache.popitem(last=False)
        return ev

    def search(self, q: AuditQuery, days: int = 7, limit: int = 500) -> list[dict[str, Any]]:
        """Newest first."""
        try:
            self._ensure()
        except Exception as exc:  # noqa: BLE001
            raise AuditError(f"the audit trail is unavailable: {type(exc).__name__}") from None
        if q.date:
            dates = [q.date]
        else:
            today = dt.datetime.fromtimestamp(self.clock(), tz=dt.UTC).date()
            dates = [(today - dt.timedelta(days=i)).isoformat() for i in range(days)]
        out: list[dict[str, Any]] = []
        for d in dates:
            keys = sorted(self.store.list_objects(f"{EVENT_PREFIX}date={d}/"), reverse=True)
            for k in keys:
                ev = self._read(k)
                if ev is not None and q.matches(ev):
                    out.append(ev)
                    if len(out) >= limit:
                        return out
        return out
