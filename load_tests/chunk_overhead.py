"""Per-chunk CPU outside inference of one-frame 320x180 chunks (issue 19 "Throughput", item 3:
100 snapshot cameras at 0.5 fps; docs/performance.md "Per-chunk overhead of one-frame chunks").

    .venv/bin/python load_tests/chunk_overhead.py [--chunks 16] [--rounds 5] [--source snapshot|FILE]
        [--segment-chunks 1,10,30] [--message-reps 10] [--messages-only]

Every figure is CPU seconds of this process (``time.process_time``: every thread), per chunk,
from ``--chunks`` chunks of ``make load``'s 320x180 0.5 fps source (``stage_cost.source_for``),
alternated round by round (round 0 warms up, untimed). Compare within one run: the machine is
shared.

* **encode** (``operators.codec.encode_h264_chunk`` of a decoded chunk, one libx264 thread as the
  process stage runs it), split into opening the encoder, converting and sending the frame, and
  the flush that codes it; then the BGR -> I420 conversion the encoder uses (OpenCV) against the
  swscale reformat it used before, each through the whole encode: CPU, bytes and PSNR of the
  decoded output against the encoded frames.
* **decode** (``decode_chunk_payload`` as the chunk actor calls it): creating the decoder,
  parse + decode, the conversion to BGR, and the whole call.
* **sink remux** (``pipeline.sink.segments.remux_segment``) of segments of ``--segment-chunks``
  chunks (``make load`` writes 20 s segments: 10 one-frame chunks at 0.5 fps; the default 60 s:
  30), probing each segment's first access unit or with the sink's ``StreamTemplates`` (one probe
  per kind of stream), against what opening every payload as a container cost before (``av.open``
  probes the stream by decoding it): the probe alone, per chunk.
* **messages**: ``encode_chunk`` / ``decode_chunk_*`` of the ``ChunkCaptured`` and
  ``ChunkRedacted`` a frame crosses (ingest, process driver, sink), JSON Schema checks included,
  alternated between jsonschema alone (``schemas.problems_reference``, how every message was
  checked before) and ``schemas.problems`` (the compiled fast path, jsonschema only for what it
  does not accept); ``--message-reps`` passes a round, ``--messages-only`` for these rows alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "load_tests"))

from operators.codec import decode_chunk_payload, encode_h264_chunk, split_gops  # noqa: E402

X264_PARAMS = "keyint={n}:min-keyint={n}:scenecut=0:bframes=0:open-gop=0:repeat-headers=1"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10.0 * float(np.log10(255.0 ** 2 / mse))


def encode_steps(frames: np.ndarray, fps: float, convert: str) -> tuple[bytes, tuple[float, float, float]]:
    """``encode_h264_chunk``'s work with each step timed: ``(payload, (open, send, flush))``;
    ``convert`` is ``cv2`` (what it does) or ``swscale`` (what it did)."""
    n, h, w = frames.shape[:3]
    rate = Fraction(float(fps)).limit_denominator(1001)
    c0 = time.process_time()
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    ctx.framerate, ctx.time_base = rate, 1 / rate
    ctx.gop_size = n
    ctx.thread_count = 1
    ctx.options = {"crf": "23", "preset": "veryfast", "x264-params": X264_PARAMS.format(n=n)}
    ctx.open()
    c1 = time.process_time()
    out: list[bytes] = []
    for i, img in enumerate(frames):
        if convert == "cv2":
            fr = av.VideoFrame.from_ndarray(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2YUV_I420),
                                            format="yuv420p")
        else:
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24").reformat(format="yuv420p")
        fr.pts = i
        out += [bytes(p) for p in ctx.encode(fr)]
    c2 = time.process_time()
    out += [bytes(p) for p in ctx.encode(None)]
    del ctx
    c3 = time.process_time()
    return b"".join(out), (c1 - c0, c2 - c1, c3 - c2)


def decode_steps(payload: bytes) -> tuple[float, float, float]:
    """``(create, parse + decode, to BGR)`` CPU-s of decoding one payload as ``decode_h264_chunk`` does."""
    c0 = time.process_time()
    ctx = av.CodecContext.create("h264", "r")
    c1 = time.process_time()
    got = [f for p in [*ctx.parse(payload), *ctx.parse(None), None] for f in ctx.decode(p)]
    c2 = time.process_time()
    for f in got:
        f.to_ndarray(format="bgr24")
    c3 = time.process_time()
    return c1 - c0, c2 - c1, c3 - c2


def probe_packets(segments: Any, payload: bytes) -> list[Any]:
    """What the sink did per chunk before: open the payload as a container (probing it) and demux."""
    inp = segments._open_payload(bytes(payload))
    try:
        return [p for p in inp.demux(inp.streams.video[0]) if p.size > 0]
    finally:
        inp.close()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.process_time()
    got = fn()
    return time.process_time() - t0, got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--source", default="snapshot", help="snapshot (make load's 320x180 0.5 fps), or an H.264 file")
    ap.add_argument("--segment-chunks", default="1,10,30", help="chunks per remuxed segment (comma-separated)")
    ap.add_argument("--message-reps", type=int, default=10, help="message rows: passes over the chunks a round")
    ap.add_argument("--messages-only", action="store_true", help="only the message rows (no encode/decode/remux)")
    args = ap.parse_args(argv)
    if args.chunks < 1 or args.rounds < 1 or args.message_reps < 1:
        ap.error("--chunks, --rounds and --message-reps must be >= 1")
    seg_sizes = [int(x) for x in args.segment_chunks.split(",") if x]

    from stage_cost import source_for

    import schemas
    from pipeline.sink import segments
    from schemas import messages
    from schemas.messages import (
        ChunkCaptured,
        ChunkRedacted,
        decode_chunk_captured,
        decode_chunk_redacted,
        encode_chunk,
    )

    src = source_for(args.source)
    gops = [g for _, g in zip(range(args.chunks), split_gops(str(src), 2.0))]
    decoded = [decode_chunk_payload("h264", g.payload, (g.width, g.height), expected_frames=len(g.pts_ms), strict=True)
               for g in gops]
    n_frames = sum(len(d) for d in decoded)
    fps = float(gops[0].fps)
    # the redacted chunks the sink gets (the process stage's own encoder), with their messages
    models = tuple({"id": m, "version": "1", "sha256": "ab" * 32, "precision": "fp32"}
                   for m in ("centerface", "yunet", "yolox_nano", "ppocr_det", "ppocr_det@bf16"))
    redacted: list[ChunkRedacted] = []
    for seq, (g, d) in enumerate(zip(gops, decoded)):
        pts = tuple(int(p) for p in g.pts_ms)
        redacted.append(ChunkRedacted(
            camera_id="cam-001", chunk_seq=seq, pts_ms=pts, fps=fps, width=int(g.width), height=int(g.height),
            codec="h264", captured_at_ms=pts[0], payload=encode_h264_chunk(d, fps, threads=1),
            masks_per_class={"face": 1, "plate": 0, "person": 2, "text": 0}, fail_closed_frames=(), models=models,
            policy_id="default", policy_version=1))
    captured = [ChunkCaptured(camera_id="cam-001", chunk_seq=i, pts_ms=tuple(int(p) for p in g.pts_ms), fps=fps,
                              width=int(g.width), height=int(g.height), codec="h264",
                              captured_at_ms=int(g.pts_ms[0]), payload=g.payload, policy_id="street")
                for i, g in enumerate(gops)]
    zones = ({"name": "door", "polygon": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.9], [0.1, 0.9]], "normalized": True},
             {"name": "window", "polygon": [[0, 0], [40, 0], [40, 30]]})
    zoned = [dataclasses.replace(c, zones=zones) for c in captured]  # a camera with privacy zones

    templates = segments.StreamTemplates()  # what the sink's writer keeps: one probe per kind of stream
    acc: dict[str, float] = {}
    quality: dict[str, list[float]] = {"cv2": [0.0, 0.0], "swscale": [0.0, 0.0]}  # bytes, PSNR x frames

    def add(key: str, t: float) -> None:
        acc[key] = acc.get(key, 0.0) + t

    for rnd in range(args.rounds + 1):
        timing = rnd > 0
        order = ("cv2", "swscale") if rnd % 2 else ("swscale", "cv2")
        for conv in () if args.messages_only else order:
            for d in decoded:
                data, (t_open, t_send, t_flush) = encode_steps(d, fps, conv)
                if timing:
                    add(f"encode[{conv}]: open", t_open)
                    add(f"encode[{conv}]: convert + send", t_send)
                    add(f"encode[{conv}]: flush (codes the frame)", t_flush)
                    back = decode_chunk_payload("h264", data, (d.shape[2], d.shape[1]), expected_frames=len(d))
                    quality[conv][0] += len(data)
                    quality[conv][1] += psnr(back, d) * len(d)
        for d in () if args.messages_only else decoded:
            t, _ = timed(lambda d=d: encode_h264_chunk(d, fps, threads=1))
            if timing:
                add("encode: encode_h264_chunk (as the stage calls it)", t)
        for g in () if args.messages_only else gops:
            t_create, t_dec, t_bgr = decode_steps(g.payload)
            t_all, _ = timed(lambda g=g: decode_chunk_payload("h264", g.payload, (g.width, g.height),
                                                              expected_frames=len(g.pts_ms), strict=True))
            if timing:
                add("decode: create decoder", t_create)
                add("decode: parse + decode", t_dec)
                add("decode: to BGR", t_bgr)
                add("decode: decode_chunk_payload", t_all)
        for r in () if args.messages_only else redacted:
            t_probe, _ = timed(lambda r=r: probe_packets(segments, r.payload))
            t_parse, _ = timed(lambda r=r: segments._chunk_packets(r))
            if timing:
                add("sink: probe each payload (before)", t_probe)
                add("sink: parse each payload (now)", t_parse)
        for k in () if args.messages_only else seg_sizes:
            for i in range(0, len(redacted), k):
                group = redacted[i:i + k]
                t, _ = timed(lambda group=group: segments.remux_segment(group))
                t_kept, _ = timed(lambda group=group: segments.remux_segment(group, templates))
                if timing:
                    add(f"sink: remux_segment, {k} chunk(s) a segment, probed", t)
                    add(f"sink: remux_segment, {k} chunk(s) a segment, sink's templates", t_kept)
        # the schema check both ways, alternated: jsonschema alone (before) and the compiled fast path (now)
        for check in (("jsonschema", "compiled") if rnd % 2 else ("compiled", "jsonschema")):
            messages.problems = schemas.problems_reference if check == "jsonschema" else schemas.problems
            for _ in range(args.message_reps):
                for c, r, z in zip(captured, redacted, zoned):
                    t1, cv = timed(lambda c=c: encode_chunk(c))
                    t2, _ = timed(lambda cv=cv: decode_chunk_captured(*cv))
                    t3, rv = timed(lambda r=r: encode_chunk(r))
                    t4, _ = timed(lambda rv=rv: decode_chunk_redacted(*rv))
                    t5, zv = timed(lambda z=z: encode_chunk(z))
                    t6, _ = timed(lambda zv=zv: decode_chunk_captured(*zv))
                    if timing:
                        add(f"messages[{check}]: zones: ChunkCaptured with 2 zones, encode", t5 / args.message_reps)
                        add(f"messages[{check}]: zones: ChunkCaptured with 2 zones, decode", t6 / args.message_reps)
                        add(f"messages[{check}]: ChunkCaptured encode (ingest)", t1 / args.message_reps)
                        add(f"messages[{check}]: ChunkCaptured decode (process driver)", t2 / args.message_reps)
                        add(f"messages[{check}]: ChunkRedacted encode (process driver)", t3 / args.message_reps)
                        add(f"messages[{check}]: ChunkRedacted decode (sink)", t4 / args.message_reps)
        messages.problems = schemas.problems

    per_chunk = args.rounds * len(gops)
    print(f"\n{len(gops)} chunks ({n_frames} frames) of {src.name}, {args.rounds} rounds; CPU ms per chunk "
          f"(process_time, all threads)")
    for k, t in acc.items():
        print(f"  {k:62s} {t / per_chunk * 1e3:8.3f}")
    frames_timed = args.rounds * n_frames
    print("\nmessages, the four above summed (ingest + process driver + sink; no zones): CPU ms / frame")
    for check in ("jsonschema", "compiled"):
        cpu = sum(v for k, v in acc.items() if k.startswith(f"messages[{check}]") and "zones" not in k)
        print(f"  {check:10s} {cpu / frames_timed * 1e3:8.3f}")
    if args.messages_only:
        return 0
    print("\nencoder input conversion, whole encode: CPU ms / frame, bytes / frame, PSNR dB of the decoded output")
    for conv in ("swscale", "cv2"):
        cpu = sum(v for k, v in acc.items() if k.startswith(f"encode[{conv}]"))
        print(f"  {conv:8s} {cpu / frames_timed * 1e3:8.3f} {quality[conv][0] / frames_timed:9.0f} "
              f"{quality[conv][1] / frames_timed:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
