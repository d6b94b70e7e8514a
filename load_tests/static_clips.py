"""Plate carry on static cameras: per-frame plate leaks and vehicle-crop CPU, carry against
no carry (issue "Throughput", item 2: "a parked car's plate found in the last detected frame
can be carried").

    .venv/bin/python load_tests/static_clips.py [--limit 40] [--frames 8] [--carry 0,8]

Each of ``--limit`` ``plates_traffic`` images (spread over the set, as ``veilstream eval
--limit`` picks them) becomes a static-camera clip: ``--frames`` copies with sensor noise
(sigma 2 grey levels, a new draw per frame), H.264 round trip (libx264 CRF 23, as the video
eval), all frames detected in one call (what a detector call sees of a parked car at any
``detect_every``). YOLOX and the full-frame text pass run once per clip; the vehicle-crop pass
runs once per ``--carry`` setting (``TextDetector.crop_carry``; 0 = the lend-once pass before),
then the default plate policy's plan (fallback included) is scored per frame like the video
eval. Prints per setting: leaked frame-plates, crops searched / carried / reused, process CPU
of the crop pass; then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--carry", default="0,8", help="crop_carry settings (first = baseline)")
    args = ap.parse_args()
    models = ROOT.parent / "shared" / "models"
    if models.is_dir():
        os.environ.setdefault("VEILSTREAM_MODEL_DIR", str(models))
    from operators.evaldata import default_eval_dir
    from operators.evaluation import Scorer, load_items, subset
    from operators.evalvideo import h264_roundtrip
    from operators.redactor import RedactionConfig, Redactor
    from operators.types import Boxes, Label
    from operators.video import read_image

    carries = [int(x) for x in args.carry.split(",")]
    red = Redactor(RedactionConfig(classes=("plate",), detect_every=1, threads=1).validate())
    text, person = red.detectors["text"], red.detectors["person"]
    scorers = {c: Scorer("plates_traffic") for c in carries}
    stats: dict[int, dict[str, float]] = {c: {"crops": 0, "searched": 0, "carried": 0, "reused": 0, "cpu_s": 0.0}
                                          for c in carries}
    rng = np.random.default_rng(0)
    items = subset(load_items("plates_traffic", default_eval_dir()), args.limit)
    with tempfile.TemporaryDirectory(prefix="veil-static-") as td:
        for n, item in enumerate(items):
            img = read_image(item.image_path)
            h, w = img.shape[:2]
            img = img[:h - h % 2, :w - w % 2]
            noisy = np.stack([np.clip(img.astype(np.float32) + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)
                              for _ in range(args.frames)])
            frames = h264_roundtrip(noisy, Path(td))
            pri = person.detect(frames)
            full = text.detect(frames)
            veh = [b.select(b.label == Label.VEHICLE) for b in pri]
            hw = (int(frames.shape[1]), int(frames.shape[2]))
            for c in carries:
                text.crop_carry = c
                t0 = time.process_time()
                crops = text.detect_crops(frames, veh)
                stats[c]["cpu_s"] += time.process_time() - t0
                for k, v in text.last_crop_stats.items():
                    stats[c][k] += v
                raw: list[Boxes | None] = [Boxes.concat([p, f, q]) for p, f, q in zip(pri, full, crops)]
                for i, b in enumerate(red.plan_from(raw, [], hw)):
                    scorers[c].add(item, red.coverage(hw, b), frame=f"{item.image_path.name}#{i}")
            print(f"\rclip {n + 1}/{len(items)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    rows = []
    base = stats[carries[0]]["cpu_s"]
    for c in carries:
        rep = {x.cls: x for x in scorers[c].report().classes}
        s = stats[c]
        row = {"crop_carry": c, "leaked": rep["plate"].leaked, "target_frames": rep["plate"].targets,
               "leaked_ro": rep["plate_ro"].leaked, "leaked_kg": rep["plate_kg"].leaked,
               **{k: int(v) for k, v in s.items() if k != "cpu_s"}, "crop_cpu_s": round(s["cpu_s"], 2),
               "crop_cpu_ratio": round(s["cpu_s"] / base, 3) if base else None,
               "masked_area": round(scorers[c].report().masked_area_share, 4)}
        rows.append(row)
        print(f"crop_carry {c}: leaked {row['leaked']} of {row['target_frames']} frame-plates "
              f"(ro {row['leaked_ro']}, kg {row['leaked_kg']}), crops {row['crops']}: searched {row['searched']}, "
              f"carried {row['carried']}, reused {row['reused']}; crop pass {row['crop_cpu_s']} CPU-s "
              f"(x{row['crop_cpu_ratio']}), masked area {row['masked_area']:.2%}")
    print(json.dumps({"limit": args.limit, "frames": args.frames, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
