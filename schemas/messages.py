"""Wire messages: one Kafka message per chunk, metadata in headers, payload in the value.

Layout of every VeilStream message::

    key      camera id (utf-8), so a camera's chunks stay ordered in one partition
    value    payload bytes (H.264 Annex-B or length-prefixed JPEGs; the DLQ keeps the
             original value untouched)
    headers  veil-meta       utf-8 JSON, validated by <type>.schema.json
             veil-type       ChunkCaptured | ChunkRedacted | DlqRecord
             schema_version  b"1"
             content-type    video/h264 | application/x-veil-jpeg-frames | ...

Keeping metadata out of the value means a consumer (or the sink) can route, count and
DLQ a chunk without touching its payload, and the payload is never base64-inflated.
``payload_size`` in the metadata must equal ``len(value)``: a truncated message is
caught here, not by a decoder deep inside a Ray actor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import SCHEMA_VERSION, SchemaError, problems
from .config import CameraConfig, config_to_dict, parse_camera
from .errors import ConfigError
from .safety import chunk_limit_problem

__all__ = [
    "CONTENT_TYPES",
    "HEADER_CONTENT_TYPE",
    "HEADER_META",
    "HEADER_TYPE",
    "HEADER_VERSION",
    "ChunkCaptured",
    "ChunkRedacted",
    "DlqRecord",
    "KeyMismatchError",
    "LimitExceededError",
    "SchemaError",
    "decode_camera",
    "decode_chunk_captured",
    "decode_chunk_redacted",
    "decode_dlq",
    "encode_camera",
    "encode_chunk",
    "encode_dlq",
]

HEADER_META = "veil-meta"
HEADER_TYPE = "veil-type"
HEADER_VERSION = "schema_version"
HEADER_CONTENT_TYPE = "content-type"

CONTENT_TYPES = {"h264": "video/h264", "jpeg": "application/x-veil-jpeg-frames"}
DLQ_CONTENT_TYPE = "application/octet-stream"
CAMERA_CONTENT_TYPE = "application/json"

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class ChunkCaptured:
    """A chunk of one camera as ingest produced it (``veil.chunks.raw``).

    Attributes:
        camera_id: registry id; also the Kafka key.
        chunk_seq: per-camera sequence number, strictly increasing; starts time-derived
            (first frame ms // chunk ms) so it keeps increasing across reconnects and
            moves between ingest workers.
        pts_ms: camera timestamp of each frame in ms, presentation order; ``len`` is the
            frame count the payload must decode to.
        fps: nominal frame rate.
        width, height: frame size in pixels.
        codec: ``"h264"`` (Annex-B, starts with a keyframe) or ``"jpeg"``.
        captured_at_ms: Unix wall clock (ms) of the first frame's capture.
        payload: the encoded frames (the Kafka value).
        dropped_frames: frames ingest dropped (could not keep up) since the previous chunk.
        policy_id: the camera's policy (its registry record); ``None`` = the process
            worker's default policy.
        zones: the camera's privacy zones (its registry record): the process stage masks
            them on every frame, together with its policy's zones.
    """

    camera_id: str
    chunk_seq: int
    pts_ms: tuple[int, ...]
    fps: float
    width: int
    height: int
    codec: str
    captured_at_ms: int
    payload: bytes = field(repr=False)
    dropped_frames: int = 0
    policy_id: str | None = None
    zones: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ChunkRedacted:
    """A redacted chunk (``veil.chunks.redacted``): ``ChunkCaptured`` plus what was masked.

    Attributes:
        masks_per_class: masks drawn in the chunk per class name (``face``, ``plate``, ...).
        fail_closed_frames: indices (into ``pts_ms``) of frames masked whole because their
            detection failed, timed out, or their input was damaged.
        models: ``{"id": ..., "version"/"sha256": ...}`` of each model that ran.
        policy_id, policy_version: the policy that decided what to mask.
        dropped_frames: frames dropped upstream of this chunk (counted, never silent).
    """

    camera_id: str
    chunk_seq: int
    pts_ms: tuple[int, ...]
    fps: float
    width: int
    height: int
    codec: str
    captured_at_ms: int
    payload: bytes = field(repr=False)
    masks_per_class: dict[str, int] = field(default_factory=dict)
    fail_closed_frames: tuple[int, ...] = ()
    models: tuple[dict[str, Any], ...] = ()
    policy_id: str = "default"
    policy_version: int | str = 1
    dropped_frames: int = 0


@dataclass(frozen=True)
class DlqRecord:
    """Why a message went to ``veil.dlq`` and where it came from."""

    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    headers: dict[str, str]
    error: str
    at_ms: int
    payload_size: int


# ---------------------------------------------------------------- encode


def _meta_of(msg: ChunkCaptured | ChunkRedacted) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "camera_id": msg.camera_id,
        "chunk_seq": int(msg.chunk_seq),
        "pts_ms": [int(t) for t in msg.pts_ms],
        "fps": float(msg.fps),
        "width": int(msg.width),
        "height": int(msg.height),
        "codec": msg.codec,
        "captured_at_ms": int(msg.captured_at_ms),
        "payload_size": len(msg.payload),
        "dropped_frames": int(msg.dropped_frames),
    }
    if isinstance(msg, ChunkCaptured) and msg.policy_id is not None:
        meta["policy_id"] = msg.policy_id
    if isinstance(msg, ChunkCaptured) and msg.zones:
        meta["zones"] = [dict(z) for z in msg.zones]
    if isinstance(msg, ChunkRedacted):
        meta.update(
            masks_per_class={str(k): int(v) for k, v in msg.masks_per_class.items()},
            fail_closed_frames=[int(i) for i in msg.fail_closed_frames],
            models=[dict(m) for m in msg.models],
            policy_id=msg.policy_id,
            policy_version=msg.policy_version,
        )
    return meta


def _headers(type_name: str, meta: Mapping[str, Any], content_type: str) -> Headers:
    return [
        (HEADER_META, json.dumps(meta, separators=(",", ":"), sort_keys=True).encode("utf-8")),
        (HEADER_TYPE, type_name.encode("ascii")),
        (HEADER_VERSION, str(SCHEMA_VERSION).encode("ascii")),
        (HEADER_CONTENT_TYPE, content_type.encode("ascii")),
    ]


def _check(schema: str, meta: Mapping[str, Any], what: str) -> None:
    found = problems(schema, meta)
    if found:
        raise SchemaError(f"{what}: " + "; ".join(found))


def encode_chunk(msg: ChunkCaptured | ChunkRedacted) -> tuple[bytes, Headers]:
    """``(value, headers)`` of the Kafka message for a chunk (key = ``msg.camera_id``).

    Raises:
        SchemaError: the message does not conform to its schema (nothing invalid is
            ever produced).
    """
    if not isinstance(msg, ChunkCaptured | ChunkRedacted):
        raise SchemaError(f"encode_chunk: expected ChunkCaptured or ChunkRedacted, got {type(msg).__name__}")
    type_name = type(msg).__name__
    schema = "chunk_redacted" if isinstance(msg, ChunkRedacted) else "chunk_captured"
    if not isinstance(msg.payload, bytes | bytearray | memoryview):
        raise SchemaError(f"cannot encode {type_name}: payload must be bytes, got {type(msg.payload).__name__}")
    meta = _meta_of(msg)
    _check(schema, meta, f"cannot encode {type_name}")
    content_type = CONTENT_TYPES.get(msg.codec, "application/octet-stream")
    return bytes(msg.payload), _headers(type_name, meta, content_type)


def encode_dlq(rec: DlqRecord, value: bytes | None) -> tuple[bytes, Headers]:
    """``(value, headers)`` for ``veil.dlq``: the original value untouched, the record in
    ``veil-meta``."""
    meta = {"schema_version": SCHEMA_VERSION, "reason": rec.reason, "source_topic": rec.source_topic,
            "source_partition": int(rec.source_partition), "source_offset": int(rec.source_offset),
            "headers": {str(k): str(v) for k, v in rec.headers.items()}, "error": rec.error[:4000],
            "at_ms": int(rec.at_ms), "payload_size": int(rec.payload_size)}
    _check("dlq_record", meta, "cannot encode DlqRecord")
    return bytes(value or b""), _headers("DlqRecord", meta, DLQ_CONTENT_TYPE)


def encode_camera(cam: CameraConfig) -> tuple[bytes, bytes, Headers]:
    """``(key, value, headers)`` of a registry record for the compacted cameras topic.
    Removing a camera is a tombstone: key with value ``None``."""
    data = config_to_dict(cam)
    _check("camera", data, "cannot encode camera record")
    value = json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")
    headers = [(HEADER_TYPE, b"CameraRecord"), (HEADER_VERSION, str(SCHEMA_VERSION).encode("ascii")),
               (HEADER_CONTENT_TYPE, CAMERA_CONTENT_TYPE.encode("ascii"))]
    return cam.camera_id.encode("utf-8"), value, headers


# ---------------------------------------------------------------- decode


def _header_map(headers: Sequence[tuple[str, bytes | str | None]] | Mapping[str, Any] | None) -> dict[str, bytes]:
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, bytes] = {}
    for k, v in items:
        out[k] = v.encode("utf-8") if isinstance(v, str) else (v or b"")
    return out


def _read_meta(value: bytes | None, headers: Any, type_name: str, schema: str) -> dict[str, Any]:
    what = f"invalid {type_name}"
    h = _header_map(headers)
    version = h.get(HEADER_VERSION)
    if version is None:
        raise SchemaError(f"{what}: missing header {HEADER_VERSION!r}")
    if version.strip() != str(SCHEMA_VERSION).encode():
        raise SchemaError(f"{what}: unsupported {HEADER_VERSION} {version.decode('utf-8', 'replace')!r}; "
                          f"this build reads version {SCHEMA_VERSION}")
    got_type = h.get(HEADER_TYPE)
    if got_type is not None and got_type.decode("utf-8", "replace") != type_name:
        raise SchemaError(f"{what}: header {HEADER_TYPE} is {got_type.decode('utf-8', 'replace')!r}")
    raw = h.get(HEADER_META)
    if raw is None:
        raise SchemaError(f"{what}: missing header {HEADER_META!r}")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{what}: header {HEADER_META} is not utf-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{what}: header {HEADER_META} is not JSON: {exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}") from None
    if not isinstance(meta, dict):
        raise SchemaError(f"{what}: header {HEADER_META} must be a JSON object, got {type(meta).__name__}")
    if meta.get("schema_version") != SCHEMA_VERSION and "schema_version" in meta:
        raise SchemaError(f"{what}: unsupported schema_version {meta.get('schema_version')!r} in {HEADER_META}; "
                          f"this build reads version {SCHEMA_VERSION}")
    found = problems(schema, meta)
    if found:
        raise SchemaError(f"{what}: {HEADER_META}: " + "; ".join(found))
    size = len(value or b"")
    if meta["payload_size"] != size:
        raise SchemaError(f"{what}: payload is {size} bytes but {HEADER_META} declares payload_size "
                          f"{meta['payload_size']} (truncated or corrupted message)")
    return meta


def _check_frames(meta: Mapping[str, Any], what: str) -> None:
    pts = meta["pts_ms"]
    if any(b < a for a, b in zip(pts, pts[1:], strict=False)):
        raise SchemaError(f"{what}: pts_ms must be non-decreasing")
    for i in meta.get("fail_closed_frames", ()):
        if i >= len(pts):
            raise SchemaError(f"{what}: fail_closed_frames has index {i} but the chunk has {len(pts)} frames")


class KeyMismatchError(SchemaError):
    """The Kafka key is not the ``camera_id`` of the metadata (DLQ reason ``key_mismatch``):
    the sender must not choose another camera's partition or storage prefix."""

    reason = "key_mismatch"


class LimitExceededError(SchemaError):
    """A chunk beyond the configured ``limits`` (DLQ reason ``limit_exceeded``)."""

    reason = "limit_exceeded"


_UNCHECKED: Any = object()


def _check_envelope(meta: Mapping[str, Any], value: bytes | None, key: Any, limits: Any, what: str) -> None:
    if key is not _UNCHECKED:
        got = key.decode("utf-8", "replace") if isinstance(key, bytes | bytearray) else key
        if got != meta["camera_id"]:
            shown = "no key" if got is None else f"key {str(got)[:80]!r}"
            raise KeyMismatchError(f"{what}: message has {shown} but {HEADER_META} names camera_id "
                                   f"{meta['camera_id']!r} (key and camera_id must agree)")
    problem = chunk_limit_problem(limits, width=meta["width"], height=meta["height"], frames=len(meta["pts_ms"]),
                                  payload_bytes=len(value or b""))
    if problem:
        raise LimitExceededError(f"{what}: camera={meta['camera_id']} chunk_seq={meta['chunk_seq']}: {problem}")


def decode_chunk_captured(value: bytes | None, headers: Any, *, key: Any = _UNCHECKED,
                          limits: Any = None) -> ChunkCaptured:
    """Parse a ``veil.chunks.raw`` message (``msg.value()``, ``msg.headers()``).

    Args:
        key: the Kafka key (``msg.key()``); when given it must equal ``camera_id``.
        limits: a ``LimitsConfig``; a chunk beyond it is refused before any decoding.

    Raises:
        SchemaError: missing header, wrong version, bad JSON, schema violation (with
            its path), or a payload whose size differs from the declared one.
        KeyMismatchError, LimitExceededError: (subclasses) see above.
    """
    meta = _read_meta(value, headers, "ChunkCaptured", "chunk_captured")
    _check_frames(meta, "invalid ChunkCaptured")
    _check_envelope(meta, value, key, limits, "invalid ChunkCaptured")
    return ChunkCaptured(
        camera_id=meta["camera_id"], chunk_seq=meta["chunk_seq"], pts_ms=tuple(meta["pts_ms"]),
        fps=float(meta["fps"]), width=meta["width"], height=meta["height"], codec=meta["codec"],
        captured_at_ms=meta["captured_at_ms"], payload=bytes(value or b""),
        dropped_frames=int(meta.get("dropped_frames", 0)), policy_id=meta.get("policy_id"),
        zones=tuple(dict(z) for z in meta.get("zones", ())),
    )


def decode_chunk_redacted(value: bytes | None, headers: Any, *, key: Any = _UNCHECKED,
                          limits: Any = None) -> ChunkRedacted:
    """Parse a ``veil.chunks.redacted`` message; raises :class:`SchemaError` (and its
    subclasses) like :func:`decode_chunk_captured`."""
    meta = _read_meta(value, headers, "ChunkRedacted", "chunk_redacted")
    _check_frames(meta, "invalid ChunkRedacted")
    _check_envelope(meta, value, key, limits, "invalid ChunkRedacted")
    return ChunkRedacted(
        camera_id=meta["camera_id"], chunk_seq=meta["chunk_seq"], pts_ms=tuple(meta["pts_ms"]),
        fps=float(meta["fps"]), width=meta["width"], height=meta["height"], codec=meta["codec"],
        captured_at_ms=meta["captured_at_ms"], payload=bytes(value or b""),
        masks_per_class=dict(meta["masks_per_class"]), fail_closed_frames=tuple(meta["fail_closed_frames"]),
        models=tuple(dict(m) for m in meta["models"]), policy_id=meta["policy_id"],
        policy_version=meta["policy_version"], dropped_frames=meta["dropped_frames"],
    )


def decode_dlq(value: bytes | None, headers: Any) -> DlqRecord:
    """Parse a ``veil.dlq`` message's record (the value is the original payload)."""
    meta = _read_meta(value, headers, "DlqRecord", "dlq_record")
    return DlqRecord(reason=meta["reason"], source_topic=meta["source_topic"],
                     source_partition=meta["source_partition"], source_offset=meta["source_offset"],
                     headers=dict(meta["headers"]), error=meta["error"], at_ms=meta["at_ms"],
                     payload_size=meta["payload_size"])


def decode_camera(value: bytes | None) -> CameraConfig | None:
    """A registry record from the cameras topic; ``None`` for a tombstone (camera removed).

    Raises:
        SchemaError: not JSON, or not a valid camera record.
    """
    if value is None:
        return None
    try:
        data = json.loads(bytes(value).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"invalid camera record: not utf-8 JSON: {exc}") from None
    try:
        return parse_camera(data)
    except ConfigError as exc:  # on the wire a bad record is a bad message, not a bad config
        raise SchemaError(str(exc)) from None
