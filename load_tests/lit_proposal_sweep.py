"""The lit-plate pass's proposals and windows, swept over whole eval sets from the detection
cache (docs/quality.md "Plates round 3", issue 20).

    VEILSTREAM_EVAL_DIR=../shared/eval .venv/bin/python load_tests/lit_proposal_sweep.py \
        [--sets plates_traffic,plates_eu,...] [--variants base,ctx,...] [--gates 70,85,100]

Per set, the defaults with the pass off are scored from the eval cache (``out/eval_cache``;
missing detections are computed and stored as ``veilstream eval`` does). Then, per variant
(a set of :mod:`operators.detectors.litplate` constants, ``VARIANTS`` below), the pass's own
boxes are searched once per image whose median grey level is under the largest gate, against
the full-frame boxes the default threshold keeps, and added to the frames each gate lets
through; a ramp ``LO-HI`` searches frames between the two levels again with the window budget of
:func:`operators.detectors.litplate.window_budget`. Prints one line per variant and gate (leaks per class, masked area, frames searched,
the pass's CPU per image of the set) and writes ``out/lit_proposal_sweep/<set>.json``.

The variants change the module's constants in this process only; what the defaults are is
``litplate``'s own values (``base`` here is whatever they are when the script runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "ctx": {"BESIDE": 1.2, "ABOVE": 2.5},
    "c15": {"CONTRAST": 15},
    "f25": {"MIN_FILL": 0.25},
    "c15_f25": {"CONTRAST": 15, "MIN_FILL": 0.25},
    "t24": {"TARGET_H": 24.0},
    "t48": {"TARGET_H": 48.0},
}


def main() -> int:
    import cv2

    from load_tests.litsweep import LitSearch, cached_eval_set
    from operators import evalcache
    from operators.detectors import litplate
    from operators.evalrun import eval_config
    from operators.evaluation import DATASETS
    from operators.types import Boxes
    from operators.video import read_image
    from pipeline.cli import build_parser

    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default=",".join(DATASETS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--gates", default="70,85,100", help="plain gates: median grey level below")
    ap.add_argument("--ramps", default="", help="LO-HI,...: window budgets falling from LO to HI "
                    "(litplate.window_budget)")
    a = ap.parse_args()
    gates = [float(g) for g in a.gates.split(",") if g]
    ramps = [tuple(float(x) for x in r.split("-")) for r in a.ramps.split(",") if r]
    variants = a.variants.split(",")
    defaults = {k: getattr(litplate, k) for v in VARIANTS.values() for k in v}
    cfg = replace(eval_config(build_parser().parse_args(["eval", "all"])), plate_lit_pass=False)
    comps, th = evalcache.components(cfg), evalcache.thresholds(cfg)
    out_dir = ROOT / "out" / "lit_proposal_sweep"
    out_dir.mkdir(parents=True, exist_ok=True)
    search = LitSearch(cfg)
    for name in a.sets.split(","):
        items, cache, cached = cached_eval_set(ROOT, name, comps)
        imgs: dict[int, np.ndarray] = {}
        grey = np.zeros(len(items))
        for i, item in enumerate(items):
            img = read_image(item.image_path)
            grey[i] = float(np.median(cv2.cvtColor(img[::4, ::4], cv2.COLOR_BGR2GRAY)))
            if grey[i] < max([*gates, *(hi for _, hi in ramps)]):
                imgs[i] = img
        rows: dict[str, Any] = {}

        def score(key: str, parts: dict[str, Any], searched: int, cpu_per_image: float,
                  name: str = name, items: Any = items, cache: Any = cache, rows: dict[str, Any] = rows) -> None:
            rep = evalcache.score_setting(name, items, cache, parts, cfg, dict(th, text_lit=th["text_full"]))
            rows[key] = {"classes": {k.cls: [k.targets, k.leaked] for k in rep.classes},
                         "masked_area": rep.masked_area_share, "by_source": rep.masked_area_by_source,
                         "frames_searched": searched, "images": len(items), "lit_cpu_s_per_image": cpu_per_image,
                         "leaks": rep.leaks}
            print(f"{name:<16} {key:<28} " + " ".join(f"{k.cls} {k.leaked}/{k.targets}" for k in rep.classes)
                  + f"  area {rep.masked_area_share:.2%}  searched {searched}/{len(items)}"
                  f"  lit CPU {1000 * cpu_per_image:.1f} ms/image", flush=True)

        score("off", dict(cached), 0, 0.0)
        for var in variants:
            for k, v in {**defaults, **VARIANTS[var]}.items():
                setattr(litplate, k, v)
            per: dict[int, Boxes] = {}
            cpu: dict[int, float] = {}
            for i, img in imgs.items():
                per[i], cpu[i] = search(img, cached["text_full"].per_image[i], dark_median=256)
            for gate in gates:
                lit = [per[i] if i in per and grey[i] < gate else Boxes.empty() for i in range(len(items))]
                dark = [i for i in per if grey[i] < gate]
                score(f"{var} gate<{gate:g}", dict(cached, text_lit=evalcache.Cached(lit, 0.0)), len(dark),
                      sum(cpu[i] for i in dark) / len(items))
            for lo, hi in ramps:
                # the budget falls with the grey level between lo and hi: search again with it
                lit = [Boxes.empty()] * len(items)
                n, spent = 0, 0.0
                for i, img in imgs.items():
                    budget = litplate.window_budget(grey[i], lo, hi)
                    if budget <= 0:
                        continue
                    n += 1
                    if budget >= litplate.MAX_WINDOWS:
                        lit[i], spent = per[i], spent + cpu[i]
                        continue
                    lit[i], took = search(img, cached["text_full"].per_image[i], budget=budget)
                    spent += took
                score(f"{var} ramp {lo:g}-{hi:g}", dict(cached, text_lit=evalcache.Cached(lit, 0.0)), n,
                      spent / len(items))
        for k, v in defaults.items():
            setattr(litplate, k, v)
        (out_dir / f"{name}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
