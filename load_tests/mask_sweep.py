"""Whole-set sweep of mask settings, faces and plates masked together, on cached detections
(docs/quality.md "Over-masking round 3").

    .venv/bin/python load_tests/mask_sweep.py --grid GRID.json [--cache-dir out/eval_cache]
        [--set FIELD=VALUE ...] [--json-out sweep.json]

``veilstream eval --sweep`` sweeps each class alone, so its x axis is what one class costs;
what a plate rule saves on the face sets (banners and shirts in the WIDER crowds, whose text
boxes also cover faces by chance) shows only with both classes masked. This runs the default
config (with ``--set`` overrides, e.g. ``plate_lit_pass=false`` to read detections cached
before that pass) once per grid point over every set and prints, per set, leaked targets
(faces_wider_hard's faces >= 20 px in brackets) and masked area. ``GRID.json`` is a list of
RedactionConfig overrides, e.g. ``[{}, {"plate_vehicle_reach": null}, {"loose_text_padding": 0.1}]``;
a point may also set ``"_ellipse_min_padding"`` to score face ellipses below the size that
covers the detection box (an experiment: the product never masks less than that).
Detections come from the eval cache (missing ones are computed and stored first, as
``veilstream eval`` does).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

SETS = ("faces_dlib", "coco_val2017", "plates_eu", "plates_traffic", "faces_wider_hard")


def main(argv: list[str] | None = None) -> int:
    from operators import anonymize, evalcache
    from operators.evaldata import default_eval_dir
    from operators.evalrun import _parse_value
    from operators.evaluation import load_items
    from operators.redactor import RedactionConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grid", type=Path, required=True, help="JSON list of RedactionConfig overrides")
    p.add_argument("--cache-dir", type=Path, default=Path("out/eval_cache"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    base: dict[str, Any] = {"classes": ("face", "plate"), "detect_every": 1}
    for item in args.overrides:
        key, _, value = str(item).partition("=")
        base[key.strip()] = _parse_value(value)
    cfg = RedactionConfig(**base).validate()
    grid = json.loads(args.grid.read_text())
    comps, th = evalcache.components(cfg), evalcache.thresholds(cfg)
    data = {}
    for ds in SETS:
        items = load_items(ds, default_eval_dir())
        cache = evalcache.DetectionCache(args.cache_dir, ds, items, progress=sys.stderr.isatty())
        data[ds] = (items, cache, cache.get(comps))
    floor = anonymize.ELLIPSE_MIN_PADDING
    out = []
    print("setting | " + " | ".join(SETS))
    for point in grid:
        kw = dict(point)
        anonymize.ELLIPSE_MIN_PADDING = float(kw.pop("_ellipse_min_padding", floor))
        try:
            c = replace(cfg, **kw).validate()
            row: dict[str, Any] = {}
            for ds in SETS:
                items, cache, cached = data[ds]
                rep = evalcache.score_setting(ds, items, cache, cached, c, th)
                row[ds] = {"classes": {x.cls: [x.leaked, x.targets] for x in rep.classes},
                           "masked_area": round(rep.masked_area_share, 4),
                           "by_source": {k: round(v, 4) for k, v in rep.masked_area_by_source.items()}}
        finally:
            anonymize.ELLIPSE_MIN_PADDING = floor
        cells = []
        for ds in SETS:
            cl = row[ds]["classes"]
            main_cls = next(iter(cl.values()))
            ge20 = f" ({cl['face_ge20'][0]})" if "face_ge20" in cl else ""
            cells.append(f"{main_cls[0]}{ge20}, {row[ds]['masked_area']:.1%}")
        print(json.dumps(point), "|", " | ".join(cells), flush=True)
        out.append({"setting": point, "result": row})
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
