"""One camera: open the source, cut it into chunks, stamp camera timestamps.

H.264 sources are passed through GOP by GOP (demuxed, never decoded); anything else is
decoded with PyAV and re-encoded as JPEG frames. Camera timestamps are wall-clock
milliseconds: for a live source, the arrival time of the first packet plus the stream's
own pts offsets; for a file played as a simulated camera, the time each pass started
plus the file's pts (a looped file keeps counting forward).

Chunk sequence numbers must keep increasing for a camera even when it moves to another
worker (a rebalance) or reconnects, without any shared counter: a reader starts its
sequence at ``first capture ms // chunk ms`` (a time-derived number) and adds one per
chunk, never going below the last number it used.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from operators.codec import CodecError, GopChunk, encode_jpeg_frames, split_gops
from schemas.config import CameraConfig
from schemas.messages import ChunkCaptured

from .registry import backoff_s

logger = logging.getLogger(__name__)


class SourceEnded(Exception):
    """A non-looping file reached its end: the camera is done, not failed."""


@dataclass
class RawChunk:
    """A chunk before it gets camera timestamps: pts relative to the source."""

    payload: bytes
    codec: str
    pts_ms: list[int]
    fps: float
    width: int
    height: int
    skipped_frames: int = 0


def source_url(cam: CameraConfig) -> str:
    """The URL to open, with credentials from ``credentials_env`` (never logged)."""
    url = cam.url
    if cam.credentials_env and "://" in url:
        cred = os.environ.get(cam.credentials_env)
        if cred:
            scheme, rest = url.split("://", 1)
            url = f"{scheme}://{cred}@{rest}"
    return url


def redact_url(url: str) -> str:
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def demux_options(cam: CameraConfig) -> dict[str, str]:
    if cam.kind == "rtsp":
        return {"rtsp_transport": "tcp"}
    return {}


def jpeg_chunks(url: str, chunk_seconds: float, quality: int, options: dict[str, str],
                fps_limit: float | None = None, timeout_s: float = 10.0) -> Iterator[RawChunk]:
    """Decode any source PyAV reads and emit JPEG-frame chunks of ``chunk_seconds``."""
    import av

    try:
        container = av.open(url, options=options, timeout=(timeout_s, timeout_s))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise CodecError(f"cannot open {redact_url(url)!r}: {exc}") from None
    try:
        if not container.streams.video:
            raise CodecError(f"{redact_url(url)!r} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 25.0
        out_fps = min(fps, fps_limit) if fps_limit else fps
        tb = float(stream.time_base or 0)
        frames: list[np.ndarray] = []
        pts: list[int] = []
        next_keep = -1e18
        n = 0
        for frame in container.decode(stream):
            t_ms = round(frame.pts * tb * 1000) if frame.pts is not None and tb else round(n * 1000 / fps)
            n += 1
            if t_ms < next_keep:
                continue  # sampled down to the configured rate
            next_keep = t_ms + 1000.0 / out_fps - 0.5
            frames.append(frame.to_ndarray(format="bgr24"))
            pts.append(t_ms)
            if pts[-1] - pts[0] + 1000.0 / out_fps >= chunk_seconds * 1000.0:
                arr = np.stack(frames)
                yield RawChunk(encode_jpeg_frames(arr, quality), "jpeg", pts, out_fps, arr.shape[2], arr.shape[1])
                frames, pts = [], []
        if frames:
            arr = np.stack(frames)
            yield RawChunk(encode_jpeg_frames(arr, quality), "jpeg", pts, out_fps, arr.shape[2], arr.shape[1])
    except av.FFmpegError as exc:
        raise CodecError(f"{redact_url(url)!r}: damaged stream: {exc}") from None
    finally:
        container.close()


def h264_chunks(url: str, chunk_seconds: float, options: dict[str, str]) -> Iterator[RawChunk]:
    g: GopChunk
    for g in split_gops(url, chunk_seconds, options=options):
        yield RawChunk(g.payload, "h264", list(g.pts_ms), g.fps, g.width, g.height, g.skipped_frames)


def is_h264(url: str, options: dict[str, str], timeout_s: float = 10.0) -> bool:
    import av

    try:
        with av.open(url, options=options, timeout=(timeout_s, timeout_s)) as c:
            return bool(c.streams.video) and c.streams.video[0].codec_context.name == "h264"
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise CodecError(f"cannot open {redact_url(url)!r}: {exc}") from None


Emit = Callable[[ChunkCaptured, int], bool]
"""Hands a chunk to the producer; returns False when the chunk was dropped (backpressure)."""


class CameraReader(threading.Thread):
    """Reads one camera until stopped; reconnects with backoff; never raises."""

    def __init__(self, cam: CameraConfig, emit: Emit, *, chunk_seconds: float, jpeg_quality: int,
                 reconnect_initial_s: float, reconnect_max_s: float, on_event: Callable[[str, str], None],
                 can_block: Callable[[], bool] | None = None) -> None:
        super().__init__(name=f"camera-{cam.camera_id}", daemon=True)
        self.cam = cam
        self.emit = emit
        self.chunk_seconds = chunk_seconds
        self.jpeg_quality = jpeg_quality
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.on_event = on_event
        self.stop_event = threading.Event()
        self.seq = -1
        self.chunks = 0
        self.frames = 0
        self.dropped_frames = 0  # dropped since the last chunk that got out
        self.dropped_total = 0
        self.reconnects = 0
        self.finished = False
        self.last_error: str | None = None
        self._next_ms = 0.0  # camera time after the last emitted frame: never go back

    def stop(self) -> None:
        self.stop_event.set()

    # ------------------------------------------------------------------
    def _chunks(self) -> Iterator[RawChunk]:
        cam = self.cam
        url = source_url(cam)
        opts = demux_options(cam)
        if cam.kind == "file" and not Path(url).exists():
            raise CodecError(f"file {url!r} does not exist")
        codec = cam.codec
        if codec == "auto":
            codec = "h264" if is_h264(url, opts) and not cam.fps else "jpeg"
        if codec == "h264":
            return h264_chunks(url, self.chunk_seconds, opts)
        return jpeg_chunks(url, self.chunk_seconds, self.jpeg_quality, opts, fps_limit=cam.fps)

    def run(self) -> None:
        attempt = 0
        while not self.stop_event.is_set():
            try:
                self._one_pass_or_connection()
                attempt = 0
                if self.cam.kind == "file" and not self.cam.loop:
                    raise SourceEnded
            except SourceEnded:
                self.finished = True
                self.on_event("finished", "")
                logger.info("camera finished camera=%s chunks=%d frames=%d", self.cam.camera_id, self.chunks,
                            self.frames)
                return
            except Exception as exc:  # noqa: BLE001 - any source failure: report, back off, retry
                attempt += 1
                self.reconnects += 1
                self.last_error = str(exc)
                delay = backoff_s(attempt, self.reconnect_initial_s, self.reconnect_max_s)
                logger.warning("camera failed camera=%s attempt=%d retry_in=%.1fs error=%s", self.cam.camera_id,
                               attempt, delay, str(exc)[:300])
                self.on_event("reconnect", str(exc))
                self.stop_event.wait(delay)

    def _one_pass_or_connection(self) -> None:
        """Read the source from start to end (a file pass, or a live connection until it
        breaks), emitting chunks with camera timestamps."""
        realtime = self.cam.kind != "file" or self.cam.realtime
        base_wall_ms: float | None = None
        first_pts: int | None = None
        for raw in self._chunks():
            if self.stop_event.is_set():
                return
            if not raw.pts_ms:
                continue
            if first_pts is None:
                first_pts = raw.pts_ms[0]
                # a new pass/connection continues after the last frame, never before it
                base_wall_ms = max(time.time() * 1000.0, self._next_ms)
            assert base_wall_ms is not None
            rel = [p - first_pts for p in raw.pts_ms]
            if realtime and self.cam.kind == "file":
                # a simulated camera delivers a chunk once its last frame "happened"
                due = base_wall_ms + rel[-1] + 1000.0 / max(raw.fps, 1.0)
                wait_s = due / 1000.0 - time.time()
                if wait_s > 0 and self.stop_event.wait(wait_s):
                    return
            pts_ms = tuple(int(base_wall_ms + r) for r in rel)
            self._next_ms = pts_ms[-1] + 1000.0 / max(raw.fps, 1.0)
            chunk_ms = max(1, int(self.chunk_seconds * 1000))
            self.seq = max(self.seq + 1, pts_ms[0] // chunk_ms)
            dropped = self.dropped_frames + raw.skipped_frames
            msg = ChunkCaptured(camera_id=self.cam.camera_id, chunk_seq=self.seq, pts_ms=pts_ms, fps=raw.fps,
                                width=raw.width, height=raw.height, codec=raw.codec,
                                captured_at_ms=pts_ms[0], payload=raw.payload, dropped_frames=dropped)
            if self.emit(msg, len(pts_ms)):
                self.chunks += 1
                self.frames += len(pts_ms)
                self.dropped_frames = 0
            else:
                self.dropped_frames += len(pts_ms)
                self.dropped_total += len(pts_ms)
        # end of a pass: a looping file starts over with timestamps continuing after this pass
        if first_pts is None:
            raise CodecError("source produced no frames")


__all__ = ["CameraReader", "RawChunk", "SourceEnded", "backoff_s", "demux_options", "h264_chunks",
           "jpeg_chunks", "redact_url", "source_url"]
