"""libx264 options on masked crowd chunks: CPU, bytes and PSNR per frame, variant against variant,
in one process (issue 19 "Throughput": the encoder's share of a crowd frame's CPU;
docs/performance.md "Where the rest of a crowd frame's CPU goes").

    .venv/bin/python load_tests/encode_options.py [--chunks 2] [--rounds 3] [--source crowd]
        [--detections out/stage_cost/crowd-2.pkl] [--variant NAME=x264-params ...]

The chunks are cut, decoded, planned and masked as ``load_tests/stage_cost.py`` does, with its
cached detections (``--detections FILE``; a missing file is filled by running the default
detectors on the stream's schedule, every 4th frame and the last, once), then each variant
re-encodes every masked chunk exactly as ``operators.codec.encode_h264_chunk`` does (crf 23,
one libx264 thread like the process stage's ``ENCODE_THREADS``, closed GOP, no B-frames)
with its own ``preset`` and extra ``x264-params`` appended. Variants alternate round by
round; per chunk the least CPU of the rounds is kept (``time.process_time``: every thread).
Prints per variant: CPU-s per frame, ratio to the first variant, KB per frame (+%), and PSNR
(dB, of the decoded output against the masked frames, the quality class) per frame.

A variant is ``name=preset[:x264-params]``, e.g. ``vf-nombtree=veryfast:mbtree=0:rc-lookahead=0``.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.codec import decode_chunk_payload, split_gops  # noqa: E402
from operators.redactor import RedactionConfig, Redactor  # noqa: E402
from operators.temporal import detection_schedule  # noqa: E402

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
    "vf-i8x8=veryfast:partitions=i8x8",
    "vf-nodeblock=veryfast:no-deblock=1",
    "vf-cavlc=veryfast:cabac=0",
)


def parse_variant(spec: str) -> tuple[str, str, str]:
    """``name=preset[:params]`` -> (name, preset, params)."""
    name, _, rest = spec.partition("=")
    preset, _, params = rest.partition(":")
    if not name or not preset:
        raise SystemExit(f"--variant: expected name=preset[:x264-params], got {spec!r}")
    return name, preset, params


def encode(frames: np.ndarray, fps: float, preset: str, params: str, crf: int = 23) -> bytes:
    """``operators.codec.encode_h264_chunk(frames, fps, crf=crf, preset=preset, threads=1)`` with
    ``params`` appended to its ``x264-params``."""
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
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return b"".join(out)


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
    args = ap.parse_args(argv)
    variants = [parse_variant(s) for s in (args.variant or DEFAULT_VARIANTS)]
    chunks, fps = masked_chunks(args.source, args.chunks, None if args.unmasked else args.detections)
    n_frames = sum(len(c) for c in chunks)
    best = {name: [np.inf] * len(chunks) for name, _, _ in variants}
    size = {name: [0] * len(chunks) for name, _, _ in variants}
    quality = {name: [0.0] * len(chunks) for name, _, _ in variants}
    for rnd in range(args.rounds):
        for name, preset, params in (variants if rnd % 2 == 0 else variants[::-1]):
            for k, (frames, f) in enumerate(zip(chunks, fps)):
                t0 = time.process_time()
                data = encode(frames, f, preset, params, args.crf)
                best[name][k] = min(best[name][k], time.process_time() - t0)
                if rnd == 0:
                    back = decode_chunk_payload("h264", data, (frames.shape[2], frames.shape[1]),
                                                expected_frames=len(frames))
                    size[name][k] = len(data)
                    quality[name][k] = psnr(back, frames)
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    base = variants[0][0]
    cpu0 = sum(best[base]) / n_frames
    bytes0 = sum(size[base]) / n_frames
    print(f"\n{len(chunks)} {'unmasked' if args.unmasked else 'masked'} chunks of {args.source}, {n_frames} frames, crf {args.crf}, one libx264 thread; "
          f"least CPU of {args.rounds} rounds per chunk")
    print(f"{'variant':18} {'x264-params':42} {'CPU-s/frame':>11} {'x':>6} {'KB/frame':>9} {'bytes':>7} "
          f"{'PSNR dB':>8}")
    for name, preset, params in variants:
        cpu = sum(best[name]) / n_frames
        kb = sum(size[name]) / n_frames
        db = sum(q * len(c) for q, c in zip(quality[name], chunks)) / n_frames
        print(f"{name:18} {(preset + (':' + params if params else '')):42} {cpu:11.4f} {cpu / cpu0:6.2f} "
              f"{kb / 1024:9.1f} {100 * (kb / bytes0 - 1):+6.1f}% {db:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
