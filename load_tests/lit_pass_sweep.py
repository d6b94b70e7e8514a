"""The lit-plate pass's darkness gate, swept over whole eval sets from the detection cache
(docs/quality.md "Plates round 3").

    VEILSTREAM_EVAL_DIR=../shared/eval .venv/bin/python load_tests/lit_pass_sweep.py [SETS]

Per set (default: all five), the defaults with the pass off are scored from the eval cache
(``out/eval_cache``; missing detections are computed and stored as ``veilstream eval`` does);
the pass's own boxes are searched once per image with the gate open (images whose median grey
level is >= 160 are skipped: no gate of the sweep reaches them) against the full-frame boxes
the default threshold keeps, stored under ``out/lit_sweep/``, and added to the frames each gate
lets through (median grey level below it, as :func:`operators.detectors.litplate.is_dark`).
Prints one line per gate (leaks per class, masked area, frames searched, the pass's CPU per
image of the set) and writes ``out/lit_sweep/<set>.json``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GATES = (30, 40, 50, 60, 70, 80, 100, 120, 140, 160)


def main() -> int:
    import cv2

    from load_tests.litsweep import LitSearch, cached_eval_set
    from operators import evalcache
    from operators.evalrun import eval_config
    from operators.evaluation import DATASETS
    from operators.types import Boxes
    from operators.video import read_image
    from pipeline.cli import build_parser

    sets = sys.argv[1].split(",") if len(sys.argv) > 1 else list(DATASETS)
    cfg = replace(eval_config(build_parser().parse_args(["eval", "all"])), plate_lit_pass=False)
    comps, th = evalcache.components(cfg), evalcache.thresholds(cfg)
    out_dir = ROOT / "out" / "lit_sweep"
    out_dir.mkdir(parents=True, exist_ok=True)
    search = LitSearch(cfg)
    for name in sets:
        items, cache, cached = cached_eval_set(ROOT, name, comps)
        per: list[Boxes] = []
        grey: list[float] = []
        cpu: list[float] = []
        for i, item in enumerate(items):
            img = read_image(item.image_path)
            grey.append(float(np.median(cv2.cvtColor(img[::4, ::4], cv2.COLOR_BGR2GRAY))))
            if grey[-1] >= max(GATES) or "text_full" not in cached:
                per.append(Boxes.empty())
                cpu.append(0.0)
                continue
            boxes, spent = search(img, cached["text_full"].per_image[i], dark_median=256)
            per.append(boxes)
            cpu.append(spent)
        g, c = np.asarray(grey), np.asarray(cpu)
        rows = {}
        for gate in (None, *GATES):
            parts = dict(cached)
            if gate is not None:
                parts["text_lit"] = evalcache.Cached([b if g[i] < gate else Boxes.empty() for i, b in enumerate(per)], 0.0)
            rep = evalcache.score_setting(name, items, cache, parts, cfg, dict(th, text_lit=th["text_full"]))
            dark = g < gate if gate is not None else np.zeros(len(g), bool)
            key = "off" if gate is None else f"median grey < {gate}"
            rows[key] = {"classes": {k.cls: [k.targets, k.leaked] for k in rep.classes},
                         "masked_area": rep.masked_area_share, "by_source": rep.masked_area_by_source,
                         "frames_searched": int(dark.sum()), "images": len(items),
                         "lit_cpu_s_per_image": float(c[dark].sum() / len(items)),
                         "leaks": rep.leaks}
            print(f"{name:<16} {key:<18} " + " ".join(f"{k.cls} {k.leaked}/{k.targets}" for k in rep.classes)
                  + f"  area {rep.masked_area_share:.2%}  searched {int(dark.sum())}/{len(items)}"
                  f"  lit CPU {1000 * rows[key]['lit_cpu_s_per_image']:.1f} ms/image", flush=True)
        (out_dir / f"{name}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
