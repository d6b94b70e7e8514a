"""``veilstream eval --sweep``: leak rate against masked area, per class, from cached detections.

Every point is one setting of the thresholds (and mask padding) applied to the SAME cached
detector output (:mod:`operators.evalcache`), so a sweep of dozens of settings costs one
detection pass per image. Each class is swept on its own (``classes=(cls,)``) so that the
masked area on the x axis is what that class costs the analysts. The product defaults are
marked; ``sweep.json`` has every point, ``sweep.png`` draws them (OpenCV, no plotting
dependency).
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import evalcache
from .evaluation import DATASETS, load_items, subset

FACE_SETS = ("faces_wider_hard", "coco_val2017", "faces_dlib")
PLATE_SETS = ("plates_traffic", "plates_eu")
CF_GRID = (0.03, 0.05, 0.07, 0.1, 0.2, 0.35, None)
YN_GRID = (0.2, 0.3, 0.35, 0.45, 0.6, None)
PERSON_GRID = (0.05, 0.1, 0.2, 0.35, None)
TEXT_GRID = (0.15, 0.25, 0.35, 0.5, 0.6, 0.7)
PAD_GRID = (0.0, 0.1, 0.25, 0.4)
HEADLINE = {"faces_wider_hard": ("face_ge20", "face_lt20"), "plates_traffic": ("plate_ro", "plate_kg")}
FAMILIES = ("thresholds", "geometry")
"""Point families: detector thresholds (and plate padding), and the mask geometry of round 3
(head fallback gates and shape, face padding; the plate fallback's shrink, the longest plate
box, loose text), each at the default thresholds. The plate class is swept on the plate sets:
what loose text saves on the face sets shows only with faces and plates masked together
(docs/quality.md "Over-masking round 3")."""
HEAD_GRID: dict[str, tuple[Any, ...]] = {
    "head_shape": ("rect", "ellipse"), "head_top_cut": (True, False), "head_min_person_px": (0, 24, 48, 72, 96)}
"""Swept together (every combination) in the geometry family."""
GEOMETRY_ALONE: dict[str, dict[str, tuple[Any, ...]]] = {
    "face": {"head_min_score": (0.0, 0.2, 0.35, 0.5), "head_padding": (0.0, 0.1), "face_padding": (0.2, 0.3),
             # face masks round 4: large weak face boxes (docs/quality.md "Face masks that follow faces")
             "face_large_px": (None, 24.0, 48.0, 64.0, 96.0), "face_large_min_score": (0.1, 0.15, 0.2, 0.3)},
    "plate": {"plate_region_shrink": (False, True), "plate_max_aspect": (None, 8.0, 6.0, 5.0, 4.0),
              # over-masking round 3: loose text (no vehicle within the reach, in its heights)
              "plate_vehicle_reach": (None, 0.0, 3.0, 12.0, 25.0, 50.0), "loose_text_padding": (0.0, 0.1, 0.25),
              "loose_text_worn": (False, True)}}
"""Swept one at a time (the rest at the default) in the geometry family."""


def _geometry(cls: str, th0: dict[str, float], cfg: Any) -> list[tuple[dict[str, Any], Any]]:
    """The geometry family: ``HEAD_GRID`` crossed (faces), ``GEOMETRY_ALONE`` one field at a
    time; thresholds at ``th0``. ``params`` name every geometry field swept for the class."""
    from dataclasses import fields

    alone = {k: v for k, v in GEOMETRY_ALONE[cls].items() if k in {f.name for f in fields(cfg)}}
    grid: dict[str, tuple[Any, ...]] = HEAD_GRID if cls == "face" else {}
    names = [*grid, *alone]
    seen: set[Any] = set()
    out: list[tuple[dict[str, Any], Any]] = []

    def add(c: Any) -> None:
        if c not in seen:
            seen.add(c)
            out.append(({"family": "geometry", **{n: getattr(c, n) for n in names}}, (dict(th0), c)))

    for combo in itertools.product(*grid.values()):
        add(replace(cfg, **dict(zip(grid, combo))))
    for name, values in alone.items():
        for v in values:
            add(replace(cfg, **{name: v}))
    return out


def _settings(cls: str, th0: dict[str, float], cfg: Any, comps: set[str],
              families: tuple[str, ...] = FAMILIES) -> list[tuple[dict[str, Any], Any]]:
    """``(params, (thresholds, cfg))`` for every point swept for ``cls``."""
    out: list[tuple[dict[str, Any], Any]] = []
    if "geometry" in families:
        out.extend(_geometry(cls, th0, cfg))
    if "thresholds" not in families:
        return out
    if cls == "face":
        cfs = CF_GRID if "centerface" in comps else (None,)
        yns = YN_GRID if "yunet" in comps else (None,)
        for cf, yn in itertools.product(cfs, yns):
            if cf is None and yn is None:
                continue
            th = {k: v for k, v in th0.items() if k not in ("centerface", "yunet")}
            if cf is not None:
                th["centerface"] = cf
            if yn is not None:
                th["yunet"] = yn
            out.append(({"centerface": cf, "yunet": yn, "person": th0.get("yolox")}, (th, cfg)))
        for p in PERSON_GRID:
            th = {k: v for k, v in th0.items() if k != "yolox"}
            if p is not None:
                th["yolox"] = p
            out.append(({"centerface": th0.get("centerface") if "centerface" in comps else None,
                         "yunet": th0.get("yunet") if "yunet" in comps else None, "person": p}, (th, cfg)))
    else:
        crops_opts = (True, False) if "text_crops" in comps else (False,)
        for t, crops, pad in itertools.product(TEXT_GRID, crops_opts, PAD_GRID):
            th = {k: v for k, v in th0.items() if not k.startswith("text")}
            th["text_full"] = t
            if crops:
                th["text_crops"] = t
            out.append(({"text": t, "crops": crops, "plate_padding": pad},
                        (th, replace(cfg, plate_padding=pad))))
    return out


def run_sweep(args: Any, cfg: Any, names: tuple[str, ...], eval_dir: Path, limit: int | None) -> int:
    out_dir = Path(args.sweep_out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_root = None if getattr(args, "no_cache", False) else Path(args.cache_dir or "out/eval_cache")
    th0 = evalcache.thresholds(cfg)
    points: list[dict[str, Any]] = []
    for cls, sets in (("face", FACE_SETS), ("plate", PLATE_SETS)):
        if cls not in cfg.classes:
            continue
        ccfg = replace(cfg, classes=(cls,))
        comps = evalcache.components(ccfg)
        dflt = {k: v for k, v in th0.items() if k in comps}
        for ds in sets:
            if ds not in names:
                continue
            items = subset(load_items(ds, eval_dir), limit)
            cache = evalcache.DetectionCache(cache_root, ds, items, progress=sys.stderr.isatty())
            cached = cache.get(comps)
            families = tuple(getattr(args, "sweep_families", None) or FAMILIES)
            for params, (th, scfg) in _settings(cls, dflt, ccfg, set(comps), families):
                th = {k: v for k, v in th.items() if k in comps}
                rep = evalcache.score_setting(ds, items, cache, cached, scfg, th)
                main = rep.classes[0]
                is_default = th == dflt and scfg == ccfg
                point = {"cls": cls, "dataset": ds, "family": params.pop("family", "thresholds"),
                         "params": params, "default": is_default,
                         "targets": main.targets, "leaked": main.leaked, "leak_rate": round(main.leak_rate, 4),
                         "masked_area": round(rep.masked_area_share, 4),
                         "masked_area_by_source": {k: round(v, 4) for k, v in rep.masked_area_by_source.items()}}
                for sub in HEADLINE.get(ds, ()):
                    c = next(c for c in rep.classes if c.cls == sub)
                    point[f"leak_rate_{sub}"] = round(c.leak_rate, 4)
                points.append(point)
    doc = {"limit": limit, "defaults": {k: v for k, v in th0.items()}, "points": points,
           "datasets": [d for d in DATASETS if d in names]}
    (out_dir / "sweep.json").write_text(json.dumps(doc, indent=1))
    png = out_dir / "sweep.png"
    draw(points, png)
    for cls in ("face", "plate"):
        for ds in {p["dataset"] for p in points if p["cls"] == cls}:
            d = [p for p in points if p["cls"] == cls and p["dataset"] == ds and p["default"]]
            if d:
                print(f"{cls:<6} {ds:<17} default: leak {d[0]['leak_rate']:.1%} masked {d[0]['masked_area']:.1%} "
                      f"({d[0]['params']})")
    print(f"sweep: {len(points)} points -> {out_dir / 'sweep.json'}, {png}")
    return 0


COLORS = {"faces_wider_hard": (40, 40, 220), "coco_val2017": (200, 120, 0), "faces_dlib": (0, 160, 0),
          "plates_traffic": (40, 40, 220), "plates_eu": (200, 120, 0)}


def pareto(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both masked area and leak rate, by increasing area."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(pts):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def draw(points: list[dict[str, Any]], path: Path) -> None:
    """Leak rate (y) against frame area masked (x): one panel per class, one colour per
    data set, every setting a dot, the best-trade-off front a line, the default a ring."""
    import cv2

    classes = [c for c in ("face", "plate") if any(p["cls"] == c for p in points)]
    pw, ph, m = 560, 420, 60
    img = np.full((ph + 2 * m, max(1, len(classes)) * (pw + 2 * m), 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for k, cls in enumerate(classes):
        ox = k * (pw + 2 * m) + m
        pts = [p for p in points if p["cls"] == cls]
        xmax = max(0.05, max(p["masked_area"] for p in pts) * 1.1)
        ymax = max(0.05, min(1.0, max(p["leak_rate"] for p in pts) * 1.1))

        def at(x: float, y: float, ox: int = ox, xmax: float = xmax, ymax: float = ymax) -> tuple[int, int]:
            return (int(ox + x / xmax * pw), int(m + ph - y / ymax * ph))

        cv2.rectangle(img, (ox, m), (ox + pw, m + ph), (0, 0, 0), 1)
        for i in range(6):
            x, y = xmax * i / 5, ymax * i / 5
            cv2.putText(img, f"{x:.0%}", (at(x, 0)[0] - 12, m + ph + 18), font, 0.4, (0, 0, 0), 1)
            cv2.putText(img, f"{y:.0%}", (ox - 45, at(0, y)[1] + 4), font, 0.4, (0, 0, 0), 1)
            cv2.line(img, (ox, at(0, y)[1]), (ox + pw, at(0, y)[1]), (225, 225, 225), 1)
        cv2.putText(img, f"{cls}: leak rate vs frame area masked", (ox, m - 25), font, 0.55, (0, 0, 0), 1)
        cv2.putText(img, "frame area masked (dot: thresholds, cross: mask geometry)", (ox + pw // 2 - 200, m + ph + 40),
                    font, 0.45, (0, 0, 0), 1)
        for j, ds in enumerate(sorted({p["dataset"] for p in pts})):
            col = COLORS.get(ds, (90, 90, 90))
            dpts = [p for p in pts if p["dataset"] == ds]
            for p in dpts:
                if p.get("family") == "geometry":  # mask geometry at default thresholds: a cross
                    cv2.drawMarker(img, at(p["masked_area"], p["leak_rate"]), col, cv2.MARKER_CROSS, 7, 1)
                else:
                    cv2.circle(img, at(p["masked_area"], p["leak_rate"]), 2, col, -1)
            front = pareto([(p["masked_area"], p["leak_rate"]) for p in dpts])
            for a, b in zip(front, front[1:]):
                cv2.line(img, at(*a), at(*b), col, 1, cv2.LINE_AA)
            for p in dpts:
                if p["default"]:
                    cv2.circle(img, at(p["masked_area"], p["leak_rate"]), 8, col, 2, cv2.LINE_AA)
            cv2.putText(img, f"{ds} (ring = default)" if j == 0 else ds, (ox + pw - 230, m + 20 + 18 * j), font, 0.45,
                        col, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
