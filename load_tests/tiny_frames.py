"""What the full-frame text pass still finds on tiny camera frames (issue "Throughput", item 2:
"a text pass on a 176x144 frame upscaled to 960 px is pure cost").

    .venv/bin/python load_tests/tiny_frames.py [--sides 176,320] [--limit 0]

Every image of the plate sets (``plates_eu``, ``plates_traffic``; ``--limit`` spreads a subset)
downscaled so that its longer side is each of ``--sides`` px (what a small camera of the same
scene sends), through the default plate policy's detectors (YOLOX vehicles, the full-frame text
pass at the default sizing, the vehicle-crop pass), scored like ``veilstream eval`` (labels
mapped by the same scale): leaked plates with both text passes against the vehicle-crop pass
alone (``RedactionConfig.text_full_min_side``), and the process CPU of the full-frame pass.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from small_frames import small_frame, use_shared_models  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sides", default="176,320")
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    use_shared_models()
    from operators.evaldata import default_eval_dir
    from operators.evaluation import Scorer, load_items, subset
    from operators.redactor import RedactionConfig, Redactor
    from operators.types import Boxes, Label

    red = Redactor(RedactionConfig(classes=("plate",), threads=1).validate())
    text, person = red.detectors["text"], red.detectors["person"]
    rows = []
    for side in (int(s) for s in args.sides.split(",")):
        for ds in ("plates_eu", "plates_traffic"):
            items = subset(load_items(ds, default_eval_dir()), args.limit or None)
            both, crops_only = Scorer(ds), Scorer(ds)
            cpu_full = cpu_crops = 0.0
            for item in items:
                frames, aff = small_frame(item.image_path, side)
                pri = person.detect(frames)
                t0 = time.process_time()
                full = text.detect(frames)
                cpu_full += time.process_time() - t0
                t0 = time.process_time()
                crops = text.detect_crops(frames, [pri[0].select(pri[0].label == Label.VEHICLE)])
                cpu_crops += time.process_time() - t0
                hw = frames.shape[1:3]
                for scorer, parts in ((both, [pri[0], full[0], crops[0]]), (crops_only, [pri[0], crops[0]])):
                    plan = red.plan_from([Boxes.concat(parts)], [], hw)
                    scorer.add(item, red.coverage(hw, plan[0]), affine=aff, frame=item.image_path.name)
            rb = {c.cls: c for c in both.report().classes}["plate"]
            rc = {c.cls: c for c in crops_only.report().classes}["plate"]
            row = {"side": side, "dataset": ds, "images": len(items), "targets": rb.targets,
                   "leaked_both_passes": rb.leaked, "leaked_crops_only": rc.leaked,
                   "masked_area_both": round(both.report().masked_area_share, 4),
                   "masked_area_crops_only": round(crops_only.report().masked_area_share, 4),
                   "full_pass_cpu_s_per_frame": round(cpu_full / len(items), 4),
                   "crop_pass_cpu_s_per_frame": round(cpu_crops / len(items), 4)}
            rows.append(row)
            print(f"longer side {side:>4} {ds:<15} leaked {rb.leaked:>3} of {rb.targets} with both passes, "
                  f"{rc.leaked:>3} with the crop pass alone; masked area {row['masked_area_both']:.1%} / "
                  f"{row['masked_area_crops_only']:.1%}; full pass {row['full_pass_cpu_s_per_frame']} CPU-s/frame, "
                  f"crops {row['crop_pass_cpu_s_per_frame']}", flush=True)
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
