"""Segment assembly for the sink: pure (no Kafka, no object store).

Redacted chunks (~2 s, one closed GOP each) of one camera are grouped into segments of
``segment_seconds`` aligned to wall-clock multiples of the CAMERA timestamps, so a
replay of the same chunks produces the same segments and the same keys::

    camera=<id>/date=YYYY-MM-DD/hour=HH/<window start>_<window end>.mp4   (UTC)

A chunk belongs to the window of its first frame (a chunk is never split: that would need
a re-encode). The MP4 is a remux of the chunks' H.264 packets, never a re-encode.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from pipeline.objectkeys import SegmentError, format_ts, segment_key

logger = logging.getLogger(__name__)

MANIFEST_SCHEMA_VERSION = 1
TIME_BASE = Fraction(1, 90000)  # MPEG ticks: exact for 25/30/50 fps and ms timestamps
_TICKS_PER_MS = 90
_SAFE_TAG = re.compile(r"[^A-Za-z0-9 +\-=._:/@]")

SourceOffset = tuple[str, int, int]  # (topic, partition, offset)


class RedactedChunk(Protocol):
    """The fields of ``schemas.messages.ChunkRedacted`` the sink reads (read-only)."""

    @property
    def camera_id(self) -> str: ...

    @property
    def chunk_seq(self) -> int: ...

    @property
    def pts_ms(self) -> Sequence[int]: ...

    @property
    def fps(self) -> float: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def codec(self) -> str: ...

    @property
    def captured_at_ms(self) -> int: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def masks_per_class(self) -> Mapping[str, int]: ...

    @property
    def fail_closed_frames(self) -> Sequence[int]: ...

    @property
    def models(self) -> Sequence[Any]: ...

    @property
    def policy_id(self) -> str: ...

    @property
    def policy_version(self) -> int | str: ...


# ---------------------------------------------------------------- windows
def window_of(ts_ms: int, segment_seconds: float = 60) -> tuple[int, int]:
    """The ``[start, end)`` window, in ms, aligned to multiples of ``segment_seconds``
    since the Unix epoch (so 60 s windows start on the minute, 3600 s on the hour)."""
    span = int(round(segment_seconds * 1000))
    if span <= 0:
        raise ValueError(f"segment_seconds must be > 0, got {segment_seconds}")
    start = ts_ms - ts_ms % span
    return start, start + span


# ---------------------------------------------------------------- assembly
@dataclass
class CompletedSegment:
    """A camera's chunks of one window, in arrival (= camera) order."""

    camera_id: str
    start_ms: int  # window start (key)
    end_ms: int  # window end (key)
    chunks: list[Any] = field(default_factory=list)
    sources: list[SourceOffset] = field(default_factory=list)
    last_seen: float = 0.0  # caller's clock when the last chunk arrived

    @property
    def frames(self) -> int:
        return sum(len(c.pts_ms) for c in self.chunks)

    @property
    def chunk_seqs(self) -> list[int]:
        return [int(c.chunk_seq) for c in self.chunks]

    @property
    def first_frame_ms(self) -> int:
        return int(self.chunks[0].pts_ms[0]) if self.chunks and self.chunks[0].pts_ms else self.start_ms

    @property
    def last_frame_ms(self) -> int:
        for c in reversed(self.chunks):
            if c.pts_ms:
                return int(c.pts_ms[-1])
        return self.start_ms

    @property
    def masks_per_class(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.chunks:
            for k, v in (c.masks_per_class or {}).items():
                out[k] = out.get(k, 0) + int(v)
        return dict(sorted(out.items()))

    @property
    def fail_closed_frames(self) -> int:
        return sum(len(c.fail_closed_frames or ()) for c in self.chunks)

    @property
    def fail_closed_pts_ms(self) -> list[int]:
        out: list[int] = []
        for c in self.chunks:
            out.extend(int(c.pts_ms[i]) for i in (c.fail_closed_frames or ()) if 0 <= i < len(c.pts_ms))
        return out

    @property
    def dropped_frames(self) -> int:
        return sum(int(getattr(c, "dropped_frames", 0) or 0) for c in self.chunks)

    @property
    def models(self) -> list[dict[str, Any]]:
        """Distinct models over all chunks, in first-seen order."""
        seen: dict[str, dict[str, Any]] = {}
        prev: Any = None
        for c in self.chunks:
            if c.models == prev:  # the chunk before named the same models (the rule): nothing new
                continue
            prev = c.models
            for m in c.models or ():
                d = dict(m) if isinstance(m, Mapping) else {"id": str(m)}
                seen.setdefault(json.dumps(d, sort_keys=True, default=str), d)
        return list(seen.values())

    @property
    def policies(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for c in self.chunks:
            p = (str(c.policy_id), str(c.policy_version))
            if p not in out:
                out.append(p)
        return out

    @property
    def captured_at_ms(self) -> int:
        return min((int(c.captured_at_ms) for c in self.chunks), default=0)

    def key(self, part: int | None = None) -> str:
        return segment_key(self.camera_id, self.start_ms, self.end_ms, part)

    def partitions(self) -> set[tuple[str, int]]:
        return {(t, p) for t, p, _o in self.sources}


class SegmentAssembler:
    """Per-camera open segments. Not thread-safe; the sink loop owns it.

    A camera's open segment completes when a chunk of a later (or earlier: a camera
    whose clock jumped back) window arrives, on :meth:`flush_idle`, or on :meth:`flush_all`.
    """

    def __init__(self, segment_seconds: float = 60) -> None:
        self.segment_seconds = segment_seconds
        self.open: dict[str, CompletedSegment] = {}

    def add(self, chunk: RedactedChunk, source: SourceOffset, now: float = 0.0) -> list[CompletedSegment]:
        if not chunk.pts_ms:
            raise SegmentError(f"chunk without frames camera={chunk.camera_id} chunk_seq={chunk.chunk_seq}")
        start, end = window_of(int(chunk.pts_ms[0]), self.segment_seconds)
        done: list[CompletedSegment] = []
        seg = self.open.get(chunk.camera_id)
        if seg is not None and seg.start_ms != start:
            done.append(self.open.pop(chunk.camera_id))
            seg = None
        if seg is None:
            seg = self.open[chunk.camera_id] = CompletedSegment(chunk.camera_id, start, end)
        seg.chunks.append(chunk)
        seg.sources.append(source)
        seg.last_seen = now
        return done

    def flush_idle(self, now: float, idle_s: float) -> list[CompletedSegment]:
        """Complete segments whose camera sent nothing for ``idle_s`` (same clock as ``add``)."""
        cams = [c for c, s in self.open.items() if now - s.last_seen >= idle_s]
        return [self.open.pop(c) for c in cams]

    def flush_all(self) -> list[CompletedSegment]:
        out = list(self.open.values())
        self.open.clear()
        return out

    def revoke(self, tps: Iterable[tuple[str, int]]) -> list[CompletedSegment]:
        """Drop open segments holding chunks of lost partitions (their new owner rebuilds them)."""
        lost = set(tps)
        cams = [c for c, s in self.open.items() if s.partitions() & lost]
        return [self.open.pop(c) for c in cams]


# ---------------------------------------------------------------- replay safety
def plan_write(existing_manifest: Mapping[str, Any] | None, segment: CompletedSegment) -> str:
    """What to do with a segment whose key may already hold an object.

    * ``"write"``: no object yet, or the stored one covers a subset of this one's chunks
      (a replay that now has the whole window): overwrite.
    * ``"skip"``: the stored one already covers every chunk of this one (a replay after
      a crash between upload and commit, or of a window's tail): nothing to do.
    * ``"part"``: the stored one holds chunks this one lacks (late data after an idle
      flush): overwriting would lose them, so write under a ``-p<first chunk_seq>`` key.
    """
    if not existing_manifest:
        return "write"
    stored = {int(s) for s in existing_manifest.get("chunk_seqs", ())}
    new = set(segment.chunk_seqs)
    if new <= stored:
        return "skip"
    if stored <= new:
        return "write"
    return "part"


# ---------------------------------------------------------------- remux
def _open_payload(payload: bytes) -> Any:
    import av

    last: Exception | None = None
    for fmt in ("h264", None):  # the payload contract is Annex-B; probe as a fallback
        try:
            return av.open(io.BytesIO(payload), mode="r", format=fmt)
        except (av.FFmpegError, ValueError) as exc:
            last = exc
    raise SegmentError(f"chunk payload is not a readable H.264 stream: {last}")


_START_CODE = b"\x00\x00\x01"
_NAL_IDR, _NAL_SPS, _NAL_PPS = 5, 7, 8


def _nal_types(data: bytes, enough: frozenset[int] | None = None) -> set[int]:
    """The NAL unit types in one Annex-B access unit; with ``enough``, the scan stops once every
    type of it was seen (the types before that point and those: a keyframe's SPS, PPS and IDR
    come first, so its slice data, most of the bytes, is not searched for start codes)."""
    out: set[int] = set()
    i = data.find(_START_CODE)
    while 0 <= i < len(data) - 3:
        out.add(data[i + 3] & 0x1F)
        if enough is not None and enough <= out:
            break
        i = data.find(_START_CODE, i + 3)
    return out


_KEYFRAME_NALS = frozenset({_NAL_IDR, _NAL_SPS, _NAL_PPS})


def _chunk_packets(c: RedactedChunk) -> list[Any]:
    """The chunk's access units, split by FFmpeg's H.264 parser (no decoding, no probing).

    Opening each payload as a container (``av.open``) probed it: ``avformat_find_stream_info``
    decodes frames to learn the stream, ~1.1 ms of CPU per chunk, as much as the sink's whole
    remux of a one-frame 320x180 chunk. The parser yields the same packets (the raw H.264
    demuxer runs the same parser), so only the segment's first chunk is opened, for the output
    stream's parameters (:func:`remux_segment`). What the probe rejected is rejected here: a
    payload must start with an Annex-B start code and open with a keyframe that carries its
    SPS, PPS and IDR slice, as every redacted chunk does (closed GOP, headers in-band)."""
    import av

    raw = bytes(c.payload)
    if not (raw.startswith(_START_CODE) or raw.startswith(b"\x00" + _START_CODE)):
        raise SegmentError(f"chunk payload is not an H.264 Annex-B stream camera={c.camera_id} "
                           f"chunk_seq={c.chunk_seq}")
    try:
        ctx = av.CodecContext.create("h264", "r")
        pkts = [p for p in [*ctx.parse(raw), *ctx.parse(None)] if p.size > 0]
    except av.FFmpegError as exc:
        raise SegmentError(f"chunk payload is not a readable H.264 stream chunk_seq={c.chunk_seq}: {exc}") from exc
    first = _nal_types(bytes(pkts[0]), _KEYFRAME_NALS) if pkts else set()
    if not pkts or not pkts[0].is_keyframe or not _KEYFRAME_NALS <= first:
        raise SegmentError(f"chunk payload does not open with a keyframe and its SPS/PPS camera={c.camera_id} "
                           f"chunk_seq={c.chunk_seq}")
    return pkts


def _parameter_sets(access_unit: bytes) -> bytes:
    """The SPS and PPS NAL units of an Annex-B access unit, start codes included, in order."""
    starts: list[int] = []
    i = access_unit.find(_START_CODE)
    while i >= 0:
        starts.append(i)
        i = access_unit.find(_START_CODE, i + 3)
    out = bytearray()
    for k, at in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(access_unit)
        if at + 3 < end and access_unit[at + 3] & 0x1F in (_NAL_SPS, _NAL_PPS):
            out += access_unit[at:end]
    return bytes(out)


class StreamTemplates:
    """The output stream's parameters for :func:`remux_segment`, by the SPS and PPS they come from.

    Probing a segment's first access unit (``av.open``) costs ~1.2 ms of CPU; every camera of a
    kind sends the same parameter sets (one encoder, one size and rate), so a sink probes each
    once. A template is the probed input's video stream; at most ``size`` are kept (the least
    recently used one is closed). Not thread-safe: the sink loop owns it.
    """

    def __init__(self, size: int = 16) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self._open: dict[bytes, tuple[Any, Any]] = {}  # parameter sets -> (input container, video stream)
        self.probes = 0
        """Access units probed so far (the rest of the lookups were hits)."""

    def template(self, c: RedactedChunk, first_access_unit: bytes) -> Any:
        """The video stream to copy the output's parameters from, for a chunk whose first access
        unit is ``first_access_unit``. Raises :class:`SegmentError` as the probe does."""
        key = _parameter_sets(first_access_unit)
        hit = self._open.pop(key, None)
        if hit is None:
            hit = _probe(c, first_access_unit)
            self.probes += 1
            while len(self._open) >= self.size:
                oldest = next(iter(self._open))
                self._open.pop(oldest)[0].close()
        self._open[key] = hit  # most recently used last
        return hit[1]

    def close(self) -> None:
        for inp, _ in self._open.values():
            inp.close()
        self._open.clear()


def _probe(c: RedactedChunk, first_access_unit: bytes) -> tuple[Any, Any]:
    """``(input container, video stream)`` of one access unit opened as a container."""
    inp = _open_payload(first_access_unit)
    if not inp.streams.video:
        inp.close()
        raise SegmentError(f"chunk has no video stream camera={c.camera_id} chunk_seq={c.chunk_seq}")
    vs = inp.streams.video[0]
    if vs.codec_context.name != "h264":
        inp.close()
        raise SegmentError(f"chunk codec is {vs.codec_context.name}, not h264 chunk_seq={c.chunk_seq}")
    return inp, vs


def _camera_ticks(chunks: Sequence[RedactedChunk]) -> list[list[int]]:
    """Per chunk, per frame, strictly increasing presentation ticks relative to the first frame."""
    first = int(chunks[0].pts_ms[0])
    prev = -1
    out: list[list[int]] = []
    for c in chunks:
        row: list[int] = []
        for ms in c.pts_ms:
            t = (int(ms) - first) * _TICKS_PER_MS
            if t <= prev:  # duplicated or backwards camera timestamps: keep the stream valid
                t = prev + 1
            row.append(t)
            prev = t
        out.append(row)
    return out


def remux_segment(chunks: Sequence[RedactedChunk], templates: StreamTemplates | None = None) -> bytes:
    """Concatenate the chunks' H.264 packets into one fragmented MP4, without re-encoding.

    Timestamps come from the camera timestamps (``pts_ms``) in a 1/90000 time base,
    starting at 0 on the first frame and kept strictly increasing across chunk
    boundaries. Chunks carry no B-frames (the process stage encodes them that way), so
    decode timestamps equal presentation timestamps. The result is ``frag_keyframe+empty_moov+default_base_moof``
    (plays in browsers and Media Source players, streamable, no seek-back needed).

    ``templates``: where the output stream's parameters are looked up (a sink keeps one);
    without it the segment's first access unit is probed here.

    Raises:
        SegmentError: a payload is unreadable, has no video stream, or its packet count
            differs from its ``pts_ms`` length.
    """
    import av

    if not chunks:
        raise SegmentError("no chunks to remux")
    ticks = _camera_ticks(chunks)
    plans: list[list[Any]] = []
    containers: list[Any] = []
    template = None
    try:
        for c, pres in zip(chunks, ticks, strict=True):
            pkts = _chunk_packets(c)
            if template is None:  # the output stream's parameters: from the first access unit
                if templates is not None:
                    template = templates.template(c, bytes(pkts[0]))
                else:
                    inp, template = _probe(c, bytes(pkts[0]))
                    containers.append(inp)
            if len(pkts) != len(pres):
                raise SegmentError(f"chunk_seq={c.chunk_seq} has {len(pkts)} packets for {len(pres)} timestamps")
            # Redacted chunks are encoded without B-frames (operators.codec.encode_h264_chunk),
            # so decode order is presentation order and frame i gets camera timestamp i. An
            # Annex-B stream carries no timestamps, so there is nothing better to trust anyway.
            plans.append(pkts)
        assert template is not None
        fps = float(chunks[0].fps or 25.0)
        frame_ticks = max(1, round(90000 / fps))
        buf = io.BytesIO()
        out = av.open(buf, mode="w", format="mp4",
                      options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        try:
            ost = out.add_stream_from_template(template)
            ost.time_base = TIME_BASE
            for pkts, pres in zip(plans, ticks, strict=True):
                for k, p in enumerate(pkts):
                    p.stream = ost
                    p.time_base = TIME_BASE
                    p.pts = p.dts = pres[k]
                    p.duration = frame_ticks
                    out.mux(p)
        finally:
            out.close()
        return buf.getvalue()
    except av.FFmpegError as exc:
        raise SegmentError(f"remux failed: {exc}") from exc
    finally:
        for c in containers:
            c.close()


# ---------------------------------------------------------------- manifest, tags
def manifest(segment: CompletedSegment, sha256: str, *, key: str | None = None, size_bytes: int | None = None,
             stored_at_ms: int | None = None) -> dict[str, Any]:
    """The JSON written next to a segment (same key, ``.json``): what it holds and how it was made."""
    policies = segment.policies
    pid, pver = policies[0] if policies else ("", "")
    m: dict[str, Any] = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "kind": "SegmentStored",
        "key": key or segment.key(),
        "camera_id": segment.camera_id,
        "start_ms": segment.start_ms,
        "end_ms": segment.end_ms,
        "start": format_ts(segment.start_ms),
        "end": format_ts(segment.end_ms),
        "first_frame_ms": segment.first_frame_ms,
        "last_frame_ms": segment.last_frame_ms,
        "frames": segment.frames,
        # the console's frame-accurate scrubber and subject-box bounds read these
        "fps": float(segment.chunks[0].fps or 0) if segment.chunks else None,
        "width": int(segment.chunks[0].width) if segment.chunks else None,
        "height": int(segment.chunks[0].height) if segment.chunks else None,
        "chunks": len(segment.chunks),
        "chunk_seqs": segment.chunk_seqs,
        "masks_per_class": segment.masks_per_class,
        "fail_closed_frames": segment.fail_closed_frames,
        "fail_closed_pts_ms": segment.fail_closed_pts_ms,
        "dropped_frames": segment.dropped_frames,
        "models": segment.models,
        "policy_id": pid,
        "policy_version": pver,
        "policies": [{"id": i, "version": v} for i, v in policies],
        "sha256": sha256,
        "size_bytes": size_bytes,
        "container": "mp4",
        "codec": "h264",
        "source_offsets": [{"topic": t, "partition": p, "offset": o} for t, p, o in segment.sources],
        "captured_at_ms": segment.captured_at_ms,
    }
    if stored_at_ms is not None:
        m["stored_at_ms"] = stored_at_ms
        m["latency_ms"] = max(0, stored_at_ms - segment.captured_at_ms)
    return m


def manifest_bytes(m: Mapping[str, Any]) -> bytes:
    return json.dumps(m, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _tag_value(v: Any) -> str:
    return _SAFE_TAG.sub("_", str(v))[:256]


def model_versions(segment: CompletedSegment) -> str:
    parts = []
    for m in segment.models:
        ver = m.get("version") or (str(m.get("sha256") or "")[:12]) or "?"
        parts.append(f"{m.get('id', '?')}@{ver}")
    return ",".join(parts)


def segment_tags(segment: CompletedSegment) -> dict[str, str]:
    """S3 object tags (at most 10, restricted characters): what governance filters on."""
    pid, pver = segment.policies[0] if segment.policies else ("", "")
    tags = {
        "camera": segment.camera_id,
        "policy": f"{pid}:{pver}",
        "policy-id": pid,  # lifecycle rules match on it (pipeline.governance)
        "models": model_versions(segment).replace(",", " "),
        "frames": str(segment.frames),
        "fail_closed_frames": str(segment.fail_closed_frames),
    }
    for cls, n in segment.masks_per_class.items():
        if len(tags) >= 10:
            break
        tags[f"masks_{cls}"] = str(n)
    return {k: _tag_value(v) for k, v in tags.items()}


def segment_metadata(segment: CompletedSegment, sha256: str) -> dict[str, str]:
    """User metadata (``x-amz-meta-*``; ASCII only)."""
    pid, pver = segment.policies[0] if segment.policies else ("", "")
    masks = ",".join(f"{k}={v}" for k, v in segment.masks_per_class.items())
    meta = {
        "camera": segment.camera_id,
        "policy-id": pid,
        "policy-version": pver,
        "models": model_versions(segment),
        "frames": str(segment.frames),
        "masks-per-class": masks,
        "fail-closed-frames": str(segment.fail_closed_frames),
        "start": format_ts(segment.start_ms),
        "end": format_ts(segment.end_ms),
        "sha256": sha256,
    }
    return {k: v.encode("ascii", "replace").decode("ascii")[:512] for k, v in meta.items()}
