"""A full-frame text pass at up to native resolution in dark frames, swept over whole eval sets
from the detection cache (docs/quality.md "Plates round 3", issue 20).

    VEILSTREAM_EVAL_DIR=../shared/eval .venv/bin/python load_tests/dark_native_sweep.py \
        [--sets plates_traffic,...] [--gates 70,85,100] [--side 1280]

Per set, the defaults (lit-plate pass on) are scored from the eval cache (``out/eval_cache``;
missing detections are computed and stored as ``veilstream eval`` does). Then every image whose
median grey level (:func:`operators.detectors.litplate.median_grey`) is under the largest gate
gets the full-frame text pass again with its longer side up to ``--side`` (the default pass
sees 640 px), at the cache's floor threshold; its boxes are added to the frames each gate lets
through. Prints one line per gate (leaks per class, masked area, frames searched, the extra
pass's CPU per image of the set) and writes ``out/dark_native_sweep/<set>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from load_tests.litsweep import cached_eval_set
    from operators import evalcache
    from operators.detectors import TextDetector, litplate
    from operators.evalrun import eval_config
    from operators.evaluation import DATASETS
    from operators.types import Boxes
    from operators.video import read_image
    from pipeline.cli import build_parser

    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default=",".join(DATASETS))
    ap.add_argument("--gates", default="70,85,100")
    ap.add_argument("--side", type=int, default=1280)
    a = ap.parse_args()
    gates = [float(g) for g in a.gates.split(",") if g]
    cfg = eval_config(build_parser().parse_args(["eval", "all"]))
    comps, th = evalcache.components(cfg), evalcache.thresholds(cfg)
    out_dir = ROOT / "out" / "dark_native_sweep"
    out_dir.mkdir(parents=True, exist_ok=True)
    det = None
    for name in a.sets.split(","):
        items, cache, cached = cached_eval_set(ROOT, name, comps)
        grey = np.zeros(len(items))
        per: dict[int, Boxes] = {}
        cpu: dict[int, float] = {}
        for i, item in enumerate(items):
            img = read_image(item.image_path)
            grey[i] = litplate.median_grey(img)
            if grey[i] >= max(gates) or "text_full" not in cached:
                continue
            if det is None:
                det = TextDetector(cfg.text_model, threshold=evalcache.FLOORS["text_full"], model_dir=cfg.model_dir,
                                   max_side=a.side, min_side=cfg.text_min_side, max_upscale=cfg.text_max_upscale)
            t0 = time.process_time()
            per[i] = det.detect(img[None])[0]
            cpu[i] = time.process_time() - t0
        rows: dict[str, Any] = {}
        for gate in (None, *gates):
            dark = [i for i in per if gate is not None and grey[i] < gate]
            extra = [per[i] if i in dark else Boxes.empty() for i in range(len(items))]
            parts = dict(cached, text_native=evalcache.Cached(extra, 0.0))
            rep = evalcache.score_setting(name, items, cache, parts, cfg, dict(th, text_native=th["text_full"]))
            key = "defaults" if gate is None else f"native <= {a.side} px where median grey < {gate:g}"
            rows[key] = {"classes": {k.cls: [k.targets, k.leaked] for k in rep.classes},
                         "masked_area": rep.masked_area_share, "by_source": rep.masked_area_by_source,
                         "frames_searched": len(dark), "images": len(items),
                         "cpu_s_per_image": sum(cpu[i] for i in dark) / len(items), "leaks": rep.leaks}
            print(f"{name:<16} {key:<44} " + " ".join(f"{k.cls} {k.leaked}/{k.targets}" for k in rep.classes)
                  + f"  area {rep.masked_area_share:.2%}  searched {len(dark)}/{len(items)}"
                  f"  CPU {1000 * rows[key]['cpu_s_per_image']:.1f} ms/image", flush=True)
        (out_dir / f"{name}.json").write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
