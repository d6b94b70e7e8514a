"""Chunk payload codecs: what travels in the value of a chunk message.

Two payload kinds (``ChunkCaptured.codec``):

* ``"h264"``: a self-contained H.264 Annex-B elementary stream that starts with an
  IDR keyframe and carries its SPS/PPS in-band, so any one chunk decodes on its own.
  It holds no timestamps: per-frame ``pts_ms`` travel in the message metadata.
  :func:`encode_h264_chunk` writes one closed GOP per chunk without B-frames (decode
  order = presentation order, which lets the sink remux chunks into MP4 by assigning
  ``pts_ms`` directly). :func:`split_gops` cuts a camera's H.264 stream at keyframes
  *without decoding* (bitstream passthrough; camera GOPs may contain B-frames).
* ``"jpeg"``: ``b"VJF1"``, a big-endian u32 frame count, then per frame a u32 length
  and the JPEG bytes. For sources that are not H.264.

Every decoder turns damaged input into :class:`CodecError` with a reason; none of them
waits on anything (all work is on in-memory bytes).
"""

from __future__ import annotations

import logging
import re
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from av.bitstream import BitStreamFilterContext
from av.video.reformatter import VideoReformatter

from schemas.safety import decoded_bytes_problem

from .types import Frames, InputError

logger = logging.getLogger(__name__)

__all__ = [
    "CodecError",
    "DecodeLimitError",
    "GopChunk",
    "decode_chunk_payload",
    "decode_h264_chunk",
    "decode_jpeg_frames",
    "encode_chunk_payload",
    "encode_h264_chunk",
    "encode_jpeg_frames",
    "frame_to_bgr",
    "split_gops",
]

JPEG_MAGIC = b"VJF1"
_U32 = struct.Struct(">I")
MAX_FRAMES = 100_000  # a sanity bound on declared frame counts of damaged payloads


class CodecError(InputError):
    """A payload or source stream cannot be encoded/decoded; the message says why."""


class DecodeLimitError(CodecError):
    """Decoding would pass ``limits.max_decoded_bytes_per_chunk`` (DLQ reason
    ``limit_exceeded``): refused before or while decoding, never after."""

    reason = "limit_exceeded"


def _check_decoded(max_bytes: int | None, frames: int, w: int, h: int, what: str) -> None:
    problem = decoded_bytes_problem(max_bytes, frames=frames, width=w, height=h)
    if problem:
        raise DecodeLimitError(f"{what}: {problem}")


_REFORMAT = threading.local()


def frame_to_bgr(fr: Any) -> np.ndarray:
    """One decoded ``av.VideoFrame`` as a new ``(H, W, 3)`` uint8 BGR array: exactly what
    ``fr.to_ndarray(format="bgr24")`` returns, through one ``VideoReformatter`` per thread.

    PyAV keeps a frame's reformatter (its swscale context) on the frame, so every newly decoded
    frame set up a new context before converting: on a 320x180 frame that set-up cost more than
    the conversion (a one-frame chunk's decode 1.36-1.43 -> 1.22-1.26 ms, x0.87-0.89, under load;
    docs/performance.md, session 11, "per-frame overhead of snapshot cameras"). A reused
    context converts the same pixels: swscale re-initialises it when a frame's size, format or
    colour tags differ from the last one's, and each call returns a new frame of its own
    buffer. Per thread because a context is not safe to share between threads.
    """
    r = getattr(_REFORMAT, "r", None)
    if r is None:
        r = _REFORMAT.r = VideoReformatter()
    return r.reformat(fr, format="bgr24").to_ndarray()


def _to_bgr(fr: Any) -> np.ndarray:
    """One decoded ``av.VideoFrame`` as a BGR array (the allocation the limits bound)."""
    return frame_to_bgr(fr)


def _why(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]


def _check_frames(frames: Frames, what: str) -> Frames:
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
        raise CodecError(f"{what}: expected (N, H, W, 3) uint8 BGR frames, got {arr.shape} {arr.dtype}")
    if arr.shape[1] < 2 or arr.shape[2] < 2:
        raise CodecError(f"{what}: frames of {arr.shape[2]}x{arr.shape[1]} are too small")
    return arr


# ---------------------------------------------------------------- JPEG


def encode_jpeg_frames(frames: Frames, quality: int = 90) -> bytes:
    """Length-prefixed JPEG frames.

    Args:
        frames: ``(N, H, W, 3)`` uint8 BGR, N >= 0; not mutated.
        quality: JPEG quality 1..100.
    """
    arr = np.asarray(frames)
    if arr.size == 0 and arr.ndim == 4:
        return JPEG_MAGIC + _U32.pack(0)
    arr = _check_frames(arr, "encode_jpeg_frames")
    if not 1 <= int(quality) <= 100:
        raise CodecError(f"encode_jpeg_frames: quality must be 1..100, got {quality}")
    parts = [JPEG_MAGIC, _U32.pack(len(arr))]
    for i, frame in enumerate(arr):
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise CodecError(f"encode_jpeg_frames: JPEG encoding failed on frame {i}")
        parts += [_U32.pack(len(buf)), buf.tobytes()]
    return b"".join(parts)


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's SOF header without decoding pixels (``None`` if no
    SOF is found). Lets a decoder refuse a hostile 20000x20000 frame before allocating it."""
    buf = bytes(data[:65536 * 4]) if len(data) > 65536 * 4 else bytes(data)
    if len(buf) < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return None
    pos = 2
    while pos + 4 <= len(buf):
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xD9 or marker == 0xDA:
            return None
        seg_len = int.from_bytes(buf[pos + 2:pos + 4], "big")
        if marker in _SOF_MARKERS and pos + 9 <= len(buf):
            h = int.from_bytes(buf[pos + 5:pos + 7], "big")
            w = int.from_bytes(buf[pos + 7:pos + 9], "big")
            return w, h
        if seg_len < 2:
            return None
        pos += 2 + seg_len
    return None


def _check_size(w: int, h: int, i: int, size_wh: tuple[int, int] | None, max_pixels: int | None,
                pad: int = 0) -> None:
    if max_pixels and w * h > max_pixels:
        raise CodecError(f"frame {i} is {w}x{h} = {w * h} pixels, over the limit of {max_pixels} "
                         f"(limits.max_pixels_per_frame)")
    if size_wh is not None:
        ew, eh = int(size_wh[0]), int(size_wh[1])
        if not (ew <= w <= ew + pad and eh <= h <= eh + pad):
            raise CodecError(f"frame {i} decodes to {w}x{h} but the message declares {ew}x{eh}")


def decode_jpeg_frames(data: bytes, *, size_wh: tuple[int, int] | None = None,
                       expected_frames: int | None = None, max_pixels: int | None = None,
                       max_decoded_bytes: int | None = None) -> Frames:
    """Inverse of :func:`encode_jpeg_frames`: ``(N, H, W, 3)`` uint8 BGR.

    Args:
        size_wh: every frame must be exactly ``(width, height)`` (checked from the JPEG
            header before decoding).
        expected_frames: the payload must hold exactly this many frames.
        max_pixels: refuse (before decoding) any frame larger than this.
        max_decoded_bytes: refuse the payload once its frames (count from the payload
            header x size from frame 0's JPEG header x 3) would pass this many bytes;
            checked before frame 0 is decoded and before each later frame.

    Raises:
        CodecError: bad magic, truncated payload, undecodable JPEG, frames of different
            sizes, or a size/count/limit mismatch.
        DecodeLimitError: (a subclass) over ``max_decoded_bytes``.
    """
    buf = memoryview(bytes(data))
    if len(buf) < 8 or bytes(buf[:4]) != JPEG_MAGIC:
        raise CodecError("not a JPEG frames payload (bad magic)")
    (count,) = _U32.unpack_from(buf, 4)
    if count > MAX_FRAMES:
        raise CodecError(f"JPEG frames payload declares {count} frames (corrupt header)")
    if expected_frames is not None and count != expected_frames:
        raise CodecError(f"JPEG frames payload holds {count} frames, the message declares {expected_frames}")
    pos = 8
    frames: list[np.ndarray] = []
    for i in range(count):
        if pos + 4 > len(buf):
            raise CodecError(f"JPEG frames payload truncated before frame {i} of {count}")
        (n,) = _U32.unpack_from(buf, pos)
        pos += 4
        if pos + n > len(buf):
            raise CodecError(f"JPEG frames payload truncated inside frame {i} ({n} bytes declared, "
                             f"{len(buf) - pos} left)")
        if size_wh is not None or max_pixels or max_decoded_bytes:
            wh = jpeg_size(buf[pos:pos + n])
            if wh is None:
                raise CodecError(f"JPEG frame {i} of {count} has no readable frame header")
            _check_size(wh[0], wh[1], i, size_wh, max_pixels)
            # frames decoded so far + this one; frame 0 also predicts the whole payload
            _check_decoded(max_decoded_bytes, count if i == 0 else i + 1, wh[0], wh[1], "JPEG frames payload")
        img = cv2.imdecode(np.frombuffer(buf[pos:pos + n], np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise CodecError(f"JPEG frame {i} of {count} cannot be decoded")
        if frames and img.shape != frames[0].shape:
            raise CodecError(f"JPEG frame {i} is {img.shape[1]}x{img.shape[0]}, frame 0 is "
                             f"{frames[0].shape[1]}x{frames[0].shape[0]}")
        if size_wh is not None:
            _check_size(int(img.shape[1]), int(img.shape[0]), i, size_wh, max_pixels)
        frames.append(img)
        pos += n
    if pos != len(buf):
        raise CodecError(f"JPEG frames payload has {len(buf) - pos} trailing bytes")
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(frames)


# ---------------------------------------------------------------- H.264 encode / decode


SMALL_DECODE_PIXELS = 1_000_000
"""A chunk of at most this many pixels (frames x width x height) decodes on one thread."""


def _rate(fps: float) -> Fraction:
    if not fps or fps <= 0 or not np.isfinite(fps):
        raise CodecError(f"fps must be > 0, got {fps}")
    return Fraction(float(fps)).limit_denominator(1001)


X264_PARTITIONS = "partitions=i4x4"
"""libx264's P-frame partition search for every encode (``encode_h264_chunk``, ``VideoWriter``):
intra 4x4 and 16x16 only, where veryfast also tries intra 8x8 and 8x8 inter sub-partitions
(x264's ``analyse`` 0x3:0x113 -> 0x3:0x1; I-frames keep both intra sizes, 8x8 transforms stay).
Less encode CPU at about the same bytes and PSNR (docs/performance.md, sessions 10 and 12)."""


def encode_h264_chunk(frames: Frames, fps: float, pts_ms: Sequence[int] | None = None, crf: int = 23,
                      preset: str = "veryfast", threads: int | None = None,
                      partitions: str | None = X264_PARTITIONS) -> bytes:
    """One closed-GOP H.264 Annex-B stream (IDR first, no B-frames, yuv420p, SPS/PPS in-band).

    Args:
        frames: ``(N, H, W, 3)`` uint8 BGR, N >= 1; not mutated. Odd sizes are padded by
            one edge row/column (yuv420p needs even sizes); pass ``size_wh`` to
            :func:`decode_h264_chunk` to crop back.
        fps: nominal rate (rate control only: the stream stores no timestamps).
        pts_ms: per-frame timestamps; only checked for length (they travel in metadata).
        crf, preset: libx264 quality / speed.
        threads: libx264 threads (``None``: its own choice, 1.5 per core plus lookahead). 1
            costs the same CPU (a 720p crowd chunk: 0.0159 vs 0.0157 CPU-s a frame) and keeps
            the work on the calling thread, where a caller that runs several encodes at once
            (the process stage's chunk actors) and counts CPU by thread can see it.
        partitions: an x264 ``partitions=...`` option (default :data:`X264_PARTITIONS`, what the
            stage encodes with), or ``None`` for the preset's own partition search (what
            :func:`operators.evalvideo.h264_roundtrip` uses to stand in for a camera's encoder, so
            that tuning the stage's encoder does not change the eval's input clips).

    The bytes are not deterministic on CPUs with AVX-512: libx264's AVX-512 kernels now and then
    encode the same frames differently in the last macroblock (about 4 distinct streams in 1,500
    encodes, ~20 bytes apart, same PSNR; identical with AVX-512 left out of x264's ``asm``, with
    ``no-mbtree`` or ``aq-mode=0``). A replayed chunk can so get other bytes under the same object
    key; what is encoded (the masked frames) is the same. Compare frames, never payloads.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise CodecError(f"encode_h264_chunk: threads must be an integer >= 0 (0 = auto), got {threads!r}")
    if partitions is not None and (not isinstance(partitions, str)
                                   or not re.fullmatch(r"partitions=[a-z0-9,]+", partitions)):
        raise CodecError(f"encode_h264_chunk: partitions must be 'partitions=<list>' or None, got {partitions!r}")
    arr = _check_frames(frames, "encode_h264_chunk")
    n, h, w = arr.shape[:3]
    if n == 0:
        raise CodecError("encode_h264_chunk: no frames")
    if pts_ms is not None and len(pts_ms) != n:
        raise CodecError(f"encode_h264_chunk: {len(pts_ms)} timestamps for {n} frames")
    ph, pw = h + (h % 2), w + (w % 2)
    if (ph, pw) != (h, w):
        arr = np.pad(arr, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    rate = _rate(fps)
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = pw, ph, "yuv420p"
    ctx.framerate, ctx.time_base = rate, 1 / rate
    ctx.gop_size = n
    if threads is not None:
        ctx.thread_count = threads
    ctx.options = {
        "crf": str(int(crf)),
        "preset": preset,
        # one GOP per chunk, closed, no B-frames, headers repeated in-band; the partition search
        # of ``partitions`` (X264_PARTITIONS by default)
        "x264-params": f"keyint={max(n, 1)}:min-keyint={max(n, 1)}:scenecut=0:bframes=0:open-gop=0:repeat-headers=1"
                       + (f":{partitions}" if partitions else ""),
    }
    out: list[bytes] = []
    try:
        ctx.open()
        for i, img in enumerate(arr):
            # BGR -> I420 by OpenCV, not by the frame's swscale reformat: x0.4 of its CPU (0.075 vs
            # 0.18 ms a 320x180 frame; the whole encode x0.86-0.88 at 320x180 and 720p) and exact
            # BT.601 limited range, where swscale's default rounding puts white at Y 234 and
            # grey 128 at 125/127/127 (decoded PSNR against the masked frames +1.1-1.4 dB, bytes
            # within 1 %; docs/performance.md "Per-chunk overhead of one-frame chunks").
            i420 = np.asarray(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2YUV_I420), np.uint8)
            frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
            frame.pts = i
            out += [bytes(p) for p in ctx.encode(frame)]
        out += [bytes(p) for p in ctx.encode(None)]
    except av.FFmpegError as exc:
        raise CodecError(f"encode_h264_chunk: {_why(exc)}") from None
    return b"".join(out)


def decode_h264_chunk(data: bytes, size_wh: tuple[int, int] | None = None, *,
                      expected_frames: int | None = None, max_pixels: int | None = None,
                      strict_size: bool = False, max_decoded_bytes: int | None = None) -> Frames:
    """Decode every frame of an H.264 Annex-B chunk to ``(N, H, W, 3)`` uint8 BGR.

    Args:
        data: the payload (one or more GOPs, starting with a keyframe).
        size_wh: crop decoded frames to ``(width, height)`` (undoes odd-size padding).
        expected_frames: the payload must decode to exactly this many frames.
        max_pixels: refuse a frame larger than this before converting it to pixels.
        strict_size: decoded frames must be ``size_wh`` (up to 15 px of coding padding),
            not merely at least as large.
        max_decoded_bytes: bound on ``frames x width x height x 3``: checked before any
            decoding from ``expected_frames`` and ``size_wh``, after the first frame from
            ``expected_frames`` and its coded size, and before each frame is converted
            (decoding stops at the first frame past it).

    Raises:
        CodecError: nothing decodable in ``data``, the decoder reports damage, or a
            size/count/limit mismatch.
        DecodeLimitError: (a subclass) over ``max_decoded_bytes``.
    """
    raw = bytes(data)
    if not raw:
        raise CodecError("empty H.264 payload")
    if not (raw.startswith(b"\x00\x00\x01") or raw.startswith(b"\x00\x00\x00\x01")):
        raise CodecError("not an H.264 Annex-B payload (no start code at byte 0)")
    if expected_frames is not None and size_wh is not None:
        _check_decoded(max_decoded_bytes, expected_frames, int(size_wh[0]), int(size_wh[1]), "H.264 payload")
    ctx = av.CodecContext.create("h264", "r")
    if expected_frames is not None and size_wh is not None and \
            expected_frames * int(size_wh[0]) * int(size_wh[1]) <= SMALL_DECODE_PIXELS:
        # FFmpeg's default (0: a thread per core) starts its threads for every chunk; a small chunk
        # (a snapshot camera's one 320x180 frame) has nothing to share: one thread costs x0.95
        # the CPU and keeps it all on the calling thread, where the stage's decode metric counts
        # it (with the default it saw ~0.6 of a one-frame chunk's decode)
        ctx.thread_count = 1
    # With the frame count declared, each frame is converted and copied straight into the chunk's
    # one array (allocated at the first frame, at the cropped size, within the limit checked
    # above), not kept as a list of frames stacked (and cropped) afterwards: one copy of the
    # chunk's pixels fewer and no second chunk-sized allocation (a 60-frame 720p chunk is 166 MB;
    # docs/performance.md, session 11, "the Ray remainder of a crowd frame").
    frames: list[np.ndarray] = []
    out: np.ndarray | None = None
    first: tuple[int, ...] | None = None  # the first frame's (H, W, 3)
    count, resized = 0, False
    limit = MAX_FRAMES if expected_frames is None else expected_frames
    try:
        packets = list(ctx.parse(raw)) + list(ctx.parse(None))  # parsing only: no pixels yet
        for pkt in [*packets, None]:
            for fr in ctx.decode(pkt):
                w, h = int(fr.width), int(fr.height)
                _check_size(w, h, count, size_wh if strict_size else None, max_pixels, pad=15)
                if count >= limit:
                    raise CodecError(f"H.264 payload holds more than the {limit} frames the message declares")
                n = count + 1 if expected_frames is None or count else max(expected_frames, 1)
                _check_decoded(max_decoded_bytes, n, w, h, "H.264 payload")
                bgr = _to_bgr(fr)
                if first is None:
                    first = bgr.shape
                    if expected_frames is not None and (size_wh is None or (size_wh[0] <= w and size_wh[1] <= h)):
                        ow, oh = (w, h) if size_wh is None else size_wh
                        out = np.empty((expected_frames, oh, ow, 3), np.uint8)
                elif bgr.shape != first:
                    resized = True  # reported after the count, as before
                if out is None:
                    frames.append(bgr)
                elif not resized:
                    out[count] = bgr[:out.shape[1], :out.shape[2]]
                count += 1
    except av.FFmpegError as exc:
        raise CodecError(f"H.264 payload cannot be decoded: {_why(exc)}") from None
    if not count:
        raise CodecError(f"H.264 payload of {len(raw)} bytes holds no decodable frame")
    if expected_frames is not None and count != expected_frames:
        raise CodecError(f"H.264 payload holds {count} frames, the message declares {expected_frames}")
    if resized or any(f.shape != frames[0].shape for f in frames):
        raise CodecError("H.264 payload changes frame size mid-chunk")
    if out is not None:
        return out
    out = np.stack(frames)
    if size_wh is not None:
        w, h = size_wh
        if w > out.shape[2] or h > out.shape[1]:
            raise CodecError(f"decoded frames are {out.shape[2]}x{out.shape[1]}, smaller than {w}x{h}")
        out = np.ascontiguousarray(out[:, :h, :w])
    return out


def decode_chunk_payload(codec: str, payload: bytes, size_wh: tuple[int, int] | None = None, *,
                         expected_frames: int | None = None, max_pixels: int | None = None,
                         strict: bool = False, max_decoded_bytes: int | None = None) -> Frames:
    """Decode a chunk payload by its ``codec`` (``"h264"`` or ``"jpeg"``).

    With ``strict=True`` (what the pipeline uses on messages), frames must match
    ``size_wh`` and ``expected_frames`` exactly: a header cannot claim a size or count the
    payload does not have. ``max_decoded_bytes`` (``limits.max_decoded_bytes_per_chunk``)
    raises :class:`DecodeLimitError` before or while decoding, never after."""
    if codec == "h264":
        return decode_h264_chunk(payload, size_wh, expected_frames=expected_frames, max_pixels=max_pixels,
                                 strict_size=strict, max_decoded_bytes=max_decoded_bytes)
    if codec == "jpeg":
        return decode_jpeg_frames(payload, size_wh=size_wh if strict else None, expected_frames=expected_frames,
                                  max_pixels=max_pixels, max_decoded_bytes=max_decoded_bytes)
    raise CodecError(f"unknown chunk codec {codec!r}; expected h264 or jpeg")


def encode_chunk_payload(codec: str, frames: Frames, fps: float, *, jpeg_quality: int = 90, crf: int = 23,
                         preset: str = "veryfast") -> bytes:
    """Encode frames as a chunk payload of kind ``codec``."""
    if codec == "h264":
        return encode_h264_chunk(frames, fps, crf=crf, preset=preset)
    if codec == "jpeg":
        return encode_jpeg_frames(frames, jpeg_quality)
    raise CodecError(f"unknown chunk codec {codec!r}; expected h264 or jpeg")


# ---------------------------------------------------------------- passthrough


@dataclass(frozen=True)
class GopChunk:
    """One or more whole GOPs of a camera's H.264 stream, never decoded.

    Attributes:
        payload: Annex-B bytes, starting with a keyframe and its SPS/PPS.
        pts_ms: per-frame presentation timestamps (ms, source clock), ascending.
        fps: nominal source rate.
        width, height: coded frame size.
        skipped_frames: packets dropped before this chunk because they could not be
            decoded on their own (stream joined mid-GOP); counted, never silent.
    """

    payload: bytes = field(repr=False)
    pts_ms: list[int]
    fps: float
    width: int
    height: int
    skipped_frames: int = 0


def _nal_types(data: bytes, limit: int = 64) -> list[int]:
    out: list[int] = []
    i = 0
    while len(out) < limit:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0 or j + 3 >= len(data):
            break
        out.append(data[j + 3] & 0x1F)
        i = j + 3
    return out


def split_gops(source: str | Path, chunk_seconds: float = 2.0, *, options: Mapping[str, str] | None = None,
               timeout_s: float = 10.0, max_chunk_seconds: float = 30.0,
               container: Any = None) -> Iterator[GopChunk]:
    """Cut an H.264 stream (file, HTTP or RTSP URL) into GOP-aligned chunks, no decoding.

    Packets are copied as they are (MP4/avcC sources go through the
    ``h264_mp4toannexb`` bitstream filter, which also puts SPS/PPS before each keyframe).
    A chunk is cut at the first keyframe once it spans ``chunk_seconds``; the last one
    may be shorter. Packets before the first keyframe are skipped and counted.

    Args:
        source: path or URL (ignored when ``container`` is given).
        chunk_seconds: target chunk length.
        options: FFmpeg demuxer options (e.g. ``{"rtsp_transport": "tcp"}``).
        timeout_s: open/read timeout for network sources.
        max_chunk_seconds: a GOP longer than this is an error (unbounded memory otherwise).
        container: an already opened ``av`` input container (the caller closes it).

    Raises:
        CodecError: cannot open, no video, not H.264, damaged stream, GOP too long.
    """
    if chunk_seconds <= 0:
        raise CodecError(f"chunk_seconds must be > 0, got {chunk_seconds}")
    own = container is None
    if own:
        try:
            container = av.open(str(source), mode="r", options=dict(options or {}),
                                timeout=(timeout_s, timeout_s))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise CodecError(f"cannot open {str(source)!r}: {_why(exc)}") from None
    try:
        yield from _split(container, str(source), chunk_seconds, max_chunk_seconds)
    finally:
        if own:
            container.close()


def _split(container: Any, name: str, chunk_seconds: float, max_chunk_seconds: float) -> Iterator[GopChunk]:
    if not container.streams.video:
        raise CodecError(f"{name!r} has no video stream")
    stream = container.streams.video[0]
    cc = stream.codec_context
    if cc.name != "h264":
        raise CodecError(f"{name!r} is {cc.name}, not H.264: it cannot be passed through (use JPEG chunks)")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if fps <= 0:
        raise CodecError(f"{name!r}: frame rate unknown")
    tb = float(stream.time_base) if stream.time_base else 0.0
    extradata = bytes(cc.extradata or b"")
    avcc = extradata[:1] == b"\x01"
    bsf = BitStreamFilterContext("h264_mp4toannexb", stream) if avcc else None
    annexb_headers = b"" if avcc else extradata  # SPS/PPS to prepend when not in-band
    frame_ms = 1000.0 / fps
    target_ms, limit_ms = chunk_seconds * 1000.0, max_chunk_seconds * 1000.0

    parts: list[bytes] = []
    pts: list[int] = []
    skipped = 0
    index = 0

    def emit() -> GopChunk:
        payload = b"".join(parts)
        if annexb_headers and 7 not in _nal_types(parts[0]):
            payload = annexb_headers + payload
        return GopChunk(payload, sorted(pts), fps, int(cc.width), int(cc.height), skipped)

    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:
                continue  # demuxer flush packet
            key = bool(pkt.is_keyframe)
            t = pkt.pts if pkt.pts is not None else pkt.dts
            t_ms = round(t * tb * 1000.0) if (t is not None and tb) else round(index * frame_ms)
            index += 1
            if not parts and not key:
                skipped += 1
                continue
            if key and parts and (max(pts) - min(pts) + frame_ms) >= target_ms:
                yield emit()
                parts, pts, skipped = [], [], 0
            elif parts and (max(pts) - min(pts)) > limit_ms:
                raise CodecError(f"{name!r}: no keyframe for over {max_chunk_seconds:.0f}s; GOP too long "
                                 "for passthrough (use JPEG chunks or a shorter camera GOP)")
            if bsf is not None:
                data = b"".join(bytes(p) for p in bsf.filter(pkt))
            else:
                data = bytes(pkt)
            parts.append(data)
            pts.append(t_ms)
    except av.FFmpegError as exc:
        raise CodecError(f"{name!r}: damaged stream: {_why(exc)}") from None
    if parts:
        yield emit()
