"""Legal holds per case on a camera's segments, manifests and raw objects.

    hold(gov, "cam-001", t1_ms, t2_ms, case_id="C-9", enable=True, role="investigator") -> HoldResult
                                              (lifting C-9 releases only what no other case holds)
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import InputError

from .context import AccessError, Governance
from .timeparse import iso
from .vault import RawVault, data_key_object, days_between

# S3 legal hold is one ON/OFF flag per object version: by itself it cannot say who holds an
# object, so lifting it for one case would release every other case's evidence. Each case
# that holds an object is recorded in the audit bucket as a marker object
#     holds/<bucket>/<object key>/<case id, %-quoted>.json   {case_id, role, actor, at, event_id}
# and the flag is turned OFF only when the object's last marker is gone. The markers are the
# current state (written without retention so a lift can delete them); the history is the
# WORM audit events (hold_add / hold_remove / hold_refused, each with its case id).
#
# Order makes concurrent holds safe without locks: a hold writes its marker BEFORE setting
# the flag; a lift deletes its marker, lists the others, and only if none is left clears
# the flag, then lists again and sets it back if a marker appeared meanwhile (S3 listings
# are strongly consistent, so a hold that set the flag before our clear is seen by that list).
HOLD_ROLES = ("investigator", "privacy-officer")
"""Roles that may place legal holds (as the console's ``ACTION_ROLES["hold"]``); the CLI
states it with ``--role``, the console takes it from the signed-in user."""

LEGACY_CASE = "LEGACY-HOLD"
"""The case a hold set before holds were recorded per case is filed under: an object found
held with no case marker keeps that hold as this case's (placed by ``privacy-officer``), so
only ``hold remove --case LEGACY-HOLD`` by a privacy officer releases it."""

HOLDS_PREFIX = "holds/"


def may_lift(placed_by: str, role: str) -> bool:
    """Who may lift a case's hold: only the role that placed it (and only for that case).

    An investigator's hold (evidence of an investigation) is not lifted by a privacy officer
    closing some other request, nor a privacy officer's (a data subject's pending request)
    by an investigator; another person of the same role may lift it (staff change, the
    audit event names them). A legacy hold (:data:`LEGACY_CASE`) is the privacy officer's.
    """
    return role in HOLD_ROLES and role == placed_by


class HoldRefusedError(AccessError):
    """A hold change the acting role may not make (the console answers 403)."""

    status = 403


@dataclass
class HoldResult:
    """What a hold change did. ``keys``: the objects of the interval this case now holds
    (add) or held (remove); ``released``: objects whose legal hold was turned OFF (no case
    holds them any more); ``still_held``: objects another case still holds -> those cases;
    ``not_held``: objects of the interval this case did not hold (left as they were)."""

    enabled: bool
    keys: list[str]
    event_id: str
    case_id: str = ""
    role: str = ""
    released: list[str] = field(default_factory=list)
    still_held: dict[str, list[str]] = field(default_factory=dict)
    not_held: list[str] = field(default_factory=list)


def _marker_prefix(store: Any, key: str) -> str:
    return f"{HOLDS_PREFIX}{store.bucket}/{key}/"


def _marker_key(store: Any, key: str, case_id: str) -> str:
    return _marker_prefix(store, key) + urllib.parse.quote(case_id, safe="") + ".json"


def hold_cases(gov: Governance, store: Any, key: str) -> dict[str, dict[str, Any]]:
    """The cases holding ``store``'s object ``key``: case id -> its marker (role, actor, at)."""
    out: dict[str, dict[str, Any]] = {}
    prefix = _marker_prefix(store, key)
    for mk in gov.audit_store.list_objects(prefix):
        rest = mk[len(prefix):]
        if "/" in rest or not rest.endswith(".json"):
            continue
        try:
            rec = json.loads(gov.audit_store.get_object(mk))
        except Exception:  # noqa: BLE001 - deleted between list and get: no longer a holder
            continue
        out[str(rec.get("case_id") or urllib.parse.unquote(rest[:-5]))] = rec
    return out


def _interval_keys(store: Any, camera_id: str, from_ms: int, to_ms: int, suffixes: tuple[str, ...]) -> Iterator[str]:
    from pipeline.objectkeys import key_component

    from .vault import raw_key_first_ms

    for day in days_between(from_ms - 3_600_000, to_ms):
        for key in store.list_objects(f"camera={key_component(camera_id)}/date={day}/"):
            if not key.endswith(suffixes):
                continue
            start, end = _key_span(key)
            if start is None:
                first = raw_key_first_ms(key)
                start, end = (first, first + RawVault.MAX_CHUNK_MS) if first is not None else (None, None)
            if start is not None and end is not None and start <= to_ms and end >= from_ms:
                yield key


_SEG_NAME = re.compile(r"/(\d{8}T\d{9}Z)_(\d{8}T\d{9}Z)(?:-p\d+)?\.(?:mp4|json)$")


def _key_span(key: str) -> tuple[int | None, int | None]:
    m = _SEG_NAME.search(key)
    if not m:
        return None, None

    def ms(s: str) -> int:
        t = dt.datetime.strptime(s[:15], "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
        return int(t.timestamp()) * 1000 + int(s[15:18])

    return ms(m.group(1)), ms(m.group(2))


def _hold_targets(gov: Governance, camera_id: str, from_ms: int, to_ms: int) -> list[tuple[Any, str]]:
    targets = [(gov.store, k) for k in _interval_keys(gov.store, camera_id, from_ms, to_ms, (".mp4", ".json"))]
    try:
        raw = [(gov.raw_store, k) for k in _interval_keys(gov.raw_store, camera_id, from_ms, to_ms, (".raw",))]
        # ... and the camera-days' wrapped data keys: without them the raw objects are unreadable
        days = sorted({k.split("/date=", 1)[1][:10] for _s, k in raw})
        raw += [(gov.raw_store, dk) for dk in (data_key_object(camera_id, d) for d in days)
                if gov.raw_store.stat_object(dk) is not None]
        targets += raw
    except Exception as exc:  # noqa: BLE001 - no raw bucket: nothing raw to hold
        if "NoSuchBucket" not in str(exc):
            raise
    return targets


def _put_marker(gov: Governance, store: Any, key: str, case_id: str, role: str, event_id: str) -> None:
    body = json.dumps({"case_id": case_id, "role": role, "actor": gov.actor, "at": iso(int(time.time() * 1000)),
                       "event_id": event_id, "bucket": store.bucket, "key": key}, sort_keys=True).encode()
    gov.audit_store.put_object(_marker_key(store, key, case_id), body, "application/json", {"kind": "hold"},
                               {"kind": "hold"})


def _legal_hold_on(store: Any, key: str) -> bool:
    try:
        return bool(store.client.is_object_legal_hold_enabled(store.bucket, key))
    except Exception:  # noqa: BLE001 - no legal hold configuration on the object: not held
        return False


def hold(gov: Governance, camera_id: str, from_ms: int, to_ms: int, *, case_id: str, enable: bool,
         role: str) -> HoldResult:
    """Place (``enable``) or lift case ``case_id``'s legal hold on every segment, manifest and
    raw object of the camera in the interval. While any case holds an object, storage refuses
    to delete it, whatever its retention (even with governance bypass).

    A hold belongs to its case: lifting it for ``case_id`` releases only objects no other case
    holds (the others stay held and are named in ``still_held``); objects ``case_id`` does not
    hold are left as they are (``not_held``). Only the role that placed a case's hold may lift
    it (:func:`may_lift`); ``role`` is the acting role (one of :data:`HOLD_ROLES`).

    Raises:
        HoldRefusedError: ``role`` may not place holds, or may not lift this case's hold
            (recorded as ``hold_refused``; nothing changes).
        AccessError: nothing stored in the interval, or (lift) ``case_id`` holds none of it.
    """
    if not case_id:
        raise InputError("hold: --case is required")
    if to_ms <= from_ms:
        raise InputError(f"hold: --to ({iso(to_ms)}) must be after --from ({iso(from_ms)})")
    what = "hold add" if enable else "hold remove"
    if role not in HOLD_ROLES:
        raise HoldRefusedError(f"{what}: role {role or '(none)'!r} may not place or lift legal holds "
                               f"(only {' or '.join(HOLD_ROLES)})")
    gov.camera(camera_id)
    targets = _hold_targets(gov, camera_id, from_ms, to_ms)
    if not targets:
        raise AccessError(f"hold: nothing stored for camera {camera_id!r} between {iso(from_ms)} and {iso(to_ms)}")
    span = {"from": iso(from_ms), "to": iso(to_ms), "role": role}
    holders = {(s.bucket, k): hold_cases(gov, s, k) for s, k in targets}
    if enable:
        return _place(gov, camera_id, case_id, role, targets, holders, span)
    return _lift(gov, camera_id, case_id, role, targets, holders, span)


def _place(gov: Governance, camera_id: str, case_id: str, role: str, targets: list[tuple[Any, str]],
           holders: dict[tuple[str, str], dict[str, dict[str, Any]]], span: dict[str, Any]) -> HoldResult:
    keys = [f"{s.bucket}/{k}" for s, k in targets]
    # the case already holds some of it under another role: re-placing would hand that role the
    # lift (a takeover of someone else's hold), so it is refused like a lift would be
    theirs = sorted({str(c[case_id].get("role") or "") for c in holders.values() if case_id in c} - {role})
    if theirs:
        gov.record("hold_refused", camera_id=camera_id, case_id=case_id, object_keys=keys,
                   details={**span, "placed_by": theirs, "reason": "case already held under another role"})
        raise HoldRefusedError(f"hold add: case {case_id!r} already holds objects of this interval under role "
                               f"{' and '.join(theirs)}; role {role!r} may not take its hold over; nothing changed")
    # held with no case on record: a hold set before per-case records; keep it as LEGACY_CASE's
    legacy = [(s, k) for s, k in targets if not holders[(s.bucket, k)] and _legal_hold_on(s, k)]
    others = {f"{s.bucket}/{k}": sorted(c for c in holders[(s.bucket, k)] if c != case_id) for s, k in targets}
    ev = gov.record("hold_add", camera_id=camera_id, case_id=case_id, object_keys=keys,
                    details={**span, "objects": len(keys), "legacy_holds_recorded": len(legacy),
                             "also_held_for": {k: v for k, v in others.items() if v}})
    for s, k in legacy:
        _put_marker(gov, s, k, LEGACY_CASE, "privacy-officer", ev.event_id)
    for s, k in targets:
        if case_id not in holders[(s.bucket, k)]:  # an existing record keeps who placed it, and when
            _put_marker(gov, s, k, case_id, role, ev.event_id)  # the marker first, then the flag
        s.client.enable_object_legal_hold(s.bucket, k)
    return HoldResult(True, keys, ev.event_id, case_id, role,
                      still_held={k: v for k, v in others.items() if v})


def _lift(gov: Governance, camera_id: str, case_id: str, role: str, targets: list[tuple[Any, str]],
          holders: dict[tuple[str, str], dict[str, dict[str, Any]]], span: dict[str, Any]) -> HoldResult:
    mine: list[tuple[Any, str]] = []
    not_held: list[str] = []
    placed_by: set[str] = set()
    for s, k in targets:
        cases = holders[(s.bucket, k)]
        if case_id in cases:
            mine.append((s, k))
            placed_by.add(str(cases[case_id].get("role") or ""))
        elif case_id == LEGACY_CASE and not cases and _legal_hold_on(s, k):
            mine.append((s, k))  # a hold from before per-case records
            placed_by.add("privacy-officer")
        else:
            not_held.append(f"{s.bucket}/{k}")
    if not mine:
        held_for = sorted({c for cs in holders.values() for c in cs})
        raise AccessError(f"hold remove: case {case_id!r} holds none of the {len(targets)} object(s) of camera "
                          f"{camera_id!r} between {span['from']} and {span['to']}; nothing lifted"
                          + (f" (they are held for case(s) {', '.join(held_for[:10])})" if held_for else ""))
    refused = sorted(r for r in placed_by if not may_lift(r, role))
    if refused:
        gov.record("hold_refused", camera_id=camera_id, case_id=case_id,
                   object_keys=[f"{s.bucket}/{k}" for s, k in mine],
                   details={**span, "placed_by": refused, "reason": "role may not lift this case's hold"})
        raise HoldRefusedError(f"hold remove: case {case_id!r}'s hold was placed by role {' and '.join(refused)}; "
                               f"role {role!r} may not lift it (only the role that placed a hold lifts it); "
                               "nothing lifted")
    keys = [f"{s.bucket}/{k}" for s, k in mine]
    others = {f"{s.bucket}/{k}": sorted(c for c in holders[(s.bucket, k)] if c != case_id) for s, k in mine}
    ev = gov.record("hold_remove", camera_id=camera_id, case_id=case_id, object_keys=keys,
                    details={**span, "objects": len(keys), "released": [k for k, v in others.items() if not v],
                             "still_held_for": {k: v for k, v in others.items() if v},
                             "not_held_by_case": not_held})
    released: list[str] = []
    still: dict[str, list[str]] = {}
    audit_store = gov.audit_store
    for s, k in mine:
        try:
            audit_store.client.remove_object(audit_store.bucket, _marker_key(s, k, case_id))
        except Exception as exc:  # noqa: BLE001 - a legacy hold has no marker to remove
            if case_id != LEGACY_CASE:
                raise AccessError(f"hold remove: the hold record of {s.bucket}/{k} could not be removed: "
                                  f"{str(exc).splitlines()[0][:200]}; the object stays held") from None
        left = sorted(hold_cases(gov, s, k))
        if left:
            still[f"{s.bucket}/{k}"] = left
            continue
        s.client.disable_object_legal_hold(s.bucket, k)
        left = sorted(hold_cases(gov, s, k))
        if left:  # another case placed its hold while we lifted ours: its hold wins
            s.client.enable_object_legal_hold(s.bucket, k)
            still[f"{s.bucket}/{k}"] = left
        else:
            released.append(f"{s.bucket}/{k}")
    return HoldResult(False, keys, ev.event_id, case_id, role, released=released, still_held=still,
                      not_held=not_held)
