"""CPU seconds per frame by step of a crowded 720p chunk's whole path, ingest to sink, in one
process (issue 19 "Throughput": where a crowd frame's CPU goes besides detection;
docs/performance.md "Where the rest of a crowd frame's CPU goes").

    .venv/bin/python load_tests/stage_cost.py [--chunks 6] [--rounds 2] [--encode preset=veryfast,threads=0 ...]
        [--source crowd|vtest|snapshot|FILE]

Cuts the load test's crowd source (``pipeline_load.py --source crowd``: 1280x720@15, keyframe every
2 s, re-encoded once under ``out/load/sources``) into chunks as ingest does (``split_gops``,
H.264 passthrough), then runs each step the chunk goes through, one after the other in this
thread, and times it with ``time.process_time`` (every thread of the process: libx264's and
onnxruntime's own threads count, which the stream's per-step metrics, thread time, miss):

* ingest: ``split_gops`` (demux and cut), the ``ChunkCaptured`` message (``encode_chunk``);
* process stage: the message decoded, the Ray task pickled and unpickled (what crosses to the
  chunk actor), the payload decoded to frames (``decode_chunk_payload``), the scheduled frames
  pickled for the detector actor (Ray puts arrays over 100 KB in the object store: a copy each
  way), detection (``DetectorActor._run``), planning (``Redactor.plan_from``), masking
  (``Redactor.apply`` in place), counting (``Redactor.count``), H.264 encoding of the redacted
  chunk (``encode_h264_chunk``), the result pickled and unpickled, the ``ChunkRedacted`` message;
* sink: the message decoded, the segment remuxed to MP4 (``remux_segment``) and hashed, per
  segment of ``--segment-seconds`` (default 20: ``make load``'s; the sink's default is 60) as the sink
  groups a camera's chunks, its CPU spread over the segment's frames.

Each ``--encode`` variant (``key=value,...``: ``preset``, ``crf``, ``threads``) re-encodes every
chunk's masked frames, alternated round by round with the others, and prints CPU-s per frame,
output bytes per frame and the PSNR of the decoded output against the masked frames (quality
class), so encoder settings compare under the same load. ``--skip-detect`` leaves detection
out (planning then has no detections: use it only for the encoder comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import pickle
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.codec import decode_chunk_payload, encode_h264_chunk, split_gops  # noqa: E402
from operators.redactor import RedactionConfig, Redactor  # noqa: E402
from operators.temporal import detection_schedule  # noqa: E402


def crowd_source() -> Path:
    from load_tests.crowd_source import build_crowd_clip
    from load_tests.pipeline_load import prepare_source

    sources = ROOT / "out" / "load" / "sources"
    return prepare_source(build_crowd_clip(sources), 1280, 720, 15.0, sources)


def source_for(name: str) -> Path:
    """``--source``: ``crowd`` (default), ``vtest`` (``make load``'s 1280x720@15 vtest), ``snapshot``
    (``make load ... --size 320x180 --fps 0.5``'s vtest: one frame per 2 s chunk, every one
    detected), or an H.264 file (keyframe every chunk, as ``prepare_source`` writes)."""
    from load_tests.pipeline_load import VTEST, prepare_source

    sources = ROOT / "out" / "load" / "sources"
    if name == "crowd":
        return crowd_source()
    if name == "vtest":
        return prepare_source(VTEST, 1280, 720, 15.0, sources)
    if name == "snapshot":
        return prepare_source(VTEST, 320, 180, 0.5, sources)
    return Path(name)


@contextlib.contextmanager
def clock(into: dict[str, float], step: str) -> Iterator[None]:
    """Add the process CPU seconds of the block to ``into[step]``."""
    t0 = time.process_time()
    yield
    into[step] = into.get(step, 0.0) + time.process_time() - t0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def parse_variant(spec: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in spec.split(",") if kv)


def encode_variant(frames: np.ndarray, fps: float, v: dict[str, str]) -> bytes:
    kw: dict[str, Any] = {"crf": int(v.get("crf", 23)), "preset": v.get("preset", "veryfast")}
    if "threads" in v:
        kw["threads"] = int(v["threads"])
    return encode_h264_chunk(frames, fps, **kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=6, help="2 s chunks of the source")
    ap.add_argument("--source", default="crowd", help="crowd (default), vtest, snapshot or an H.264 file")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--detect-every", type=int, default=4, help="the stream's default schedule")
    ap.add_argument("--encode", action="append", default=[], help="encoder variant key=value,... (compare)")
    ap.add_argument("--skip-detect", action="store_true")
    ap.add_argument("--segment-seconds", type=float, default=20.0,
                    help="the sink's segment length (make load: 20; the sink's default: 60)")
    ap.add_argument("--detections", type=Path, help="pickle of each chunk's detections: written on the first "
                    "run, read (detection then not run nor timed) on later ones")
    args = ap.parse_args(argv)

    from pipeline.process import actors
    from pipeline.process.actors import ChunkResult, ChunkTask, DetectorActor

    # the stream's encode: one libx264 thread since 270bc05 (an older tree: libx264's default)
    stream_encode: dict[str, Any] = ({"threads": actors.ENCODE_THREADS} if hasattr(actors, "ENCODE_THREADS")
                                     else {})
    from pipeline.sink.segments import remux_segment, window_of
    from schemas.messages import (
        ChunkCaptured,
        ChunkRedacted,
        decode_chunk_captured,
        decode_chunk_redacted,
        encode_chunk,
    )

    src = source_for(args.source)
    gops = []
    split: dict[str, float] = {}
    with clock(split, "split"):
        gops.extend(g for _, g in zip(range(args.chunks), split_gops(str(src), 2.0)))
    cfg = RedactionConfig(detect_every=args.detect_every).validate()
    red = Redactor(cfg, detectors={})
    det = None if args.skip_detect else DetectorActor.__new__(DetectorActor)
    if det is not None:  # the detector actor's own batch call, without Ray
        det.redactor = Redactor(RedactionConfig(detect_every=1))
        # what DetectorActor.__init__ sets that _run reads: no injected failure, no small-frame
        # lanes (one process here; the lanes are the actor's threads, measured by
        # snapshot_cpu_breakdown.py)
        det._fail_mode, det.small_side, det.small_lanes = None, None, 0
    variants = {spec: parse_variant(spec) for spec in (args.encode or [])}
    steps: dict[str, float] = {}
    cached: dict[int, list[Any]] = {}
    if args.detections is not None and args.detections.is_file():
        cached = pickle.loads(args.detections.read_bytes())
    fresh = not cached
    boxes_raw = boxes_masked = 0
    enc: dict[str, dict[str, float]] = {s: {"cpu": 0.0, "bytes": 0.0, "psnr": 0.0} for s in variants}
    n_frames = 0

    def add(step: str, t: float) -> None:
        steps[step] = steps.get(step, 0.0) + t

    add("ingest: split_gops", split["split"])

    def store_segment(seg: list[Any], into: dict[str, float]) -> None:
        """The sink's write of one segment: remux every chunk of it, hash the MP4."""
        if seg:
            with clock(into, "sink: remux + sha256 (per segment)"):
                _ = hashlib.sha256(remux_segment(seg)).hexdigest()
            seg.clear()

    for rnd in range(args.rounds + 1):  # round 0 warms up (sessions, first allocations), untimed
        segment: list[Any] = []
        seg_window: tuple[int, int] | None = None
        for seq, g in enumerate(gops):
            timed: dict[str, float] = {}
            msg = ChunkCaptured(camera_id="cam-001", chunk_seq=seq, pts_ms=tuple(int(p) for p in g.pts_ms),
                                fps=float(g.fps), width=int(g.width), height=int(g.height), codec="h264",
                                captured_at_ms=int(g.pts_ms[0]), payload=g.payload)
            with clock(timed, "ingest: ChunkCaptured encode"):
                value, headers = encode_chunk(msg)
            with clock(timed, "process: message decode"):
                m = decode_chunk_captured(value, headers)
            task = ChunkTask("h264", m.payload, m.camera_id, m.fps, m.pts_ms, m.width, m.height)
            with clock(timed, "process: task pickle (Ray)"):
                task2 = pickle.loads(pickle.dumps(task, protocol=5))
            with clock(timed, "process: decode"):
                frames = decode_chunk_payload("h264", task2.payload, (task2.width, task2.height),
                                              expected_frames=len(task2.pts_ms), strict=True)
            sched = [i for i, s in enumerate(detection_schedule(len(frames), args.detect_every)) if s]
            with clock(timed, "process: frames to detector (Ray)"):
                sub = pickle.loads(pickle.dumps(frames[sched], protocol=5))
            raw: list[Any] = [None] * len(frames)
            if seq in cached:
                for j, i in enumerate(sched):
                    raw[i] = cached[seq][j]
            elif det is not None:
                with clock(timed, "process: detect"):
                    out = det._run([sub])
                for j, i in enumerate(sched):
                    raw[i] = out[0].boxes[j]
                cached[seq] = out[0].boxes
            else:
                from operators.types import Boxes
                for i in sched:
                    raw[i] = Boxes.empty()
            with clock(timed, "process: plan"):
                boxes = red.plan_from(raw, [], frames.shape[1:3], frames=frames)
            with clock(timed, "process: mask"):
                masked = red.apply(frames, boxes, in_place=True)
            with clock(timed, "process: count"):
                counts = red.count(boxes)
            with clock(timed, "process: encode"):
                payload = encode_h264_chunk(masked, task2.fps, crf=23, preset="veryfast", **stream_encode)
            res = ChunkResult(payload=payload, pts_ms=task2.pts_ms, masks_per_class=counts)
            with clock(timed, "process: result pickle (Ray)"):
                res2 = pickle.loads(pickle.dumps(res, protocol=5))
            red_msg = ChunkRedacted(camera_id=m.camera_id, chunk_seq=seq, pts_ms=res2.pts_ms, fps=m.fps,
                                    width=m.width, height=m.height, codec="h264", captured_at_ms=m.captured_at_ms,
                                    payload=res2.payload, masks_per_class=dict(res2.masks_per_class),
                                    fail_closed_frames=(), models=(), policy_id="default", policy_version=1)
            with clock(timed, "process: ChunkRedacted encode"):
                rv, rh = encode_chunk(red_msg)
            with clock(timed, "sink: message decode"):
                rm = decode_chunk_redacted(rv, rh)
            window = window_of(int(rm.pts_ms[0]), args.segment_seconds)
            if window != seg_window:  # the camera's open segment completes, as in the sink
                store_segment(segment, timed)
                seg_window = window
            segment.append(rm)
            if seq == len(gops) - 1:
                store_segment(segment, timed)
            for spec, v in variants.items():
                took: dict[str, float] = {}
                with clock(took, spec):
                    data = encode_variant(masked, task2.fps, v)
                if rnd:
                    back = decode_chunk_payload("h264", data, (m.width, m.height), expected_frames=len(masked))
                    enc[spec]["cpu"] += took[spec]
                    enc[spec]["bytes"] += len(data)
                    enc[spec]["psnr"] += psnr(back, masked) * len(masked)
            if rnd:
                boxes_raw += sum(len(b) for b in raw if b is not None)
                boxes_masked += sum(len(b) for b in boxes)
                n_frames += len(frames)
                for k, t in timed.items():
                    add(k, t)
    if args.detections is not None and fresh and cached:
        args.detections.parent.mkdir(parents=True, exist_ok=True)
        args.detections.write_bytes(pickle.dumps(cached))
    per_round = n_frames / args.rounds
    print(f"\n{len(gops)} chunks, {int(per_round)} frames of {src.name} per round, {args.rounds} rounds, "
          f"detect every {args.detect_every}; CPU-s per frame (process_time: all threads)")
    total = 0.0
    for k, t in steps.items():
        per = t / (per_round if k.startswith("ingest: split") else n_frames)
        total += per
        print(f"  {k:38s} {per:8.4f}")
    print(f"  {'total':38s} {total:8.4f}")
    print(f"boxes per frame: {boxes_raw / n_frames:.1f} detected (every {args.detect_every}th frame, averaged over all), "
          f"{boxes_masked / n_frames:.1f} masked after planning"
          + ("; detections read from " + str(args.detections) + ", not timed" if not fresh else ""))
    if variants:
        print("\nencoder variants (the masked chunks re-encoded): CPU-s / frame, KB / frame, PSNR dB vs masked")
        for spec, e in enc.items():
            print(f"  {spec:40s} {e['cpu'] / n_frames:8.4f} {e['bytes'] / n_frames / 1024:8.1f} "
                  f"{e['psnr'] / n_frames:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
