"""Which face detectors earn their CPU on snapshot-size frames (issue 19, session 12).

    .venv/bin/python load_tests/small_faces.py [--side 320] [--limit 0] [--sets all] [--rounds 5]

Quality: every image of the eval sets downscaled so that its longer side is ``--side`` px (as
``load_tests/small_frames.py`` does: what a snapshot camera of the same scene sends, labels mapped
by the same scale) through the default face + plate policy at its small-frame sizing (YOLOX and
the full-frame text pass at the frame's own size, the vehicle-crop pass), with each variant's
face boxes in place of the face detectors', planned and scored like ``veilstream eval``. Per
set and variant: leaks of the set's class (faces; plates on the plate sets, where no face is
labelled), faces leaked by width in the small frame (``<8``, ``8-16``, ``>=16`` px; COCO's
keypoint faces by their head size scaled to the small frame), the labelled faces per width
bucket, and the masked area. Each face detector runs once per image (the variants are unions
of their boxes), and the passes other than the faces once per image for all variants.

Variants (:data:`VARIANTS`): the union in fp32 (CenterFace 0.05 and YuNet 0.35, the union's
thresholds: every frame's default before session 12, larger frames' still), each of the two
alone at the same threshold (its boxes are then a subset of the
union's: what it leaks more is what only the other one finds), YuNet alone at 0.25, CenterFace
on OpenVINO in bf16 (``precision: bf16``: ``centerface_bf16`` runs there) alone, with YuNet in
fp32 (the default on these frames since session 12: ``small_frame_centerface_precision``) or also
in bf16, and CenterFace on a coarser copy of the frame (its longer side 240 or 160 px: YuNet
stays the small-face pass at native size).

Cost: each variant's face detection on a fixed 320x180 camera (16 frames of ``make load``'s
snapshot source ``out/load/sources/vtest-320x180-0.5fps.mp4`` when it was built, and the 320x180
street of ``pass_cost.py``, bikes resized), one call per camera as the process stage makes it,
in process CPU seconds per frame (every thread; never wall: the machine is shared), variants
alternated round by round in this one process after a warm-up, median round kept; and the other
passes of the default policy (YOLOX, full-frame text, vehicle crops) on the same frames, so that
a variant's share of the whole detection can be read.

Repeatable: OpenVINO static-shape compiles run in the calling thread (``small_frames.set_compiles``,
``--compiles sync``), and every detector runs on one thread; two runs print the same leak and
area figures (only the CPU columns move). Prints one line per (set, variant), the cost table and
one JSON line. Never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "load_tests"))

from small_frames import COMPILES, SETS, set_compiles, small_frame, use_shared_models  # noqa: E402

COMPONENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "cf": ("centerface", {}),
    "yn": ("yunet", {}),
    "yn_0.25": ("yunet", {"threshold": 0.25}),
    "cf_bf16": ("centerface", {"precision": "bf16"}),
    "yn_bf16": ("yunet", {"precision": "bf16"}),
    "cf_240": ("centerface", {"max_side": 240}),
    "cf_160": ("centerface", {"max_side": 160}),
}
"""Face detectors the variants unite: (kind, arguments over the default union's component).
``cf`` and ``yn`` are the default Redactor's own union components (CenterFace at 0.05 on a copy
of at most ``face_max_side`` 640 px, YuNet at 0.35 up to 1280 px, ``precision`` int8, which
runs both in fp32 on onnxruntime)."""

VARIANTS: dict[str, tuple[str, ...]] = {
    "both fp32": ("cf", "yn"),
    "centerface only": ("cf",),
    "yunet only": ("yn",),
    "yunet only 0.25": ("yn_0.25",),
    "centerface bf16 only": ("cf_bf16",),
    "centerface bf16 + yunet (default)": ("cf_bf16", "yn"),
    "both bf16": ("cf_bf16", "yn_bf16"),
    "centerface 240px + yunet": ("cf_240", "yn"),
    "centerface 160px + yunet": ("cf_160", "yn"),
}
"""Variant name -> the :data:`COMPONENTS` whose boxes it masks (the first is the baseline: the
``vs first`` columns count the faces a variant leaks that it does not, and the reverse)."""

PERSONS: dict[str, dict[str, Any]] = {
    "yolox": {},
    "yolox_bf16": {"providers": "openvino", "precision": "bf16"},
    "yolox_ov_fp32": {"providers": "openvino", "precision": "fp32"},
}
"""YOLOX variants (``--persons``): the default Redactor's own person/vehicle detector (``yolox``:
``providers: auto`` runs it fp32 on onnxruntime, YOLOX-nano is not in ``OPENVINO_WINS``), and the
same model on OpenVINO in bfloat16 (a CPU with native bf16; ``auto`` never picks it, so it is asked
for by name), and on OpenVINO in fp32 (to tell the backend's share from bf16's). With more than one, every face variant is scored with each (``<variant> | <yolox>``):
the persons feed the head fallback and the vehicles the vehicle-crop plate search."""

FACE_EDGES_PX = (8, 16)
"""Faces are bucketed by width in the small frame: ``<8``, ``8-16``, ``>=16`` px."""


def bucket(width_px: float) -> str:
    """The width bucket of a face ``width_px`` wide in the small frame."""
    if width_px < FACE_EDGES_PX[0]:
        return f"<{FACE_EDGES_PX[0]}"
    if width_px < FACE_EDGES_PX[1]:
        return f"{FACE_EDGES_PX[0]}-{FACE_EDGES_PX[1]}"
    return f">={FACE_EDGES_PX[1]}"


def face_widths(item: Any, ds: str, scale: float) -> list[float]:
    """The widths (small-frame px) of the faces the scorer counts under ``face`` on ``item``."""
    from operators.evaluation import MIN_FACE_PX, face_size_px

    if ds in ("faces_dlib", "faces_wider_hard"):
        return [float(b[2] - b[0]) * scale for b in item.face_boxes]
    if ds == "coco_val2017":
        heads = item.head_points or item.face_points
        return [face_size_px(h) * scale for h in heads if face_size_px(h) >= MIN_FACE_PX]
    return []


def leak_width(leak: dict[str, Any], scale: float) -> float:
    """A face leak's width in the small frame (COCO: its head size, scaled)."""
    if "box" in leak:
        return float(leak["box"][2]) - float(leak["box"][0])
    return float(leak["size_px"]) * scale


def build_components(red: Any, names: set[str]) -> dict[str, Any]:
    """The face detectors of :data:`COMPONENTS` named in ``names``, on one thread each."""
    from operators.detectors import CenterFaceDetector, YuNetDetector

    union = red.detectors["face"]
    out: dict[str, Any] = {}
    for name in sorted(names):
        kind, over = COMPONENTS[name]
        if name in ("cf", "yn"):
            out[name] = union.centerface if kind == "centerface" else union.yunet
            continue
        base = union.centerface if kind == "centerface" else union.yunet
        kw: dict[str, Any] = {"threshold": base.threshold, "max_side": base.max_side, "min_side": base.min_side,
                              "threads": 1, "precision": red.config.precision, **over}
        if red.config.model_dir:
            kw["model_dir"] = red.config.model_dir
        out[name] = (CenterFaceDetector if kind == "centerface" else YuNetDetector)(**kw)
    return out


def build_persons(red: Any, names: list[str]) -> dict[str, Any]:
    """The YOLOX variants of :data:`PERSONS` named in ``names`` (``yolox``: the Redactor's own)."""
    from operators.detectors import YoloxPersonDetector

    base = red.detectors["person"]
    out: dict[str, Any] = {}
    for name in names:
        if not PERSONS[name]:
            out[name] = base
            continue
        kw: dict[str, Any] = {"threshold": base.threshold, "nms_iou": base.nms_iou, "max_side": base.max_side,
                              "threads": 1, "vehicles": base.vehicles, "vehicle_threshold": base.vehicle_threshold,
                              "max_upscale": base.max_upscale, "native_max_side": base.native_max_side,
                              "precision": red.config.precision, **PERSONS[name]}
        if red.config.model_dir:
            kw["model_dir"] = red.config.model_dir
        out[name] = YoloxPersonDetector(**kw)
    return out


def cost_cameras() -> dict[str, np.ndarray]:
    """The fixed 320x180 cameras timed (see the module docstring)."""
    import cv2

    from load_tests.pass_cost import _video_frames, scheduled
    from operators.video import sample_video

    out: dict[str, np.ndarray] = {}
    snapshot = ROOT / "out" / "load" / "sources" / "vtest-320x180-0.5fps.mp4"
    if snapshot.is_file():
        out["snapshot 320x180"] = np.stack(_video_frames(snapshot, 16))
    bikes = scheduled(_video_frames(sample_video("bikes.mp4"), 50), 8)
    out["bikes 320x180"] = np.stack([cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA) for f in bikes])
    return out


def measure_cost(red: Any, comps: dict[str, Any], rounds: int, persons: dict[str, Any] | None = None) -> dict[str, Any]:
    """CPU-s per frame of each variant's face detection and of the other passes, per camera (and of
    each YOLOX variant of ``persons`` alone, alternated with the rest, when there is more than one)."""
    timed = {**comps, **{f"person {k}": v for k, v in (persons or {}).items() if len(persons or {}) > 1}}
    from operators.types import Label

    cams = cost_cameras()
    person, text = red.detectors["person"], red.detectors["text"]

    def rest(frames: np.ndarray) -> None:
        pri = person.detect(frames)
        text.detect(frames)
        text.detect_crops(frames, [b.select(b.label == Label.VEHICLE) for b in pri])

    for frames in cams.values():  # warm-up: sessions, OpenVINO static compiles (3rd call), caches
        for _ in range(4):
            for det in timed.values():
                det.detect(frames)
            rest(frames)
    got: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for cam, frames in cams.items():
            for name in [*timed, "other passes"]:
                t0 = time.process_time()
                if name == "other passes":
                    rest(frames)
                else:
                    timed[name].detect(frames)
                got.setdefault((cam, name), []).append((time.process_time() - t0) / len(frames))
    per = {k: statistics.median(v) for k, v in got.items()}
    table: dict[str, Any] = {}
    for cam in cams:
        row: dict[str, Any] = {"frames": len(cams[cam]), "other_passes": round(per[(cam, "other passes")], 5),
                               "components": {c: round(per[(cam, c)], 5) for c in timed}, "variants": {}}
        for v, parts in VARIANTS.items():
            if all(p in comps for p in parts):
                face = sum(per[(cam, p)] for p in parts)
                row["variants"][v] = {"face_cpu_s": round(face, 5),
                                      "detect_cpu_s": round(face + per[(cam, "other passes")], 5)}
        table[cam] = row
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=320)
    ap.add_argument("--limit", type=int, default=0, help="images per set (0: all)")
    ap.add_argument("--sets", default="all")
    ap.add_argument("--variants", default="", help="'|'-separated subset of the variant names (default all)")
    ap.add_argument("--rounds", type=int, default=5, help="cost rounds (0: no cost measurement)")
    ap.add_argument("--no-quality", action="store_true", help="the cost table only")
    ap.add_argument("--compiles", default="sync", choices=COMPILES)
    ap.add_argument("--persons", default="yolox",
                    help="','-separated YOLOX variants of PERSONS (default: yolox, the Redactor's own); with "
                         "more than one, each face variant is scored with each, named '<variant> | <yolox>'")
    args = ap.parse_args(argv)
    use_shared_models()
    set_compiles(args.compiles)
    from operators.evaldata import default_eval_dir
    from operators.evaluation import Scorer, load_items, subset
    from operators.redactor import RedactionConfig, Redactor
    from operators.types import Boxes, Label

    face_variants = {k: v for k, v in VARIANTS.items() if not args.variants or k in args.variants.split("|")}
    red = Redactor(RedactionConfig(classes=("face", "plate"), threads=1).validate())
    comps = build_components(red, {c for parts in face_variants.values() for c in parts})
    persons = build_persons(red, args.persons.split(","))
    # variant name -> (face components, YOLOX variant)
    variants: dict[str, tuple[tuple[str, ...], str]] = {
        (k if len(persons) == 1 else f"{k} | {pn}"): (parts, pn) for k, parts in face_variants.items() for pn in persons}
    text: Any = red.detectors["text"]
    sets = SETS if args.sets == "all" else tuple(args.sets.split(","))
    rows: list[dict[str, Any]] = []
    for ds in sets if not args.no_quality else ():
        items = subset(load_items(ds, default_eval_dir()), args.limit or None)
        scorers = {k: Scorer(ds) for k in variants}
        targets: dict[str, int] = {}
        scales: dict[str, float] = {}
        for item in items:
            frames, aff = small_frame(item.image_path, args.side)
            hw = frames.shape[1:3]
            scales[item.image_path.name] = aff[0]
            for w in face_widths(item, ds, aff[0]):
                targets[bucket(w)] = targets.get(bucket(w), 0) + 1
            found = {c: det.detect(frames)[0] for c, det in comps.items()}
            (full,) = text.detect(frames)
            rest: dict[str, tuple[Any, Any]] = {}
            for pn, person in persons.items():
                (p,) = person.detect(frames)
                (cr,) = text.detect_crops(frames, [p.select(p.label == Label.VEHICLE)])
                rest[pn] = (p, cr)
            for k, (parts, pn) in variants.items():
                p, cr = rest[pn]
                raw = Boxes.concat([*(found[c] for c in parts), p, cr, full])
                plan = red.plan_from([raw], [], hw, frames=frames)
                scorers[k].add(item, red.coverage(hw, plan[0]), affine=aff, frame=item.image_path.name)
        leaks: dict[str, dict[str, float]] = {}
        for k, sc in scorers.items():
            rep = sc.report()
            main_cls = rep.classes[0]
            leaks[k] = {f"{lk['image']} {lk.get('box', lk.get('points'))}": leak_width(lk, scales[lk["image"]])
                        for lk in rep.leaks if lk["cls"] == "face"}
            widths: dict[str, int] = {}
            for w in leaks[k].values():
                widths[bucket(w)] = widths.get(bucket(w), 0) + 1
            row: dict[str, Any] = {
                "dataset": ds, "variant": k, "images": len(items), "class": main_cls.cls,
                "targets": main_cls.targets, "leaked": main_cls.leaked,
                "faces_by_width_px": dict(sorted(targets.items())),
                "faces_leaked_by_width_px": dict(sorted(widths.items())),
                "masked_area": round(rep.masked_area_share, 4)}
            if k != next(iter(variants)):  # against the first variant: faces it leaks and the first does not
                base = leaks[next(iter(variants))]
                more = [w for key, w in leaks[k].items() if key not in base]
                fewer = [w for key, w in base.items() if key not in leaks[k]]
                row["more_than_first_by_width_px"] = {b: sum(bucket(w) == b for w in more) for b in sorted(
                    {bucket(w) for w in more})}
                row["fewer_than_first_by_width_px"] = {b: sum(bucket(w) == b for w in fewer) for b in sorted(
                    {bucket(w) for w in fewer})}
            rows.append(row)
            print(f"{ds:<17} {k:<36} {main_cls.cls:<5} leaked {main_cls.leaked:>4} of {main_cls.targets:<5} "
                  f"masked {row['masked_area']:.2%}  faces leaked by width {row['faces_leaked_by_width_px']} "
                  f"(of {row['faces_by_width_px']})"
                  + (f"  vs first: +{row['more_than_first_by_width_px']} -{row['fewer_than_first_by_width_px']}"
                     if "more_than_first_by_width_px" in row else ""), flush=True)
    cost = measure_cost(red, comps, args.rounds, persons) if args.rounds else {}
    for cam, row in cost.items():
        print(f"\n{cam}: {row['frames']} frames, other passes {row['other_passes']:.4f} CPU-s/frame; "
              f"load average {os.getloadavg()[0]:.1f}")
        base = next(iter(row["variants"].values()))
        for v, c in row["variants"].items():
            print(f"  {v:<26} faces {c['face_cpu_s']:.4f}  (x{c['face_cpu_s'] / base['face_cpu_s']:.2f})  "
                  f"detection {c['detect_cpu_s']:.4f} CPU-s/frame  (x{c['detect_cpu_s'] / base['detect_cpu_s']:.2f})")
    precisions = {c: getattr(d, "precision", "?") + "/" + ",".join(getattr(d, "providers", []))
                  for c, d in {**comps, **persons}.items()}
    for cam, row in cost.items():
        yolox = {k: v for k, v in row["components"].items() if k.startswith("person ")}
        if yolox:
            first = next(iter(yolox.values()))
            print(f"{cam}: " + "  ".join(f"{k} {v:.4f} CPU-s/frame (x{v / first:.2f})" for k, v in yolox.items()))
    print(json.dumps({"side": args.side, "compiles": args.compiles, "components": precisions, "rows": rows,
                      "cost_cpu_s_per_frame": cost, "load_avg": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
