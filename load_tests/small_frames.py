"""Quality and detection cost of small camera frames, per input sizing (issue "Throughput",
item 3: "detection cost must scale with the pixels a camera sends").

    .venv/bin/python load_tests/small_frames.py [--sides 320] [--limit 0] [--sets all]

Every image of the eval sets (``--limit`` spreads a subset per set) downscaled so that its
longer side is each of ``--sides`` px (what a snapshot camera of the same scene sends; labels
mapped by the same scale), through the default face + plate policy's detectors, scored like
``veilstream eval``. Each detector pass runs once per image and size variant (faces at native
size, as they always run on frames this small; YOLOX scaled up by ``person_max_upscale`` 2.0 or
not at all; the full-frame text pass upscaled by ``text_max_upscale`` 2.5, at native size, or
not run; the vehicle-crop pass on the vehicles of the YOLOX variant), and each sizing in
:data:`SIZINGS` is scored from the passes it would run. The CPU column is the process CPU of
those passes (one thread; every thread counted, never wall: the machine is shared); eval images
come in many shapes, and each new input shape costs a backend its shape compile, so read it as
a rough ranking only: ``load_tests/detect_cost_by_size.py`` times a fixed-size camera.

``--crop-budgets 4,2`` adds, per value, the default sizing with the vehicle-crop pass under
``text_crop_budget`` of that value (docs/performance.md "Vehicle-crop pixel budget").

Repeatable: OpenVINO sessions (the full-frame text pass) compile each recurring input shape's
static model in the calling thread (``--compiles sync``, the default, as ``veilstream eval``
does), so whether a call is served by the dynamic or the static compiled model, whose outputs
differ in the last bits (bf16: more), depends on the call count only. With ``async`` (the
process stage's behaviour) it depends on when a background compile finished (0.2-3 s on a loaded
box before compiled models were cached on disk); ``dynamic`` never compiles a static model (at
320 px faces_wider_hard's caps row leaks 546 so, 547 with static compiles: docs/quality.md
"Small cameras: which face detectors earn their CPU").

Prints one line per (size, set, sizing) and one JSON line. Never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS = ("faces_dlib", "coco_val2017", "plates_eu", "plates_traffic", "faces_wider_hard")

SIZINGS: dict[str, tuple[float, float | None]] = {
    "before (yolox x2, text x2.5)": (2.0, 2.5),
    "yolox x1, text x1": (1.0, 1.0),
    "yolox x1, crops only": (1.0, None),
    "yolox x2, crops only": (2.0, None),
    "yolox x2, text x1": (2.0, 1.0),
}
"""Sizing name -> (YOLOX upscale, full-frame text upscale or ``None`` = no full-frame pass)."""


WIDTH_EDGES_PX = (8, 16, 32)
"""Leaks are also counted by their width in the small frame's own pixels (a face or plate a few
pixels wide has nothing to recognise or read)."""


def use_shared_models() -> None:
    """``$VEILSTREAM_MODEL_DIR`` defaults to ``../shared/models`` when that folder exists."""
    models = ROOT.parent / "shared" / "models"
    if models.is_dir():
        os.environ.setdefault("VEILSTREAM_MODEL_DIR", str(models))


def small_frame(image_path: Path, side: int) -> tuple[Any, tuple[float, float, float]]:
    """The eval image at ``image_path`` downscaled (area interpolation) so that its longer side is
    ``side`` px, as ``(1, H, W, 3)`` frames, and the affine the scorer maps its labels by (the
    x scale after rounding)."""
    import cv2

    from operators.video import read_image

    img = read_image(image_path)
    h, w = img.shape[:2]
    s = side / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return small[None], (small.shape[1] / w, 0.0, 0.0)


def by_width(leaks: list[dict[str, Any]]) -> dict[str, int]:
    """Leaked face and plate boxes by width in the scored (small) frame: ``<8``, ``8-16``,
    ``16-32``, ``>=32`` px; COCO's keypoint faces have no box (``points``)."""
    out: dict[str, int] = {}
    for leak in leaks:
        if "box" not in leak:
            key = "points"
        else:
            w = float(leak["box"][2]) - float(leak["box"][0])
            lo = [e for e in WIDTH_EDGES_PX if w >= e]
            if not lo:
                key = f"<{WIDTH_EDGES_PX[0]}"
            elif lo[-1] == WIDTH_EDGES_PX[-1]:
                key = f">={lo[-1]}"
            else:
                key = f"{lo[-1]}-{WIDTH_EDGES_PX[WIDTH_EDGES_PX.index(lo[-1]) + 1]}"
        out[key] = out.get(key, 0) + 1
    return out


def set_sizing(person: Any, text: Any, *, person_upscale: float | None = None,
               text_upscale: float | None = None) -> None:
    """Make the YOLOX detector ``person`` upscale small frames by ``person_upscale`` and the text
    detector ``text``'s full-frame pass by ``text_upscale`` (each left as it is when ``None``).

    Both detectors' ``native_max_side`` (``small_frame_side``, 320 by default) is lifted: with it,
    a frame of <= 320 px runs at its own size whatever ``max_upscale`` says, and until session 12
    every sizing of this script with a full-frame pass scored the default sizing's passes again
    (the "before" row was not the caps)."""
    person.native_max_side = None
    text.native_max_side = None
    if person_upscale is not None:
        person.max_upscale = float(person_upscale)
    if text_upscale is not None:
        text.max_upscale = float(text_upscale)


COMPILES = ("sync", "async", "dynamic")
"""``--compiles`` values: how OpenVINO sessions get their static-shape models (see above)."""


def set_compiles(mode: str) -> None:
    """Set how OpenVINO sessions built from now on compile static shapes (``COMPILES``)."""
    from operators import ovsession

    if mode not in COMPILES:
        raise SystemExit(f"--compiles: expected one of {', '.join(COMPILES)}, got {mode!r}")
    ovsession.set_synchronous_compiles(mode == "sync")
    if mode == "dynamic":
        ovsession.STATIC_SHAPES = 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sides", default="320")
    ap.add_argument("--limit", type=int, default=0, help="images per set (0: all)")
    ap.add_argument("--sets", default="all")
    ap.add_argument("--sizings", default="", help="'|'-separated subset of the sizing names (default all)")
    ap.add_argument("--crop-budgets", default="",
                    help="comma-separated text_crop_budget values: each adds a sizing 'yolox x1, text x1, crop "
                         "budget B' (the default sizing with the vehicle-crop pass under that budget)")
    ap.add_argument("--compiles", default="sync", choices=COMPILES,
                    help="OpenVINO static-shape compiles: sync (default, repeatable), async (the stage's), dynamic")
    args = ap.parse_args()
    use_shared_models()
    set_compiles(args.compiles)
    from operators.evaldata import default_eval_dir
    from operators.evaluation import Scorer, load_items, subset
    from operators.redactor import RedactionConfig, Redactor
    from operators.types import Boxes, Label

    red = Redactor(RedactionConfig(classes=("face", "plate"), threads=1).validate())
    face = red.detectors["face"]
    person: Any = red.detectors["person"]
    text: Any = red.detectors["text"]
    sets = SETS if args.sets == "all" else tuple(args.sets.split(","))
    sizings = {k: v for k, v in SIZINGS.items() if not args.sizings or k in args.sizings.split("|")}
    budgets = {f"yolox x1, text x1, crop budget {b}": float(b) for b in filter(None, args.crop_budgets.split(","))}
    rows: list[dict[str, Any]] = []

    def timed(fn: Any, *a: Any) -> tuple[Any, float]:
        t0 = time.process_time()
        out = fn(*a)
        return out, time.process_time() - t0

    for side in (int(s) for s in args.sides.split(",")):
        for ds in sets:
            items = subset(load_items(ds, default_eval_dir()), args.limit or None)
            scorers = {k: Scorer(ds) for k in [*sizings, *budgets]}
            cpu = {k: 0.0 for k in scorers}
            for item in items:
                frames, aff = small_frame(item.image_path, side)
                hw = frames.shape[1:3]
                faces, c_face = timed(face.detect, frames)
                pri: dict[float, tuple[Boxes, float]] = {}
                crops: dict[float, tuple[Boxes, float]] = {}
                for up in sorted({u for u, _ in sizings.values()}):
                    set_sizing(person, text, person_upscale=up)
                    (p,), c = timed(person.detect, frames)
                    pri[up] = (p, c)
                    (cr,), c2 = timed(text.detect_crops, frames, [p.select(p.label == Label.VEHICLE)])
                    crops[up] = (cr, c2)
                budgeted: dict[str, tuple[Boxes, float]] = {}
                if budgets:
                    set_sizing(person, text, person_upscale=1.0)
                    (p1,), c = timed(person.detect, frames)
                    pri[1.0] = pri.get(1.0, (p1, c))
                    for k, b in budgets.items():
                        text.crop_budget = b
                        (cr,), c2 = timed(text.detect_crops, frames, [p1.select(p1.label == Label.VEHICLE)])
                        budgeted[k] = (cr, c2)
                    text.crop_budget = None
                full: dict[float, tuple[Boxes, float]] = {}
                for full_up in sorted({t for _, t in sizings.values() if t is not None} | ({1.0} if budgets else set())):
                    set_sizing(person, text, text_upscale=full_up)
                    (f,), c = timed(text.detect, frames)
                    full[full_up] = (f, c)
                for k, (up, tu) in sizings.items():
                    parts = [faces[0], pri[up][0], crops[up][0]] + ([full[tu][0]] if tu is not None else [])
                    cpu[k] += c_face + pri[up][1] + crops[up][1] + (full[tu][1] if tu is not None else 0.0)
                    plan = red.plan_from([Boxes.concat(parts)], [], hw, frames=frames)
                    scorers[k].add(item, red.coverage(hw, plan[0]), affine=aff, frame=item.image_path.name)
                for k, (cr, c2) in budgeted.items():
                    parts = [faces[0], pri[1.0][0], cr, full[1.0][0]]
                    cpu[k] += c_face + pri[1.0][1] + c2 + full[1.0][1]
                    plan = red.plan_from([Boxes.concat(parts)], [], hw, frames=frames)
                    scorers[k].add(item, red.coverage(hw, plan[0]), affine=aff, frame=item.image_path.name)
            for k, sc in scorers.items():
                rep = sc.report()
                main_cls = rep.classes[0]
                row = {"side": side, "dataset": ds, "sizing": k, "images": len(items), "class": main_cls.cls,
                       "targets": main_cls.targets, "leaked": main_cls.leaked,
                       "by_class": {c.cls: [c.leaked, c.targets] for c in rep.classes if c.targets},
                       "leaked_by_width_px": by_width(rep.leaks),
                       "masked_area": round(rep.masked_area_share, 4),
                       "detect_cpu_s_per_frame": round(cpu[k] / max(1, len(items)), 4)}
                rows.append(row)
                print(f"longer side {side:>4} {ds:<17} {k:<30} leaked {main_cls.leaked:>4} of {main_cls.targets:<5} "
                      f"masked {row['masked_area']:.1%}  detect {row['detect_cpu_s_per_frame']:.4f} CPU-s/frame  "
                      f"leaked by width in the small frame {row['leaked_by_width_px']}", flush=True)
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
