"""Why the crowd source's full-frame text pass costs x3 vtest's, and whether a vehicle gate on
the native dark pass could buy it back (issue "Throughput"; docs/performance.md "Dark frames
without a vehicle").

    .venv/bin/python load_tests/dark_native_gate.py [--frames 8] [--gate 0.2]

1. The crowd load source (``load_tests/crowd_source.py``), per picture: its median grey level
   (:func:`operators.detectors.litplate.median_grey`), the scale the full-frame text pass runs at
   (:func:`~operators.detectors.litplate.full_pass_scale`: native in frames darker than
   ``NATIVE_MEDIAN``), its lit-plate proposals, the best vehicle score YOLOX gives it (any score
   down to 0.02), and the full-frame text pass's process CPU-s per frame as it runs (``native``)
   and at the pass's own 640 px (``own``: ``litplate.NATIVE_SIDE = None``), on ``--frames`` frames
   of each picture, interleaved in this one process (CPU time, never wall: the machine is shared).
2. plates_traffic and plates_eu: the images darker than ``NATIVE_MEDIAN`` (those that get the
   native pass), with the best YOLOX vehicle score on each: the ones under ``--gate`` (the
   vehicle threshold the crop pass uses) would lose the native pass under a "YOLOX returned a
   vehicle" gate; their widest labelled plate is listed.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCORE_FLOOR = 0.02
"""YOLOX vehicle boxes are decoded down to this score to find a frame's best one."""


def best_vehicle(person: Any, img: np.ndarray) -> float:
    """The best YOLOX vehicle score on one BGR image (0.0: none down to ``SCORE_FLOOR``)."""
    from operators.types import Label

    b = person.detect(img[None])[0]
    v = b.score[b.label == Label.VEHICLE]
    return float(v.max()) if len(v) else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8, help="crowd frames timed per picture")
    ap.add_argument("--gate", type=float, default=None, help="vehicle score gate (default: YOLOX's vehicle_threshold)")
    args = ap.parse_args()
    models = ROOT.parent / "shared" / "models"  # what the Makefile exports
    if models.is_dir():
        os.environ.setdefault("VEILSTREAM_MODEL_DIR", str(models))
    import cv2

    from load_tests.crowd_source import FPS, IMAGES, SECONDS_PER_IMAGE, build_crowd_clip
    from load_tests.pass_cost import _video_frames
    from operators import evaldata
    from operators.detectors import litplate
    from operators.redactor import RedactionConfig, Redactor

    red = Redactor(RedactionConfig(classes=("face", "plate"), threads=1).validate())
    person, text = red.detectors["person"], red.detectors["text"]
    gate = person.vehicle_threshold if args.gate is None else args.gate
    person.vehicle_threshold = SCORE_FLOOR
    per = int(round(FPS * SECONDS_PER_IMAGE))
    clip = _video_frames(build_crowd_clip(ROOT / "out" / "load" / "sources"), IMAGES * per)
    step = max(1, per // max(1, args.frames))
    pictures = [np.stack(clip[k * per:(k + 1) * per:step][:args.frames]) for k in range(IMAGES)]
    native_side = litplate.NATIVE_SIDE
    base = text._scale_for(*pictures[0].shape[1:3])
    text.detect(pictures[0][:1])  # warm-up: both input shapes compiled before timing
    litplate.NATIVE_SIDE = None
    text.detect(pictures[0][:1])
    litplate.NATIVE_SIDE = native_side
    crowd = []
    for k, frames in enumerate(pictures):
        medians = [litplate.median_grey(f) for f in frames]
        cpu: dict[str, float] = {}
        for arm, side in (("native", native_side), ("own", None)):
            litplate.NATIVE_SIDE = side
            t0 = time.process_time()
            text.detect(frames)
            cpu[arm] = (time.process_time() - t0) / len(frames)
        litplate.NATIVE_SIDE = native_side
        v, s = litplate.value_image(frames[0])
        crowd.append({"picture": k, "median": int(np.median(medians)),
                      "scale": litplate.full_pass_scale(float(np.median(medians)), frames.shape[1:3], base),
                      "proposals": int(len(litplate.proposals(v, s))),
                      "best_vehicle": round(max(best_vehicle(person, f) for f in frames), 3),
                      "cpu_native": round(cpu["native"], 4), "cpu_own": round(cpu["own"], 4)})
    print(f"crowd source, {args.frames} frames a picture; text full-frame pass CPU-s per frame")
    print(f"{'picture':>7} {'median':>6} {'scale':>5} {'props':>5} {'vehicle':>7} {'native':>7} {'own':>7}")
    for r in crowd:
        print(f"{r['picture']:>7} {r['median']:>6} {r['scale']:>5.2f} {r['proposals']:>5} {r['best_vehicle']:>7.3f} "
              f"{r['cpu_native']:>7.4f} {r['cpu_own']:>7.4f}")
    sets = {}
    for name, loader in (("plates_traffic", evaldata.load_plates_traffic), ("plates_eu", evaldata.load_plates_eu)):
        dark = []
        for item in loader():
            img = cv2.imread(str(item.image_path), cv2.IMREAD_COLOR)
            if img is None or litplate.median_grey(img) >= litplate.NATIVE_MEDIAN:
                continue
            pb = item.plate_boxes
            dark.append({"image": item.image_path.name, "median": litplate.median_grey(img),
                         "best_vehicle": round(best_vehicle(person, img), 3),
                         "widest_plate_px": int((pb[:, 2] - pb[:, 0]).max()) if len(pb) else 0})
        lose = sorted((d for d in dark if d["best_vehicle"] < gate), key=lambda d: d["best_vehicle"])
        sets[name] = {"dark_images": len(dark), "without_vehicle_at_gate": lose}
        print(f"\n{name}: {len(dark)} images darker than {litplate.NATIVE_MEDIAN:g}; "
              f"{len(lose)} with no YOLOX vehicle >= {gate:g}:")
        for d in lose:
            print(f"  {d['image']:<36} median {d['median']:>3}  best vehicle {d['best_vehicle']:.3f}  "
                  f"widest plate {d['widest_plate_px']} px")
    print(json.dumps({"gate": gate, "crowd": crowd, "sets": sets}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
