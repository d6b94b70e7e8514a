"""Decoding an interval of the raw vault and encoding it as MP4, with bounded memory and
growing progress (the video half of :mod:`.export`)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import InputError

from .context import AccessError
from .timeparse import iso

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



# ---------------------------------------------------------------- progress
Progress = Callable[[float], None]
"""An export's progress: called with a fraction in [0, 1], never decreasing, 1.0 last."""


class Stages:
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



@dataclass
class DecodedInterval:
    frames: Any  # (N, H, W, 3) uint8
    pts_ms: list[int]
    fps: float
    raw_keys: list[str]
    payload_sha256: dict[str, str]


def decode_interval(chunks: Sequence[tuple[str, dict[str, Any], bytes]], from_ms: int, to_ms: int,
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


def write_mp4(frames: Any, pts_ms: Sequence[int], fps: float, output: Path) -> None:
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


def write_chunks_mp4(chunks: Sequence[tuple[str, dict[str, Any], bytes]], from_ms: int, to_ms: int,
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
