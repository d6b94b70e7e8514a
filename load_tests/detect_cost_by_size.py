"""Detection CPU per frame by camera frame size: does detection cost scale with the pixels a
camera sends? (issue "Throughput", items 2 and 5; docs/performance.md)

    .venv/bin/python load_tests/detect_cost_by_size.py [--frames 8] [--rounds 3]

The same content at every size: detected frames (every 4th) of the ``bikes.mp4`` sample (a
640x272 street: cyclists, cars), resized to 176x144 (the demo's ``carphone`` cameras), 320x180,
640x272 (native, the demo's street camera) and 1280x720. Default detectors of the demo's default
policy (faces + plates), one intra-op thread, all frames of a size in one call, interleaved
rounds in this one process, best round kept: the machine is shared, so read the ratios, not the
seconds. ``before`` is the sizing before the rule (full-frame text pass upscaled to 960 px
whatever the frame, YOLOX letterboxed to 640 px): the knobs the rule added, set back.
``caps`` is the sizing of 2026-12-05 morning (text upscaled at most 2.5x, YOLOX at most 2x,
for every frame); ``after (defaults)`` adds ``small_frame_side`` 320 (frames of at most 320 px
at their own size, no full-frame text pass: issue "Throughput", item 3).

Prints one line per (setting, size) with its CPU-s per detected frame and its ratio to the same
setting at 1280x720, then one JSON line. Never pass/fail on time.

``--snapshot`` measures instead the frames of ``make load``'s 320x180 snapshot source (vtest, a
pedestrian mall, no vehicles; ``out/load/sources/vtest-320x180-0.5fps.mp4``, which ``make load
CAMERAS=100 FPS=0.5 LOAD_ARGS="--size 320x180"`` builds): 16 frames in one call, as the
detector actor batches concurrent cameras, best of 3 interleaved rounds.

``--demo`` adds what ``make demo``'s cameras ask of detection: per camera (``carphone`` 176x144
at 29.97 fps, ``bikes`` 640x272 at 25 fps; ``make demo`` streams carphone twice), its 2 s
chunks through ``Redactor.detect`` at each ``--detect-every``: CPU-s of detection per second
of video (1.0 = one core busy for that camera alone).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = ((176, 144), (320, 180), (640, 272), (1280, 720))
"""(width, height) of the frames measured."""

SETTINGS: dict[str, dict[str, Any]] = {
    "before": {"text_max_upscale": None, "person_max_upscale": None, "small_frame_side": None},
    "caps": {"small_frame_side": None},
    "after (defaults)": {},
    "crops only": {"text_full_min_side": 321},
}
"""RedactionConfig overrides per setting (faces + plates, threads 1, CPU)."""


def frames_at(n: int) -> dict[tuple[int, int], Any]:
    """``n`` detected frames of bikes.mp4 at every size of :data:`SIZES` (aspect not kept:
    the same pictures, so only the pixel count differs)."""
    import cv2
    import numpy as np

    from operators.video import VideoReader, sample_video

    src: list[Any] = []
    with VideoReader(str(sample_video("bikes.mp4"))) as r:
        for chunk in r.chunks(32):
            src.extend(chunk.frames[::4])
    step = max(1, len(src) // n)
    picked = src[::step][:n]
    out = {}
    for w, h in SIZES:
        interp = cv2.INTER_AREA
        out[(w, h)] = np.stack([f if f.shape[:2] == (h, w) else cv2.resize(
            f, (w, h), interpolation=interp if w * h < f.shape[0] * f.shape[1] else cv2.INTER_CUBIC) for f in picked])
    return out


def measure(settings: dict[str, dict[str, Any]], frames: dict[tuple[int, int], Any],
            rounds: int) -> dict[str, dict[tuple[int, int], float]]:
    """Best-round CPU seconds per frame of ``Redactor.run_detectors`` per setting and size."""
    from operators.redactor import RedactionConfig, Redactor

    reds = {k: Redactor(RedactionConfig(classes=("face", "plate"), threads=1, providers=("cpu",), **v).validate())
            for k, v in settings.items()}
    cpu: dict[str, dict[tuple[int, int], float]] = {k: {} for k in reds}
    for _ in range(rounds):
        for size, batch in frames.items():
            for k, red in reds.items():
                t0 = time.process_time()
                red.run_detectors(batch)
                dt = (time.process_time() - t0) / len(batch)
                cpu[k][size] = min(cpu[k].get(size, float("inf")), dt)
    return cpu


SNAPSHOT_SOURCE = Path(__file__).resolve().parents[1] / "out" / "load" / "sources" / "vtest-320x180-0.5fps.mp4"


def snapshot(settings: dict[str, dict[str, Any]], rounds: int) -> int:
    """CPU-s per frame of ``Redactor.run_detectors`` on 16 frames of the snapshot source."""
    import numpy as np

    from operators.redactor import RedactionConfig, Redactor
    from operators.video import VideoReader

    if not SNAPSHOT_SOURCE.is_file():
        raise SystemExit(f"{SNAPSHOT_SOURCE} not found: make load CAMERAS=1 FPS=0.5 LOAD_ARGS=\"--size 320x180\" "
                         f"builds it")
    got: list[Any] = []
    with VideoReader(str(SNAPSHOT_SOURCE)) as r:
        for chunk in r.chunks(16):
            got.extend(chunk.frames)
    frames = np.stack(got[:16])
    reds = {k: Redactor(RedactionConfig(classes=("face", "plate"), threads=1, providers=("cpu",), **v).validate())
            for k, v in settings.items()}
    for red in reds.values():
        red.run_detectors(frames)  # warm-up
    best: dict[str, float] = {}
    for _ in range(rounds):
        for k, red in reds.items():
            t0 = time.process_time()
            red.run_detectors(frames)
            best[k] = min(best.get(k, float("inf")), (time.process_time() - t0) / len(frames))
    first = next(iter(best))
    for k, v in best.items():
        print(f"{k:<18} {v:.4f} CPU-s per 320x180 snapshot frame  x{v / best[first]:.2f} of {first}", flush=True)
    print(json.dumps({"snapshot": {k: round(v, 4) for k, v in best.items()}, "frames": len(frames), "rounds": rounds}))
    return 0


DEMO = (("carphone_pristine.mp4", 2), ("bikes.mp4", 1))
"""``make demo``'s sample videos and how many of its cameras stream each."""


def demo_load(settings: dict[str, dict[str, Any]], every: list[int], chunks: int) -> list[dict[str, Any]]:
    """Per setting, detect-every and demo video: detection CPU-s per second of video."""
    from operators.redactor import RedactionConfig, Redactor
    from operators.video import VideoReader, sample_video

    rows = []
    for video, cams in DEMO:
        with VideoReader(str(sample_video(video))) as r:
            fps = r.info.fps
            got = []
            for chunk in r.chunks(60 if "carphone" in video else 50):  # 2 s chunks, as ingest cuts them
                got.append(chunk.frames)
                if len(got) >= chunks:
                    break
        seconds = sum(len(c) for c in got) / fps
        for k, v in settings.items():
            for n in every:
                red = Redactor(RedactionConfig(classes=("face", "plate"), threads=1, providers=("cpu",),
                                               detect_every=n, **v).validate())
                t0 = time.process_time()
                for c in got:
                    red.detect(c)
                cpu = time.process_time() - t0
                row = {"video": video, "cameras_in_demo": cams, "setting": k, "detect_every": n,
                       "detect_cpu_s_per_video_s": round(cpu / seconds, 3)}
                rows.append(row)
                print(f"{video:<22} x{cams} {k:<18} detect-every {n}: {cpu / seconds:.3f} CPU-s of detection per "
                      f"second of video", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8, help="detected frames per size")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of: " + ", ".join(SETTINGS))
    ap.add_argument("--demo", action="store_true", help="also the demo cameras' detection CPU per second of video")
    ap.add_argument("--detect-every", default="4,8", help="--demo: detect-every values")
    ap.add_argument("--chunks", type=int, default=2, help="--demo: 2 s chunks per video")
    ap.add_argument("--no-sizes", action="store_true", help="skip the per-size table")
    ap.add_argument("--snapshot", action="store_true", help="only make load's 320x180 snapshot source")
    args = ap.parse_args()
    chosen = {k: SETTINGS[k] for k in args.settings.split(",")}
    if args.snapshot:
        return snapshot(chosen, args.rounds)
    demo = demo_load(chosen, [int(x) for x in args.detect_every.split(",")], args.chunks) if args.demo else []
    if args.no_sizes:
        print(json.dumps({"demo": demo}))
        return 0
    frames = frames_at(args.frames)
    cpu = measure(chosen, frames, args.rounds)
    rows = []
    first = next(iter(cpu))
    for k, per in cpu.items():
        big = per[SIZES[-1]]
        for (w, h), s in per.items():
            row = {"setting": k, "size": f"{w}x{h}", "detect_cpu_s_per_frame": round(s, 4),
                   "ratio_to_1280x720": round(s / big, 3), "ratio_to_" + first: round(s / cpu[first][(w, h)], 3)}
            rows.append(row)
            print(f"{k:<18} {w:>4}x{h:<4} {s:.4f} CPU-s per detected frame  x{s / big:.2f} of 1280x720"
                  f"  x{s / cpu[first][(w, h)]:.2f} of {first}", flush=True)
    print(json.dumps({"frames": f"{args.frames} detected frames (every 4th) of bikes.mp4 per size",
                      "rounds": args.rounds, "rows": rows, "demo": demo}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
