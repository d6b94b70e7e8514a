"""Mask boxes wholly inside another box of the same frame and label: how many, and whether
dropping them before masking keeps the masked pixels (issue 19 "Throughput"; docs/performance.md
"Boxes inside boxes after the temporal fill").

    .venv/bin/python load_tests/contained_boxes.py [--sources crowd,bench] [--rounds 2]

Uses ``load_tests/mask_cost.py detect``'s cached detections (``out/mask_cost/<source>.pkl``; run
that first). Per chunk it plans the boxes as ``Redactor.plan_from`` does (temporal fill
included), then per frame and label marks a box *contained* when every pixel its masker writes
for it (padding and shape: a face's ellipse, :meth:`~operators.anonymize._RoiAnonymizer.
coverage_mask`) is a pixel that masker writes for one other box of the same label that is kept
(largest first; of identical boxes the first is kept). Counting is unchanged by construction
(``Redactor.count`` counts overlapping boxes of one class once). It prints the boxes a frame,
the contained ones, the CPU seconds a frame of ``Redactor.apply`` with all boxes and without
the contained ones (best of ``--rounds``, alternated, in this process; process CPU time), and
the pixels of the two masked chunks that differ (of the masked pixels), the pixels whose
being masked differs (``Redactor.coverage``: 0 when the containment test is right), and
whether ``Redactor.count`` agrees. A drop is only safe if that is 0: masks of
overlapping boxes are rendered as merged groups (``anonymize._merged``) whose cells and extent
follow their members, so a box that adds no pixel can still move a group's grid.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from load_tests.mask_cost import CACHE, config, read_chunks  # noqa: E402
from operators.redactor import Redactor  # noqa: E402
from operators.types import Boxes  # noqa: E402


def contained(masker: Any, hw: tuple[int, int], boxes: Boxes) -> np.ndarray:
    """``(K,)`` bool: box ``k`` adds no pixel to what ``masker`` writes for the other boxes
    kept (a box is tested against kept boxes only, largest padded area first)."""
    n = len(boxes)
    out = np.zeros(n, bool)
    if n < 2:
        return out
    regions = [masker._regions(hw, boxes.select(np.arange(n) == k), None) for k in range(n)]
    rect = np.array([[r[0].y0, r[0].y1, r[0].x0, r[0].x1] if len(r) == 1 else [0, 0, 0, 0] for r in regions],
                    np.int64)
    area = (rect[:, 1] - rect[:, 0]) * (rect[:, 3] - rect[:, 2])
    kept: list[int] = []
    for k in np.argsort(-area, kind="stable").tolist():
        if len(regions[k]) != 1:  # no pixel, or a zone/frame region: never dropped
            kept.append(k)
            continue
        y0, y1, x0, x1 = rect[k]
        rk = regions[k][0]
        for j in kept:
            if len(regions[j]) != 1:
                continue
            jy0, jy1, jx0, jx1 = rect[j]
            if not (jy0 <= y0 and y1 <= jy1 and jx0 <= x0 and x1 <= jx1):
                continue
            rj = regions[j][0]
            if rj.mask is None:
                out[k] = True
                break
            sub = rj.mask[y0 - jy0:y1 - jy0, x0 - jx0:x1 - jx0]
            if bool(np.all(sub if rk.mask is None else sub[rk.mask])):
                out[k] = True
                break
        if not out[k]:
            kept.append(k)
    return out


def drop_contained(red: Redactor, hw: tuple[int, int], boxes: Boxes) -> Boxes:
    """``boxes`` without the boxes :func:`contained` marks, per label (masker)."""
    keep = np.ones(len(boxes), bool)
    for label, masker in red._maskers.items():
        idx = np.flatnonzero(boxes.label == label)
        if len(idx) > 1:
            keep[idx[contained(masker, hw, boxes.select(boxes.label == label))]] = False
    return boxes.select(keep)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", default="crowd")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    red = Redactor(config(), detectors={})
    rows = []
    for name in args.sources.split(","):
        path = CACHE / f"{name}.pkl"
        if not path.is_file():
            raise SystemExit(f"{path} missing: run load_tests/mask_cost.py detect --sources {name} first")
        dets = pickle.loads(path.read_bytes())
        for c, (frames, det) in enumerate(zip(read_chunks(name), dets)):
            hw = frames.shape[1:3]
            planned = red.plan_from(det["raw"], det["failed"], hw, frames=frames)
            t0 = time.process_time()
            reduced = [drop_contained(red, hw, b) for b in planned]
            find_s = time.process_time() - t0
            best = {"all": float("inf"), "reduced": float("inf")}
            masked: dict[str, np.ndarray] = {}
            for _ in range(args.rounds):
                for key, boxes in (("all", planned), ("reduced", reduced)):
                    work = frames.copy()
                    t0 = time.process_time()
                    masked[key] = red.apply(work, boxes, in_place=True)
                    best[key] = min(best[key], time.process_time() - t0)
            diff = int((masked["all"] != masked["reduced"]).any(axis=-1).sum())
            cov_diff = sum(int((red.coverage(hw, a) != red.coverage(hw, b)).sum()) for a, b in zip(planned, reduced))
            n = len(frames)
            row = {"source": name, "chunk": c, "frames": n,
                   "boxes_per_frame": round(sum(len(b) for b in planned) / n, 1),
                   "contained_per_frame": round(sum(len(a) - len(b) for a, b in zip(planned, reduced)) / n, 1),
                   "apply_all_cpu_s": round(best["all"] / n, 4), "apply_reduced_cpu_s": round(best["reduced"] / n, 4),
                   "find_cpu_s": round(find_s / n, 4), "differing_pixels": diff,
                   "masked_pixels": int(sum(int(red.coverage(hw, b).sum()) for b in planned)),
                   "coverage_differs_pixels": cov_diff,
                   "counts_same": red.count(planned) == red.count(reduced)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
