"""Evidence exports from the raw vault: a data subject's own footage (everyone else masked)
and an investigation's unmasked footage, each recorded before it is written.

    subject_export(gov, "cam-001", t1_ms, t2_ms, SubjectBox(...), case_id="SR-17", output=Path("me.mp4"))
    case_export(gov, "cam-001", t1_ms, t2_ms, case_id="C-9", legal_basis="...", official="...", output=...)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from schemas.errors import InputError

from .clips import Progress, Stages, decode_interval, write_chunks_mp4, write_mp4
from .context import AccessError, Governance
from .timeparse import iso, parse_time


@dataclass(frozen=True)
class SubjectBox:
    """The data subject: a box ``x, y, w, h`` (pixels) at one moment (``at_ms`` for the
    vault, ``frame`` for a local file; ``None`` = the first frame)."""

    x: float
    y: float
    w: float
    h: float
    at_ms: int | None = None
    frame: int | None = None

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    def check_inside(self, width: int, height: int) -> None:
        if self.w <= 0 or self.h <= 0:
            raise InputError(f"subject box {self.x:g},{self.y:g},{self.w:g},{self.h:g}: width and height must be > 0")
        if self.x < 0 or self.y < 0 or self.x + self.w > width or self.y + self.h > height:
            raise InputError(f"subject box {self.x:g},{self.y:g},{self.w:g},{self.h:g} is outside the "
                             f"{width}x{height} frame (x+w <= {width}, y+h <= {height})")


def parse_subject(spec: str, *, time_ok: bool = True) -> SubjectBox:
    """``X,Y,W,H@T`` (T: ISO time or epoch ms; with ``time_ok=False``: a frame index)."""
    box, _, at = str(spec).partition("@")
    parts = box.split(",")
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise InputError(f"subject {spec!r}: expected X,Y,W,H[@{'TIME' if time_ok else 'FRAME'}] in pixels") from None
    if not at:
        return SubjectBox(x, y, w, h)
    if not time_ok or re.fullmatch(r"\d{1,7}", at.strip()):
        try:
            return SubjectBox(x, y, w, h, frame=int(at))
        except ValueError:
            raise InputError(f"subject {spec!r}: @FRAME must be a frame number") from None
    return SubjectBox(x, y, w, h, at_ms=parse_time(at))



# ---------------------------------------------------------------- vault reads
def _raw_chunks(gov: Governance, camera_id: str, from_ms: int, to_ms: int, what: str
                ) -> tuple[list[tuple[str, dict[str, Any], bytes]], Any]:
    if to_ms <= from_ms:
        raise InputError(f"{what}: --to ({iso(to_ms)}) must be after --from ({iso(from_ms)})")
    pol = gov.policy_of(camera_id)
    if pol.retention.raw_days <= 0:
        raise AccessError(f"{what}: camera {camera_id!r} is under policy {pol.policy_id!r}, which keeps no raw "
                          "footage (retention.raw_days: 0): there is no unmasked original to export")
    chunks = list(gov.vault.chunks_between(camera_id, from_ms, to_ms))
    if not chunks:
        raise AccessError(f"{what}: the raw vault holds no footage of camera {camera_id!r} between {iso(from_ms)} "
                          f"and {iso(to_ms)} (policy {pol.policy_id!r} keeps raw footage "
                          f"{pol.retention.raw_days} days)")
    return chunks, pol



def subject_plan_redactor(gov: Governance, camera_id: str, pol: Any) -> Any:
    """The masker of a subject export: the camera's policy made a plan the one way every plan is
    made (:func:`pipeline.process.plan.plan_from`: its thresholds, padding, style, strength and
    zones, the policy's and the camera's own), detecting what following the subject needs
    (faces, plates and persons on every frame) whatever classes the stream masks."""
    from operators.redactor import RedactionConfig, Redactor
    from operators.subject import SUBJECT_CLASSES
    from pipeline.process.plan import plan_from

    plan = plan_from(pol, RedactionConfig())
    cfg = replace(plan.redaction, classes=SUBJECT_CLASSES, detect_every=1).validate()
    own_zones = tuple(getattr(gov.camera(camera_id), "zones", ()) or ())
    return Redactor(cfg, zones=plan.zone_set(camera_id, own_zones))


@dataclass
class ExportResult:
    output: str
    report: dict[str, Any]
    event_id: str


def subject_export(gov: Governance, camera_id: str, from_ms: int, to_ms: int, subject: SubjectBox, *,
                   case_id: str, output: Path, redactor: Any = None, report_path: Path | None = None,
                   progress: Progress | None = None) -> ExportResult:
    """The data subject's own footage: everyone else's face, plate and person masked.

    The subject is followed forward and backward from ``subject`` (see
    :mod:`operators.tracker`); where the track is lost or ambiguous the subject is masked
    too from there on, and the report says from which frame. ``progress`` (optional) gets
    a growing fraction: decrypt + decode, detection, masking, writing, and 1.0 once the
    video and its report are written.
    """
    from operators.subject import redact_keep_subject

    if not case_id:
        raise InputError("subject export: --case is required (the request's reference)")
    prog = Stages(progress)
    chunks, pol = _raw_chunks(gov, camera_id, from_ms, to_ms, "subject export")
    prog.report(0.05)
    iv = decode_interval(chunks, from_ms, to_ms, prog.stage(0.05, 0.15))
    h, w = iv.frames.shape[1:3]
    subject.check_inside(w, h)
    at = subject.at_ms if subject.at_ms is not None else iv.pts_ms[0]
    if not iv.pts_ms[0] - 1000 <= at <= iv.pts_ms[-1] + 1000:
        raise InputError(f"subject time {iso(at)} is outside the exported interval {iso(from_ms)}..{iso(to_ms)}")
    start = min(range(len(iv.pts_ms)), key=lambda i: abs(iv.pts_ms[i] - at))
    res = redact_keep_subject(iv.frames, subject.xyxy, start,
                              redactor=redactor or subject_plan_redactor(gov, camera_id, pol), style=pol.style,
                              progress=prog.stage(0.15, 0.9))
    report = res.report()
    report.update(camera_id=camera_id, case_id=case_id, source="raw vault", **{"from": iso(from_ms), "to": iso(to_ms)},
                  subject={"box_xywh": [subject.x, subject.y, subject.w, subject.h], "at": iso(at),
                           "frame": start},
                  raw_objects=iv.raw_keys)
    ev = gov.record("subject_export", camera_id=camera_id, case_id=case_id, object_keys=iv.raw_keys,
                    details={"from": iso(from_ms), "to": iso(to_ms), "output": str(output),
                             "frames": report["frames"], "subject_visible_frames": report["subject_visible_frames"],
                             "track_lost_from_frame": report["track_lost_from_frame"]})
    report["audit_event_id"] = ev.event_id
    write_mp4(res.frames, iv.pts_ms, iv.fps, output)
    prog.report(0.98)
    rp = report_path or output.with_suffix(".json")
    rp.write_text(json.dumps(report, indent=2) + "\n")
    prog.report(1.0)
    return ExportResult(str(output), report, ev.event_id)


def case_export(gov: Governance, camera_id: str, from_ms: int, to_ms: int, *, case_id: str, legal_basis: str,
                official: str, output: Path, progress: Progress | None = None) -> ExportResult:
    """Unmasked footage from the raw vault for an investigation: only with a case id, a
    stated legal basis and the requesting official, all recorded. ``progress`` (optional)
    gets a growing fraction, chunk by chunk, and 1.0 once the video and report are written."""
    missing = [n for n, v in (("--case", case_id), ("--legal-basis", legal_basis), ("--official", official))
               if not (v and str(v).strip())]
    if missing:
        raise InputError(f"case export needs {', '.join(missing)}: unmasked footage is released only for a "
                         "documented request")
    prog = Stages(progress)
    chunks, pol = _raw_chunks(gov, camera_id, from_ms, to_ms, "case export")
    prog.report(0.05)
    keys = [k for k, _m, _p in chunks]
    n = sum(from_ms <= int(t) <= to_ms for _k, m, _p in chunks for t in m.get("pts_ms") or ())
    if n == 0:
        raise AccessError(f"case export: no frame of the raw vault falls between {iso(from_ms)} and {iso(to_ms)}")
    ev = gov.record("case_export", camera_id=camera_id, case_id=case_id, object_keys=keys,
                    details={"legal_basis": legal_basis, "official": official, "from": iso(from_ms),
                             "to": iso(to_ms), "output": str(output), "frames": n, "unmasked": True})
    write_chunks_mp4(chunks, from_ms, to_ms, output, prog.stage(0.05, 0.97))  # chunk by chunk: bounded memory
    report = {"camera_id": camera_id, "case_id": case_id, "legal_basis": legal_basis, "official": official,
              "from": iso(from_ms), "to": iso(to_ms), "frames": n, "unmasked": True,
              "raw_objects": keys, "original_payload_sha256": {k: hashlib.sha256(p).hexdigest() for k, _m, p in chunks},
              "policy_id": pol.policy_id, "audit_event_id": ev.event_id}
    output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    prog.report(1.0)
    return ExportResult(str(output), report, ev.event_id)
