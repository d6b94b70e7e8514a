"""Detection on small frames: is a cheaper way to run it the same detections? (issue 19 item 3)

Every image of the eval sets downscaled so that its longer side is ``--side`` px (what a
snapshot camera of the same scene sends, as ``load_tests/small_frames.py`` does), plus the
frames of ``make load``'s 320x180 source, through the default face + plate detectors
(``Redactor.run_detectors``) in each variant:

* ``one`` (the reference; ``one2`` etc.: a second such Redactor, to see run-to-run noise): one
  frame per call, ``threads=1``;
* ``batch``: the same frames, ``--batch`` one-frame chunks to a ``Redactor.detect_many`` call
  (what the detector actor runs when a chunk actor sends several small chunks at once,
  ``redact_many``: same-shape frames of different chunks share one ``run_detectors`` batch);
* ``threads=N``: one frame per call with N inference threads (``ray.detector.threads``;
  ``none`` = the backend's default, all cores: the process stage's default).

For each variant: whether every frame's boxes, scores and labels are bitwise identical to the
reference's (and how many differ, and by how much), and the process CPU-s per frame (every
thread counted; variants interleaved per group, so they see the same load).

    VEILSTREAM_MODEL_DIR=../shared/models .venv/bin/python load_tests/small_detect_identity.py \\
        --limit 40 --variants one,batch,threads=none
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS = ("faces_dlib", "coco_val2017", "plates_eu", "plates_traffic", "faces_wider_hard")
SNAPSHOT = ROOT / "out" / "load" / "sources" / "vtest-320x180-0.5fps.mp4"


def frames_at(side: int, sets: tuple[str, ...], limit: int) -> list[np.ndarray]:
    import cv2

    from operators.evaldata import default_eval_dir
    from operators.evaluation import load_items, subset
    from operators.video import VideoReader, read_image

    out: list[np.ndarray] = []
    if SNAPSHOT.is_file():
        with VideoReader(str(SNAPSHOT)) as r:
            for chunk in r.chunks(16):
                out.extend(chunk.frames)
    for ds in sets:
        for item in subset(load_items(ds, default_eval_dir()), limit or None):
            img = read_image(item.image_path)
            h, w = img.shape[:2]
            s = side / max(h, w)
            out.append(cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA))
    return out


def flat(found: dict[str, Any], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame ``k``'s boxes of every detector key, in key order."""
    from operators.types import Boxes

    for key, v in found.items():
        if isinstance(v, Exception):
            raise RuntimeError(f"{key}: {v}")
    b = Boxes.concat([found[key][k] for key in found])  # detect_many's order
    return b.xyxy, b.score, b.label


def run(red: Any, frames: list[np.ndarray], batch: int) -> tuple[list[tuple[np.ndarray, ...]], float]:
    """Every frame's boxes and the CPU-s it took: one frame a ``run_detectors`` call, or (``batch``
    > 1) same-shape frames ``batch`` one-frame chunks to a ``detect_many`` call."""
    out: list[tuple[np.ndarray, ...] | None] = [None] * len(frames)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(f.shape, []).append(i)
    t0 = time.process_time()
    for idx in groups.values():
        for s in range(0, len(idx), batch):
            part = idx[s:s + batch]
            if batch == 1:
                found = red.run_detectors(frames[part[0]][None])
                out[part[0]] = flat(found, 0)
                continue
            for i, (raw, failed, errors) in zip(part, red.detect_many([frames[i][None] for i in part])):
                if failed or raw[0] is None:
                    raise RuntimeError(f"detection failed: {errors}")
                b = raw[0]
                out[i] = (b.xyxy, b.score, b.label)
    cpu = time.process_time() - t0
    assert all(o is not None for o in out)
    return out, cpu  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=320)
    ap.add_argument("--limit", type=int, default=40, help="images per eval set (0: all)")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--variants", default="one,batch,threads=none")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    models = ROOT.parent / "shared" / "models"
    if models.is_dir():
        os.environ.setdefault("VEILSTREAM_MODEL_DIR", str(models))
    from operators.redactor import RedactionConfig, Redactor

    frames = frames_at(args.side, tuple(filter(None, args.sets.split(","))), args.limit)
    variants = args.variants.split(",")
    reds: dict[str, tuple[Any, int]] = {}
    for v in variants:
        threads: int | None = 1
        batch = 1
        if v == "batch":
            batch = args.batch
        elif v.startswith("threads="):
            t = v.split("=", 1)[1]
            threads = None if t == "none" else int(t)
        elif not v.startswith("one"):
            raise SystemExit(f"unknown variant {v!r}: one, batch, threads=N|none")
        cfg = RedactionConfig(classes=("face", "plate"), threads=threads, detect_every=1).validate()
        reds[v] = (Redactor(cfg), batch)
    for red, batch in reds.values():  # warm-up: every shape compiled once (and OpenVINO's static compiles)
        for _ in range(3):
            run(red, frames, batch)
    cpu = {v: float("inf") for v in variants}
    got: dict[str, list[tuple[np.ndarray, ...]]] = {}
    for _ in range(args.rounds):
        for v, (red, batch) in reds.items():
            got[v], c = run(red, frames, batch)
            cpu[v] = min(cpu[v], c / len(frames))
    ref = got[variants[0]]
    result: dict[str, Any] = {"frames": len(frames), "side": args.side, "load_avg": os.getloadavg()[0], "variants": {}}
    for v in variants:
        differ, worst = 0, 0.0
        for a, b in zip(ref, got[v]):
            same = all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))
            if not same:
                differ += 1
                if a[0].shape == b[0].shape and a[2].shape == b[2].shape and np.array_equal(a[2], b[2]):
                    worst = max(worst, float(np.abs(a[0] - b[0]).max(initial=0.0)))
                else:
                    worst = float("inf")
        result["variants"][v] = {"cpu_s_per_frame": round(cpu[v], 4), "frames_differing": differ,
                                 "max_abs_xyxy_diff": worst}
        print(f"{v:<14} CPU-s/frame {cpu[v]:.4f} (x{cpu[v] / cpu[variants[0]]:.2f})  frames differing from "
              f"{variants[0]}: {differ}/{len(frames)}" + (f" (max |dxyxy| {worst:.3g})" if differ else " (identical)"),
              flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
