"""One camera: open the source, cut it into chunks, stamp camera timestamps and sequence numbers.

Payload: an H.264 source is passed through GOP by GOP (demuxed, never decoded:
``operators.codec.split_gops``); anything else, or a camera with a configured ``fps`` to
sample to, is decoded with PyAV and re-encoded as JPEG frames (``codec: jpeg``). The source
is opened once per connection and the codec decided from that open container (an RTSP
camera sees one session per connection, not a probe plus a session).

Timestamps (``pts_ms``) are Unix wall-clock milliseconds, computed by ``CameraClock`` from
the stream's own pts so frame spacing is the camera's, anchored to the wall clock:

- live source (RTSP/HTTP): at connect, the first chunk's last frame is "now"; afterwards
  ``anchor + (pts - first pts)``. If that falls more than ``max(5 s, 2 chunks)`` behind the
  wall clock (a stall, a pts jump) or goes backwards, it is re-anchored.
- file played as a camera: each pass starts at "now" (or right after the previous pass,
  whichever is later), so a looped file keeps counting forward.
- never backwards: every frame of a camera is later than the previous one, across passes
  and reconnects.

Sequence numbers (``chunk_seq``) must keep increasing per camera across loops, reconnects
and moves to another worker, with no shared counter: ``chunk_seq = max(previous + 1,
first frame ms // chunk ms)``. For a live camera, whose chunks are all at least
``chunk_seconds`` long, this is exactly the time-derived number, so a worker that takes over
a camera (after the old owner stopped it: the group revokes before it reassigns) continues
above the old owner's numbers as long as the two clocks agree to within a chunk. Downstream
keys are built from camera id + timestamps (seq only tells chunks apart), so a replay of
the same messages maps to the same objects. A file read faster than real time
(``realtime: false``) runs ahead of the wall clock; if such a camera moves to another
worker its timestamps restart at that worker's "now" (test/benchmark use only).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from operators.codec import CodecError, GopChunk, encode_jpeg_frames, frame_to_bgr, split_gops
from schemas.config import CameraConfig
from schemas.messages import ChunkCaptured
from schemas.safety import pixels_problem, redact_url, scrub_secrets

from .registry import backoff_s

logger = logging.getLogger(__name__)

RECONNECT_JITTER = 0.2  # fraction of each backoff delay taken off at random


@dataclass(frozen=True)
class RawChunk:
    """A chunk before it gets camera timestamps: ``pts_ms`` relative to the source."""

    payload: bytes
    codec: str
    pts_ms: tuple[int, ...]
    fps: float
    width: int
    height: int
    skipped_frames: int = 0


def raw_from_gop(g: GopChunk) -> RawChunk:
    """An H.264 passthrough chunk from ``split_gops`` (payload untouched)."""
    return RawChunk(g.payload, "h264", tuple(int(p) for p in g.pts_ms), float(g.fps), int(g.width),
                    int(g.height), int(g.skipped_frames))


def build_chunk(camera_id: str, chunk_seq: int, raw: RawChunk, pts_ms: Sequence[int],
                dropped_frames: int = 0, policy_id: str | None = None,
                zones: Sequence[Mapping[str, Any]] = ()) -> ChunkCaptured:
    """The ``ChunkCaptured`` message of a chunk stamped with camera timestamps ``pts_ms``
    (one per frame of ``raw``); the capture time is its first frame's. ``policy_id`` and
    ``zones`` come from the camera's registry record: every chunk carries them, so the
    process stage masks a camera's zones from its first chunk on."""
    if len(pts_ms) != len(raw.pts_ms):
        raise ValueError(f"{len(pts_ms)} timestamps for {len(raw.pts_ms)} frames camera={camera_id}")
    stamped = tuple(int(p) for p in pts_ms)
    return ChunkCaptured(camera_id=camera_id, chunk_seq=int(chunk_seq), pts_ms=stamped, fps=raw.fps,
                         width=raw.width, height=raw.height, codec=raw.codec, captured_at_ms=stamped[0],
                         payload=raw.payload, dropped_frames=int(dropped_frames), policy_id=policy_id,
                         zones=tuple(dict(z) for z in zones))


def next_seq(previous: int, first_ms: int, chunk_ms: int) -> int:
    """Sequence number of the chunk whose first frame is at ``first_ms`` (see module doc)."""
    return max(previous + 1, first_ms // max(1, chunk_ms))


class CameraClock:
    """Source pts (ms, any origin) -> camera wall-clock ms, never going backwards.

    Args:
        live: a live source (RTSP/HTTP): a chunk's frames have already happened when it
            arrives. A file pass starts now instead.
        max_lag_ms: a live chunk ending further behind the wall clock than this re-anchors.
    """

    def __init__(self, live: bool, max_lag_ms: float = 5000.0) -> None:
        self.live = live
        self.max_lag_ms = max_lag_ms
        self.next_ms = 0.0  # earliest timestamp the next frame may have
        self._first_pts: int | None = None
        self._anchor_ms = 0.0
        self.reanchors = 0

    def new_pass(self) -> None:
        """A new connection or file pass: its pts restart anywhere."""
        self._first_pts = None

    def stamp(self, pts_ms: Sequence[int], fps: float, now_ms: float) -> tuple[int, ...]:
        if not pts_ms:
            return ()
        frame_ms = 1000.0 / fps if fps > 0 else 40.0
        span_ms = pts_ms[-1] - pts_ms[0] + frame_ms

        def anchor() -> None:
            self._first_pts = pts_ms[0]
            start = now_ms - span_ms if self.live else now_ms
            self._anchor_ms = max(start, self.next_ms)

        if self._first_pts is None:
            anchor()
        else:
            first = self._anchor_ms + pts_ms[0] - self._first_pts
            backwards = first < self.next_ms - frame_ms / 2
            stalled = self.live and first + span_ms < now_ms - self.max_lag_ms
            if backwards or stalled:
                self.reanchors += 1
                anchor()
        assert self._first_pts is not None
        out = tuple(int(math.floor(self._anchor_ms + p - self._first_pts)) for p in pts_ms)
        self.next_ms = max(self.next_ms, out[-1] + frame_ms)
        return out


# ------------------------------------------------------------------ sources


def source_url(cam: CameraConfig) -> str:
    """The URL to open, with ``user:password`` from ``credentials_env`` (never logged)."""
    url = cam.url
    if cam.credentials_env and "://" in url:
        cred = os.environ.get(cam.credentials_env)
        if cred:
            scheme, rest = url.split("://", 1)
            url = f"{scheme}://{cred}@{rest}"
    return url


def demux_options(cam: CameraConfig) -> dict[str, str]:
    """FFmpeg demuxer options per camera kind (RTSP over TCP: no lost UDP packets tearing
    GOPs; a stalled connection is caught by the read timeout of ``open_source``)."""
    if cam.kind == "rtsp":
        return {"rtsp_transport": "tcp"}
    return {}


def may_block(cam: CameraConfig) -> bool:
    """A file read faster than real time may wait for the broker; anything live drops."""
    return cam.kind == "file" and not cam.realtime


def open_source(url: str, options: dict[str, str], open_timeout_s: float = 10.0,
                read_timeout_s: float = 10.0) -> Any:
    """Open a camera with PyAV. Raises CodecError (with the URL's credentials removed)."""
    import av

    try:
        return av.open(url, mode="r", options=options, timeout=(open_timeout_s, read_timeout_s))
    except (av.FFmpegError, OSError, ValueError) as exc:
        # FFmpeg's text repeats the URL it was given, credentials included: scrub it too
        raise CodecError(f"cannot open {redact_url(url)!r}: {scrub_secrets(str(exc))}") from None


def pick_codec(cam: CameraConfig, container: Any) -> str:
    """``h264`` (passthrough) or ``jpeg`` (decode + re-encode) for an opened source."""
    if not container.streams.video:
        raise CodecError(f"{redact_url(cam.url)!r} has no video stream")
    if cam.codec != "auto":
        return cam.codec
    is_h264 = container.streams.video[0].codec_context.name == "h264"
    # sampling to a lower fps needs decoding, so it implies JPEG chunks
    return "h264" if is_h264 and not cam.fps else "jpeg"


def jpeg_chunks(container: Any, name: str, chunk_seconds: float, quality: int,
                fps_limit: float | None = None) -> Iterator[RawChunk]:
    """Decode the first video stream of ``container`` and emit JPEG-frame chunks of
    ``chunk_seconds``, sampled down to ``fps_limit`` if given."""
    import av

    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 25.0
    out_fps = min(fps, fps_limit) if fps_limit else fps
    tb = float(stream.time_base or 0)
    frames: list[np.ndarray] = []
    pts: list[int] = []
    next_keep = -math.inf
    n = 0

    def emit() -> RawChunk:
        arr = np.stack(frames)
        return RawChunk(encode_jpeg_frames(arr, quality), "jpeg", tuple(pts), out_fps, int(arr.shape[2]),
                        int(arr.shape[1]))

    try:
        for frame in container.decode(stream):
            t_ms = round(frame.pts * tb * 1000) if frame.pts is not None and tb else round(n * 1000 / fps)
            n += 1
            if t_ms < next_keep:
                continue  # sampled down to the configured rate (by design, not a drop)
            next_keep = t_ms + 1000.0 / out_fps - 0.5
            img = frame_to_bgr(frame)
            if frames and img.shape != frames[0].shape:
                yield emit()  # the camera changed resolution: a chunk has one frame size
                frames, pts = [], []
            frames.append(img)
            pts.append(t_ms)
            if pts[-1] - pts[0] + 1000.0 / out_fps >= chunk_seconds * 1000.0:
                yield emit()
                frames, pts = [], []
    except av.FFmpegError as exc:
        raise CodecError(f"{name!r}: damaged stream: {exc}") from None
    if frames:
        yield emit()


def camera_chunks(cam: CameraConfig, chunk_seconds: float, jpeg_quality: int, open_timeout_s: float = 10.0,
                  read_timeout_s: float = 10.0, max_pixels: int | None = None) -> Iterator[RawChunk]:
    """All chunks of one connection to ``cam`` (one pass, for a file). Closing the
    generator closes the connection. A source whose frames exceed ``max_pixels`` is
    refused (CodecError) before any frame is decoded."""
    url = source_url(cam)
    name = redact_url(url)
    if cam.kind == "file" and "://" not in url and not Path(url).exists():
        raise CodecError(f"file {name!r} does not exist")
    container = open_source(url, demux_options(cam), open_timeout_s, read_timeout_s)
    try:
        if container.streams.video:
            cc = container.streams.video[0].codec_context
            too_big = pixels_problem(max_pixels, int(cc.width or 0), int(cc.height or 0), f"camera {cam.camera_id}")
            if too_big:
                raise CodecError(too_big)
        codec = pick_codec(cam, container)
        if codec == "h264":
            for g in split_gops(name, chunk_seconds, container=container):
                yield raw_from_gop(g)
        else:
            yield from jpeg_chunks(container, name, chunk_seconds, jpeg_quality, fps_limit=cam.fps)
    finally:
        container.close()


# ------------------------------------------------------------------ the reader thread

Emit = Callable[["CameraReader", ChunkCaptured], bool]
"""Hands a chunk to the producer; returns False when it was dropped (and counted)."""

OnEvent = Callable[["CameraReader", str, Any], None]
"""``(reader, kind, value)``: ``connected``, ``reconnect`` (error text), ``skipped``
(frames before the first keyframe), ``unfinished`` (frames of a chunk cut by a stop),
``finished``."""


class CameraReader(threading.Thread):
    """Reads one camera until stopped; reconnects with exponential backoff; never raises.

    Attributes (read by the worker for status/metrics; written only by this thread):
        state: ``connecting``, ``streaming``, ``retrying``, ``finished`` or ``stopped``.
        chunks, frames: handed to the producer. dropped_total: frames dropped at ingest.
        reconnects, last_error: failures so far and the latest one.
    """

    def __init__(self, cam: CameraConfig, emit: Emit, *, chunk_seconds: float, jpeg_quality: int,
                 reconnect_initial_s: float, reconnect_max_s: float, on_event: OnEvent | None = None,
                 open_timeout_s: float = 10.0, read_timeout_s: float = 10.0,
                 now_ms: Callable[[], float] | None = None, max_pixels: int | None = None) -> None:
        super().__init__(name=f"camera-{cam.camera_id}", daemon=True)
        self.cam = cam
        self.emit = emit
        self.chunk_seconds = chunk_seconds
        self.chunk_ms = max(1, int(round(chunk_seconds * 1000)))
        self.jpeg_quality = jpeg_quality
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.on_event: OnEvent = on_event or (lambda _r, _k, _v: None)
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_pixels = max_pixels
        self.now_ms = now_ms or (lambda: time.time() * 1000.0)
        self.may_block = may_block(cam)
        self.realtime_file = cam.kind == "file" and cam.realtime
        self.clock = CameraClock(live=cam.kind != "file", max_lag_ms=max(5000.0, 2.0 * self.chunk_ms))
        self.stop_event = threading.Event()
        self.state = "connecting"
        self.seq = -1
        self.chunks = 0
        self.frames = 0
        self.dropped_frames = 0  # dropped since the last chunk that got out; carried in the next
        self.dropped_total = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self._pass_chunks = 0

    def stop(self) -> None:
        self.stop_event.set()

    def _chunks(self) -> Iterator[RawChunk]:
        return camera_chunks(self.cam, self.chunk_seconds, self.jpeg_quality, self.open_timeout_s,
                             self.read_timeout_s, self.max_pixels)

    def run(self) -> None:
        cid = self.cam.camera_id
        attempt = 0
        while not self.stop_event.is_set():
            if self.state != "streaming":  # a looped file's next pass is no new connection
                self.state = "connecting"
            error: BaseException | None = None
            try:
                self._one_pass_or_connection()
            except Exception as exc:  # noqa: BLE001 - any source failure: report, back off, retry
                error = exc
            if self.stop_event.is_set():
                break
            if error is None:
                if self.cam.kind == "file" and not self.cam.loop:
                    self.state = "finished"
                    logger.info("camera finished camera=%s chunks=%d frames=%d dropped=%d", cid, self.chunks,
                                self.frames, self.dropped_total)
                    self.on_event(self, "finished", None)
                    return
                if self._pass_chunks and self.cam.kind == "file":
                    attempt = 0
                    continue  # the next pass of a looped file
                # a live stream that ends (or a pass with no frames) is a disconnect
                error = CodecError("source produced no frames" if not self._pass_chunks else "stream ended")
            if self._pass_chunks:
                attempt = 0  # it worked for a while: start the backoff over
            attempt += 1
            self.reconnects += 1
            # any layer (FFmpeg, sockets) may echo the URL with the secret spliced in
            secret = os.environ.get(self.cam.credentials_env) if self.cam.credentials_env else None
            self.last_error = scrub_secrets(str(error), [secret])[:500]
            self.state = "retrying"
            delay = backoff_s(attempt, self.reconnect_initial_s, self.reconnect_max_s, jitter=RECONNECT_JITTER)
            logger.warning("camera failed camera=%s kind=%s attempt=%d retry_in_s=%.2f error=%s", cid,
                           self.cam.kind, attempt, delay, self.last_error[:300])
            self.on_event(self, "reconnect", self.last_error)
            self.stop_event.wait(delay)
        self.state = "stopped"

    def _one_pass_or_connection(self) -> None:
        """Read the source until it ends (a file pass, or a live connection until it
        breaks), emitting chunks with camera timestamps."""
        self.clock.new_pass()
        self._pass_chunks = 0
        it = self._chunks()
        try:
            for raw in it:
                if self.stop_event.is_set():
                    return
                if not raw.pts_ms:
                    continue
                if self.state != "streaming":
                    self.state = "streaming"
                    logger.info("camera streaming camera=%s codec=%s size=%dx%d fps=%.2f", self.cam.camera_id,
                                raw.codec, raw.width, raw.height, raw.fps)
                    self.on_event(self, "connected", None)
                self._pass_chunks += 1
                self._handle(raw)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def _handle(self, raw: RawChunk) -> None:
        pts_ms = self.clock.stamp(raw.pts_ms, raw.fps, self.now_ms())
        if self.realtime_file:
            # a simulated camera delivers a chunk once its last frame has "happened"
            frame_ms = 1000.0 / raw.fps if raw.fps > 0 else 40.0
            wait_s = (pts_ms[-1] + frame_ms - self.now_ms()) / 1000.0
            if wait_s > 0 and self.stop_event.wait(wait_s):
                # stopped while its frames were still "happening": the ones already past are
                # lost with the unfinished chunk (counted, like a live camera's cut chunk)
                now = self.now_ms()
                self.on_event(self, "unfinished", sum(1 for p in pts_ms if p + frame_ms <= now))
                return
        if raw.skipped_frames:
            self.on_event(self, "skipped", raw.skipped_frames)
        self.seq = next_seq(self.seq, pts_ms[0], self.chunk_ms)
        dropped = self.dropped_frames + raw.skipped_frames
        msg = build_chunk(self.cam.camera_id, self.seq, raw, pts_ms, dropped, self.cam.policy_id, self.cam.zones)
        if self.emit(self, msg):
            self.chunks += 1
            self.frames += len(pts_ms)
            self.dropped_frames = 0
        else:
            self.dropped_frames = dropped + len(pts_ms)
            self.dropped_total += len(pts_ms)


__all__ = ["CameraClock", "CameraReader", "RawChunk", "build_chunk", "camera_chunks", "demux_options",
           "jpeg_chunks", "may_block", "next_seq", "open_source", "pick_codec", "raw_from_gop", "redact_url",
           "source_url"]
