"""``veilstream redact``: redact a video file or a directory of images."""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from operators.redactor import RedactionConfig, RedactionResult, Redactor
from operators.types import InputError, Label
from operators.video import (
    FrameBuffers,
    VideoReader,
    VideoWriter,
    list_images,
    read_image,
    write_image,
)
from operators.zones import ZoneSet
from schemas.errors import ModelNotFoundError
from schemas.safety import pixels_problem

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass
class RedactSummary:
    source: str
    output: str
    frames: int = 0
    masks_per_class: dict[str, int] = field(default_factory=dict)
    fail_closed_frames: int = 0
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0
    detect_seconds: float = 0.0
    wait_decode_seconds: float = 0.0
    """Time the detecting thread waited for the next decoded chunk (videos)."""
    wait_finish_seconds: float = 0.0
    """Time the detecting thread waited for the previous chunk's masking and encoding (videos)."""
    wait_build_seconds: float = 0.0
    """Time the detecting thread waited for a :class:`DeferredRedactor`'s build after the first
    chunk was decoded (videos)."""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def add(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.masks_per_class[k] = self.masks_per_class.get(k, 0) + v

    def line(self) -> str:
        masks = ", ".join(f"{k}={v}" for k, v in sorted(self.masks_per_class.items())) or "none"
        extra = f", fail-closed frames={self.fail_closed_frames}" if self.fail_closed_frames else ""
        bad = f", unreadable={len(self.unreadable)}" if self.unreadable else ""
        return (f"redacted {self.frames} frames in {self.seconds:.1f}s ({self.fps:.1f} fps); "
                f"masks: {masks}{extra}{bad} -> {self.output}")

    def to_json(self) -> str:
        return json.dumps({
            "source": self.source, "output": self.output, "frames": self.frames,
            "masks_per_class": self.masks_per_class, "fail_closed_frames": self.fail_closed_frames,
            "unreadable": self.unreadable, "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
        })


@dataclass(frozen=True)
class DeferredRedactor:
    """A :class:`~operators.redactor.Redactor` that :func:`redact_video` builds itself, on its
    finishing thread while the first chunks decode: building the detectors (imports, sessions,
    graph compiles: ~1.3 s on one core for the defaults) then no longer runs before decoding
    starts, with the other core idle."""

    config: RedactionConfig
    zones: ZoneSet | None = None
    keep: list[Any] | None = None
    """Where each built redactor is also appended (kept alive by the caller: ``veilstream redact``
    leaves with ``os._exit`` and never frees its detectors); ``None``: not kept."""
    parallel: bool = True
    """The redactor's detectors that do not wait for each other run at once
    (``Redactor(parallel=True)``: the faces beside YOLOX and the plate search); the same boxes."""

    def build(self) -> Redactor:
        """The redactor; an OS error while loading models is a :class:`ModelNotFoundError`
        (a caller reading OS errors as the output's cannot mistake it for one)."""
        try:
            red = Redactor(self.config, zones=self.zones, parallel=self.parallel)
        except OSError as exc:
            raise ModelNotFoundError(f"cannot load the detectors' models: {exc.strerror or exc}") from None
        if self.keep is not None:
            self.keep.append(red)
        return red


def output_path_for(src: Path, output: Path) -> Path:
    """Where a video's redacted copy goes: ``output`` itself, or inside it if it is a folder."""
    if output.is_dir() or str(output).endswith(("/", "\\")):
        return output / (src.stem + ".mp4")
    if output.suffix.lower() != ".mp4":
        raise InputError(f"output {str(output)!r}: video output must be an .mp4 file or a directory")
    return output


def _prefetched(chunks: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """``chunks`` produced on a background thread, at most ``depth`` ahead; its errors are
    raised here, in order. Leaving the loop early stops the thread at its next hand-over."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for c in chunks:
                if not put(("item", c)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(("error", exc))

    t = threading.Thread(target=produce, name="veil-decode", daemon=True)
    t.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        t.join(5.0)


def redact_video(redactor: Redactor | DeferredRedactor, src: str, output: Path, *, keep_audio: bool = False,
                 chunk_seconds: float = 2.0, progress: bool = True, camera_id: str | None = None,
                 max_pixels: int | None = None, chunks_in_flight: int = 2) -> RedactSummary:
    """Redact one video into an H.264 MP4 that keeps the source timestamps.

    ``redactor``: built, or a :class:`DeferredRedactor` built here beside the first chunks' decoding.
    ``max_pixels``: refuse (InputError) a video whose frames are larger, before decoding.
    ``chunks_in_flight``: decoded chunks held at once. 2 (default): chunk k being detected and
    chunk k-1 being masked and encoded; chunk k+1 is decoded into k-1's array once k-1 is
    written, which keeps up while detecting a chunk takes longer than masking, encoding and
    decoding one (on 720p at every 4th frame: ~4x longer). 3: the decoder does not wait for
    the writer (one chunk more memory: ~135 MB at 720p and 2 s chunks)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    reader = VideoReader(src, keep_audio=keep_audio)
    info = reader.info
    too_big = pixels_problem(max_pixels, info.width, info.height, f"video {src!r}")
    if too_big:
        reader.close()
        raise InputError(too_big)
    dst = output_path_for(Path(src), output) if "://" not in src else output
    summary = RedactSummary(source=src, output=str(dst))
    tmp = dst.with_name(dst.name + ".part.mp4")
    # convert_ahead: the BGR -> yuv420p conversion of the next frames runs beside x264 (the
    # same bitstream); it keeps a second core busy once detection is done (the last chunks).
    writer = VideoWriter(tmp, info.width, info.height, info.fps, info.time_base,
                         audio_template=reader.audio_stream if keep_audio else None, convert_ahead=2)
    chunk_frames = max(1, round(chunk_seconds * (info.fps or 25)))
    # A chunk detects every detect_every-th frame from its first plus its last; a chunk of
    # k * every + 1 frames ends on a scheduled frame, so the last one costs no extra detection
    # (50 frames at every 4: frames 48 and 49 both detected, 14 per 50; 49 frames: 13 per 49).
    every = max(1, int(redactor.config.detect_every))
    chunk_frames = max(1, (chunk_frames - 1) // every * every + 1)
    bar = tqdm(total=info.frames_estimate or None, unit="frame", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, desc="redact")
    # Five stages overlap on four threads: decoding chunk k+1 (its own thread) and detecting
    # chunk k (this one) while chunk k-1 is planned and masked (the finishing thread) and an
    # earlier chunk encoded (the writing thread; the last chunk's masking no longer waits for
    # the one before it to be encoded, and the decoder still refills an array only once written):
    # PyAV, onnxruntime, OpenVINO, OpenCV and numpy release the GIL, so the two cores stay busy
    # with detection on one and the rest on the other. Each stage hands over at most one chunk,
    # so the output order is kept. Chunk arrays come from a pool of ``chunks_in_flight`` and go
    # back to it once written: memory stays at that many chunks whatever the video's length
    # (before the pool the decoder filled chunk k+2 while k+1 waited in the hand-over: 4
    # chunks) and later chunks reuse pages already faulted in.
    buffers = FrameBuffers(chunks_in_flight)

    red, deferred = (redactor, None) if isinstance(redactor, Redactor) else (None, redactor)

    def write(res: RedactionResult, frames: Any, pts: Any) -> None:
        try:
            writer.write(res.frames, pts)
        finally:
            # written (res.frames is not read again), or failed: the decoder may refill it, so it
            # never waits for an array a failed write kept (the error is raised by previous_done)
            buffers.give_back(frames)

    def finish(frames: Any, pts: Any, raw: Any, failed: Any) -> tuple[RedactionResult, Future[None]]:
        assert red is not None
        res = red.finish(frames, raw, failed, camera_id, in_place=True)  # the chunk is ours
        # encoded on the writing thread (FIFO: chunks in order) while this thread masks the next
        return res, encoder.submit(write, res, frames, pts)

    def account(res: RedactionResult, n: int) -> None:
        summary.frames += n
        summary.add(res.masks_per_class)
        summary.fail_closed_frames += len(res.fail_closed_frames)
        bar.update(n)

    writes: list[Future[None]] = []

    def previous_done(p: tuple[Future[tuple[RedactionResult, Future[None]]], int]) -> None:
        t = time.perf_counter()
        res, written = p[0].result()  # the previous chunk is masked (or its error raised) first
        while writes and writes[0].done():
            writes.pop(0).result()  # an earlier chunk's write error is raised here
        writes.append(written)
        summary.wait_finish_seconds += time.perf_counter() - t
        account(res, p[1])

    pending: tuple[Future[tuple[RedactionResult, Future[None]]], int] | None = None
    try:
        with reader, ThreadPoolExecutor(1, thread_name_prefix="veil-finish") as finisher, \
                ThreadPoolExecutor(1, thread_name_prefix="veil-write") as encoder:
            # The detectors are built on the finishing thread (its first task) while the decoder
            # fills the first chunks; the first chunk's detection waits for both.
            building = None if deferred is None else finisher.submit(deferred.build)
            decoded = _prefetched(reader.chunks(chunk_frames, buffers))
            try:
                while True:
                    t = time.perf_counter()
                    chunk = next(decoded, None)
                    summary.wait_decode_seconds += time.perf_counter() - t
                    if building is not None:
                        t = time.perf_counter()
                        red = building.result()
                        summary.wait_build_seconds += time.perf_counter() - t
                        building = None
                    if chunk is None:
                        break
                    assert red is not None
                    raw, failed, _errors, detect_ms = red.detect(chunk.frames)
                    summary.detect_seconds += detect_ms / 1000.0
                    if pending is not None:
                        previous_done(pending)
                    pending = finisher.submit(finish, chunk.frames, chunk.pts, raw, failed), len(chunk.frames)
            finally:
                # Stop the decoder before the reader closes: one waiting for a chunk array is
                # woken (its error is dropped), then it is joined.
                buffers.close()
                decoded.close()
            if pending is not None:
                previous_done(pending)
            for w in writes:
                w.result()
            writer.write_audio(reader.audio_packets)
        writer.close()
    except BaseException:
        bar.close()
        writer.abort()  # no idle conversion thread or open file left behind the error
        tmp.unlink(missing_ok=True)
        raise
    bar.close()
    if summary.frames == 0:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{src!r}: no decodable video frames")
    tmp.replace(dst)  # the output appears only once it is complete
    summary.seconds = time.perf_counter() - t0
    return summary


def redact_images(redactor: Redactor, src: Path, output: Path, *, progress: bool = True,
                  max_pixels: int | None = None) -> RedactSummary:
    """Redact every image of ``src`` into ``output`` under the same file names."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    files = list_images(src)
    if not files:
        raise InputError(f"{str(src)!r}: no images (.jpg, .png, ...) in this directory")
    if output.exists() and not output.is_dir():
        raise InputError(f"output {str(output)!r}: must be a directory when the input is a directory")
    output.mkdir(parents=True, exist_ok=True)
    summary = RedactSummary(source=str(src), output=str(output))
    for f in tqdm(files, unit="img", disable=not progress, file=sys.stderr, desc="redact"):
        try:
            img = read_image(f, max_pixels=max_pixels)
        except InputError as exc:
            summary.unreadable.append(f.name)
            logger.warning("%s", exc)
            continue
        res = redactor.redact(img[None])
        write_image(output / f.name, res.frames[0])
        summary.frames += 1
        summary.add(res.masks_per_class)
        summary.fail_closed_frames += len(res.fail_closed_frames)
        summary.detect_seconds += res.detect_ms / 1000.0
    summary.seconds = time.perf_counter() - t0
    return summary


__all__ = ["DeferredRedactor", "RedactSummary", "redact_video", "redact_images", "output_path_for", "Label"]
