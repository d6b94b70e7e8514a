"""Re-hash a camera-day against its hash chain: ``verify(gov, "cam-001", "2026-11-23")`` -> ``VerifyReport``."""

from __future__ import annotations

import datetime as dt
import json

from schemas.errors import InputError

from .chain import VerifyReport, chain_prefix, verify_day
from .context import AccessError, Governance


def verify(gov: Governance, camera_id: str, day: str, *, record: bool = True) -> VerifyReport:
    """Re-hash a camera-day's segments and manifests against its hash chain and the WORM
    chain records; name what was altered, replaced, removed or inserted."""
    from pipeline.objectkeys import key_component

    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise InputError(f"--date {day!r}: expected YYYY-MM-DD") from None
    recs = [json.loads(gov.audit_store.get_object(k)) for k in gov.audit_store.list_objects(chain_prefix(camera_id, day))]
    objects = {k: gov.store.get_object(k) for k in gov.store.list_objects(f"camera={key_component(camera_id)}/date={day}/")
               if k.endswith((".mp4", ".json"))}
    if not recs and not objects:
        gov.camera(camera_id)  # unknown camera -> that error, else "nothing recorded"
        raise AccessError(f"verify: nothing recorded for camera {camera_id!r} on {day}")
    rep = verify_day(camera_id, day, recs, objects)
    if record:
        gov.record("verify", camera_id=camera_id, object_keys=sorted(objects),
                   details={"date": day, "ok": rep.ok, "findings": len(rep.findings)})
    return rep
