"""What privacy officers and investigators do with stored footage: the Python API behind
``veilstream subject|case|share|hold|verify`` and the console.

Every function takes a :class:`Governance` (stores, vault, audit log, actor) and records
an audit event (who, when, case, object keys) in the WORM audit bucket and on
``veil.audit`` BEFORE it hands anything out; an action that cannot be recorded fails.

    gov = Governance.from_config(load_config(path), actor="officer.kim")
    subject_export(gov, "cam-001", t1_ms, t2_ms, SubjectBox(...), case_id="SR-17", output=Path("me.mp4"))
    case_export(gov, "cam-001", t1_ms, t2_ms, case_id="C-9", legal_basis="...", official="...", output=...)
    share(gov, key, ttl_s=900, case_id="C-9")             -> ShareLink
    open_share(url, output)                               (refuses an expired link)
    hold(gov, "cam-001", t1_ms, t2_ms, case_id="C-9", enable=True, role="investigator") -> HoldResult
                                                          (per case: lifting C-9 releases only what no other case holds)
    verify(gov, "cam-001", "2026-11-23")                  -> chain.VerifyReport
    cameras(gov)                                          -> camera records with their notice
    audit_events(gov, day)                                -> recorded events

Errors are :class:`AccessError` (or a :class:`~pipeline.governance.vault.VaultError`) with
one clear line: the CLI prints it and exits non-zero.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.errors import InputError, VeilStreamError

from .audit import AuditLog, current_actor
from .chain import VerifyReport, chain_prefix, verify_day
from .vault import RawVault, VaultError, data_key_object, days_between, key_provider_from_config

logger = logging.getLogger(__name__)

__all__ = [
    "AccessError", "ExportResult", "MAX_EXPORT_BYTES", "VaultError", "Governance", "HoldResult", "ShareLink", "SubjectBox", "audit_events", "cameras",
    "HOLD_ROLES", "HoldRefusedError", "LEGACY_CASE", "hold_cases", "may_lift",
    "case_export", "hold", "open_share", "parse_duration", "parse_subject", "parse_time", "record_camera_change", "share",
    "subject_export", "verify",
]

MAX_EXPORT_BYTES = int(os.environ.get("VEILSTREAM_EXPORT_MAX_BYTES", str(3 * 1024**3)))
"""An export decodes its interval into memory (the tracker looks forward and backward):
at most this many bytes of frames, 3 GiB by default = ~18 min of 640x360 or ~3.5 min of
1280x720 at 25 fps. A longer interval is refused with the length that fits (export it in
pieces); ``$VEILSTREAM_EXPORT_MAX_BYTES`` raises it on a bigger machine."""


def too_long(frames: int, frame_bytes: int, fps: float, what: str) -> InputError | None:
    """The error for an interval whose decoded frames exceed :data:`MAX_EXPORT_BYTES`."""
    if frames * frame_bytes <= MAX_EXPORT_BYTES:
        return None
    fit_s = MAX_EXPORT_BYTES // max(frame_bytes, 1) / max(fps, 1e-3)
    return InputError(f"{what}: more than {MAX_EXPORT_BYTES // 1024**2} MiB of decoded frames; at this resolution "
                      f"one export holds at most {fit_s:.0f}s: export the interval in pieces")


class AccessError(VeilStreamError):
    """A governance action refused or impossible, with the reason in one line."""


# ---------------------------------------------------------------- parsing (pure)
def parse_time(value: str | int | float) -> int:
    """``2026-11-23T10:15:00Z`` / ``2026-11-23 10:15:00+09:00`` / epoch ms -> epoch ms (UTC)."""
    if isinstance(value, int | float):
        return int(value)
    s = str(value).strip()
    if re.fullmatch(r"\d{11,14}", s):
        return int(s)
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"time {value!r}: expected ISO 8601 like 2026-11-23T10:15:00Z, or epoch milliseconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def parse_duration(value: str) -> int:
    """``15m`` / ``1h`` / ``90s`` / ``2d`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(value))
    if not m or int(m.group(1)) <= 0:
        raise InputError(f"duration {value!r}: expected a positive number with s, m, h or d (e.g. 15m)")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


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


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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


# ---------------------------------------------------------------- progress
Progress = Callable[[float], None]
"""An export's progress: called with a fraction in [0, 1], never decreasing, 1.0 last."""


class _Stages:
    """Maps each stage's own 0..1 onto its share of the whole, so the caller sees one fraction
    that only grows (a stage reporting less than before is ignored) and ends at exactly 1.0."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.done = 0.0

    def report(self, fraction: float) -> None:
        f = min(1.0, max(0.0, float(fraction)))
        if f <= self.done:
            return
        self.done = f
        if self.progress is not None:
            self.progress(f)

    def stage(self, lo: float, hi: float) -> Progress:
        return lambda f: self.report(lo + (hi - lo) * min(1.0, max(0.0, float(f))))


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


@dataclass
class DecodedInterval:
    frames: Any  # (N, H, W, 3) uint8
    pts_ms: list[int]
    fps: float
    raw_keys: list[str]
    payload_sha256: dict[str, str]


def _decode(chunks: Sequence[tuple[str, dict[str, Any], bytes]], from_ms: int, to_ms: int,
            progress: Progress | None = None) -> DecodedInterval:
    import numpy as np

    from operators.codec import decode_chunk_payload

    frames, pts = [], []
    fps = float(chunks[0][1].get("fps") or 25.0)
    for n, (_key, meta, payload) in enumerate(chunks, 1):
        dec = decode_chunk_payload(str(meta["codec"]), payload, (int(meta["width"]), int(meta["height"])))
        for f, t in zip(dec, meta["pts_ms"], strict=False):
            if from_ms <= int(t) <= to_ms:
                frames.append(f)
                pts.append(int(t))
        err = too_long(len(frames), int(frames[0].nbytes) if frames else 0, fps, "interval")
        if err is not None:
            raise err
        if progress is not None:
            progress(n / len(chunks))
    if not frames:
        raise AccessError(f"no frame of the raw vault falls between {iso(from_ms)} and {iso(to_ms)}")
    return DecodedInterval(np.stack(frames), pts, fps, [k for k, _m, _p in chunks],
                           {k: hashlib.sha256(p).hexdigest() for k, _m, p in chunks})


def _write_mp4(frames: Any, pts_ms: Sequence[int], fps: float, output: Path) -> None:
    from fractions import Fraction

    import numpy as np

    from operators.video import VideoWriter

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part.mp4")
    h, w = frames.shape[1:3]
    writer = VideoWriter(tmp, w, h, fps, Fraction(1, 1000))
    try:
        writer.write(frames, np.asarray([t - pts_ms[0] for t in pts_ms], np.int64))
        writer.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(output)


def _write_chunks_mp4(chunks: Sequence[tuple[str, dict[str, Any], bytes]], from_ms: int, to_ms: int,
                      output: Path, progress: Progress | None = None) -> None:
    """Decode and encode the interval one chunk at a time (H.264 MP4, camera timestamps)."""
    from fractions import Fraction

    import numpy as np

    from operators.codec import decode_chunk_payload
    from operators.video import VideoWriter

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part.mp4")
    writer: Any = None
    t0 = 0
    try:
        for n, (_key, meta, payload) in enumerate(chunks, 1):
            pts = [int(t) for t in meta["pts_ms"]]
            sel = [i for i, t in enumerate(pts) if from_ms <= t <= to_ms]
            if progress is not None:
                progress((n - 1) / len(chunks))
            if not sel:
                continue
            dec = decode_chunk_payload(str(meta["codec"]), payload, (int(meta["width"]), int(meta["height"])))
            if writer is None:
                t0 = pts[sel[0]]
                writer = VideoWriter(tmp, int(meta["width"]), int(meta["height"]), float(meta.get("fps") or 25.0),
                                     Fraction(1, 1000))
            writer.write(dec[sel], np.asarray([pts[i] - t0 for i in sel], np.int64))
        if writer is not None:
            writer.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(output)


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
    prog = _Stages(progress)
    chunks, pol = _raw_chunks(gov, camera_id, from_ms, to_ms, "subject export")
    prog.report(0.05)
    iv = _decode(chunks, from_ms, to_ms, prog.stage(0.05, 0.15))
    h, w = iv.frames.shape[1:3]
    subject.check_inside(w, h)
    at = subject.at_ms if subject.at_ms is not None else iv.pts_ms[0]
    if not iv.pts_ms[0] - 1000 <= at <= iv.pts_ms[-1] + 1000:
        raise InputError(f"subject time {iso(at)} is outside the exported interval {iso(from_ms)}..{iso(to_ms)}")
    start = min(range(len(iv.pts_ms)), key=lambda i: abs(iv.pts_ms[i] - at))
    res = redact_keep_subject(iv.frames, subject.xyxy, start, redactor=redactor, style=pol.style,
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
    _write_mp4(res.frames, iv.pts_ms, iv.fps, output)
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
    prog = _Stages(progress)
    chunks, pol = _raw_chunks(gov, camera_id, from_ms, to_ms, "case export")
    prog.report(0.05)
    keys = [k for k, _m, _p in chunks]
    n = sum(from_ms <= int(t) <= to_ms for _k, m, _p in chunks for t in m.get("pts_ms") or ())
    if n == 0:
        raise AccessError(f"case export: no frame of the raw vault falls between {iso(from_ms)} and {iso(to_ms)}")
    ev = gov.record("case_export", camera_id=camera_id, case_id=case_id, object_keys=keys,
                    details={"legal_basis": legal_basis, "official": official, "from": iso(from_ms),
                             "to": iso(to_ms), "output": str(output), "frames": n, "unmasked": True})
    _write_chunks_mp4(chunks, from_ms, to_ms, output, prog.stage(0.05, 0.97))  # chunk by chunk: bounded memory
    report = {"camera_id": camera_id, "case_id": case_id, "legal_basis": legal_basis, "official": official,
              "from": iso(from_ms), "to": iso(to_ms), "frames": n, "unmasked": True,
              "raw_objects": keys, "original_payload_sha256": {k: hashlib.sha256(p).hexdigest() for k, _m, p in chunks},
              "policy_id": pol.policy_id, "audit_event_id": ev.event_id}
    output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    prog.report(1.0)
    return ExportResult(str(output), report, ev.event_id)


# ---------------------------------------------------------------- share links
@dataclass(frozen=True)
class ShareLink:
    url: str
    key: str
    case_id: str
    expires_at_ms: int
    event_id: str


def share(gov: Governance, key: str, *, ttl_s: int, case_id: str) -> ShareLink:
    """A presigned GET link to one redacted segment (never raw footage, never a manifest of
    another bucket), valid ``ttl_s`` (at most 7 days, S3's limit)."""
    if not case_id:
        raise InputError("share: --case is required")
    if not 1 <= ttl_s <= 7 * 86400:
        raise InputError(f"share: --ttl must be between 1s and 7d, got {ttl_s}s")
    if not key.endswith(".mp4") or not key.startswith("camera=") or key.endswith(".raw"):
        raise AccessError(f"share: {key!r} is not a redacted segment key (camera=<id>/date=.../<start>_<end>.mp4); "
                          "raw footage is never shared by link")
    if gov.store.stat_object(key) is None:
        raise AccessError(f"share: no redacted segment {key!r} in bucket {gov.store.bucket}")
    camera_id = key.split("/", 1)[0][len("camera="):]
    expires = int(time.time() * 1000) + ttl_s * 1000
    ev = gov.record("share", camera_id=camera_id, case_id=case_id, object_keys=[key],
                    details={"ttl_s": ttl_s, "expires_at": iso(expires), "bucket": gov.store.bucket})
    url = gov.store.client.presigned_get_object(gov.store.bucket, key, expires=dt.timedelta(seconds=ttl_s))
    return ShareLink(url, key, case_id, expires, ev.event_id)


def share_expiry_ms(url: str) -> int:
    """When a presigned (SigV4) link expires: ``X-Amz-Date`` + ``X-Amz-Expires``."""
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    try:
        signed = dt.datetime.strptime(q["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        return int(signed.timestamp() * 1000) + int(q["X-Amz-Expires"][0]) * 1000
    except (KeyError, ValueError, IndexError):
        raise InputError("not a VeilStream share link (no X-Amz-Date / X-Amz-Expires)") from None


def open_share(url: str, output: Path, *, now_ms: int | None = None) -> int:
    """Download what a share link points to; an expired link is refused (checked here as
    well as by the storage, which enforces the signature's expiry). Returns bytes written."""
    import urllib.error
    import urllib.request

    exp = share_expiry_ms(url)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    if now >= exp:
        raise AccessError(f"share link expired at {iso(exp)} ({(now - exp) // 1000}s ago): ask the privacy "
                          "office for a new one")
    try:
        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - a presigned http(s) link
            data = r.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()[:500].decode("utf-8", "replace")
        if "expired" in body.lower():
            raise AccessError(f"share link expired at {iso(exp)}: the storage refused it") from None
        raise AccessError(f"share link refused by the storage: HTTP {exc.code}") from None
    output.write_bytes(data)
    return len(data)


# ---------------------------------------------------------------- legal hold
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


# ---------------------------------------------------------------- verify, cameras, events
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

