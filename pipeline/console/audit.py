"""Audit events of the console, through the governance audit log
(:class:`pipeline.governance.audit.AuditLog`: the WORM audit bucket first, then
``veil.audit``): who did what, when, to which camera, case and objects.

Every view of footage, download, preview, release and sign-in is recorded BEFORE the
footage leaves the console: if the event cannot be stored, the request is refused
(nobody watches unrecorded). Exports, holds, shares and verifies are recorded by the
governance functions themselves, as the signed-in user. The audit page reads the same
events back (``events/date=YYYY-MM-DD/...``), whoever wrote them (console or CLI).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.errors import VeilStreamError

logger = logging.getLogger(__name__)

EVENT_PREFIX = "events/"


class AuditError(VeilStreamError):
    """The audit event could not be stored: the action it records must not happen."""


def normalize(ev: Mapping[str, Any]) -> dict[str, Any]:
    """One view of an event, whoever wrote it: ``actor, action, at, camera_id, case, keys, detail``."""
    return {"event_id": ev.get("event_id", ""), "at_ms": int(ev.get("at_ms") or 0), "at": ev.get("at", ""),
            "actor": ev.get("actor", ""), "action": ev.get("action", ""), "camera_id": ev.get("camera_id") or "",
            "case": ev.get("case_id") or ev.get("case") or "",
            "keys": list(ev.get("object_keys") or ev.get("keys") or ()),
            "detail": dict(ev.get("details") or ev.get("detail") or {})}


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


class AuditLog:
    """The console's view of the governance audit log (``store``: the audit bucket)."""

    def __init__(self, store: Any, log: Any = None, clock: Callable[[], float] = time.time) -> None:
        from pipeline.governance.audit import AuditLog as GovernanceAuditLog

        self.store = store
        self.log = log if log is not None else GovernanceAuditLog(store)
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def record(self, actor: str, roles: Sequence[str], action: str, *, camera_id: str = "", case: str = "",
               keys: Iterable[str] = (), detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Store one event durably; raises :class:`AuditError` when it cannot."""
        details = {**dict(detail or {}), "roles": list(roles), "via": "console"}
        try:
            ev = self.log.record(action, actor, camera_id=camera_id or None, case_id=case or None,
                                 object_keys=list(keys), details=details)
        except Exception as exc:  # noqa: BLE001 - any storage failure refuses the action
            logger.error("audit event not stored action=%s actor=%s error=%s", action, actor, exc)
            raise AuditError(f"the audit trail is unavailable ({type(exc).__name__}); the action was not performed") \
                from None
        return normalize(json.loads(ev.to_json()) if hasattr(ev, "to_json") else dict(ev))  # type: ignore[arg-type]

    def _read(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        try:
            ev = normalize(json.loads(self.store.get_object(key)))
        except Exception as exc:  # noqa: BLE001 - an unreadable event is reported, not fatal to the page
            logger.warning("audit event unreadable key=%s error=%s", key, exc)
            return None
        with self._lock:
            self._cache[key] = ev  # events are write-once (WORM): safe to keep
            while len(self._cache) > 20000:
                self._cache.popitem(last=False)
        return ev

    def search(self, q: AuditQuery, days: int = 7, limit: int = 500) -> list[dict[str, Any]]:
        """Newest first."""
        if q.date:
            dates = [q.date]
        else:
            today = dt.datetime.fromtimestamp(self.clock(), tz=dt.UTC).date()
            dates = [(today - dt.timedelta(days=i)).isoformat() for i in range(days)]
        out: list[dict[str, Any]] = []
        try:
            for d in dates:
                for k in sorted(self.store.list_objects(f"{EVENT_PREFIX}date={d}/"), reverse=True):
                    ev = self._read(k)
                    if ev is not None and q.matches(ev):
                        out.append(ev)
                        if len(out) >= limit:
                            return out
        except Exception as exc:  # noqa: BLE001
            raise AuditError(f"the audit trail is unreadable: {type(exc).__name__}") from None
        return out


class RecentEvents:
    """Which ``(actor, action, object)`` had an event stored in the last ``window_s`` seconds.

    A player fetches one video in many range requests; recording each would flood the trail
    with one playback. The first request of a key records its event (before any byte leaves);
    requests of the same key within ``window_s`` of that stored event are covered by it; the
    first one after the window records a new one. A key is marked only after its event was
    stored, so a failed write never covers anything. In memory and per process: a restart,
    or a second replica, can only record more, never less.
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._at: OrderedDict[tuple[str, ...], float] = OrderedDict()

    def covered(self, key: tuple[str, ...]) -> bool:
        """True when an event for ``key`` was stored less than ``window_s`` ago."""
        if self.window_s <= 0:
            return False
        with self._lock:
            at = self._at.get(key)
            return at is not None and self.clock() - at < self.window_s

    def mark(self, key: tuple[str, ...]) -> None:
        """``key``'s event is stored now."""
        with self._lock:
            self._at[key] = self.clock()
            self._at.move_to_end(key)
            while len(self._at) > self.max_keys:
                self._at.popitem(last=False)
