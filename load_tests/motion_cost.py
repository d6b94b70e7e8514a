"""What the camera-motion estimate costs per frame, and what cheaper settings change in the motion
and in the planned boxes (issue 19 "Throughput", crowd target; docs/performance.md).

    .venv/bin/python load_tests/motion_cost.py [--sources stage,crowd,bench] [--rounds 3]
        [--baseline REV] [--variant name=key:value,key:value ...]

Chunks and cached detections are ``load_tests/mask_cost.py``'s (``stage``: ``stage_cost.py``'s
two 4 s crowd chunks; ``crowd``, ``bench``: ``mask_cost.py detect``'s). Per chunk, alternated,
best of ``--rounds`` (CPU seconds, ``time.process_time``): ``estimate_camera_motion`` of
``operators/motion.py`` at ``--baseline`` (git; default ``HEAD``) and of this tree with each
variant's :class:`operators.motion.MotionSettings` (``default``: this tree's defaults). Then,
against the baseline's motion:

* ``motion px``: the largest distance, over every frame and the four frame corners, between
  where the two motions put a corner of frame ``i`` on frame 0 (full-resolution px), and the
  pairs whose ``ok`` (estimated or not) differs;
* ``plan``: ``Redactor.plan_from`` with each motion (the stream's planning: fallbacks, temporal
  fill following that motion): frames whose planned boxes are not identical, and the masked
  pixels (``Redactor.coverage``) added and removed, as a share of the baseline's masked pixels.

``--sources clips``: the moving-camera clips of ``veilstream eval --as-video`` (``--limit`` per
eval set, built as the eval builds them, H.264 round trip included), whose true motion is known
(the pan and zoom that made them): per variant its CPU and ``truth px``, the largest distance over
a clip's frames between where the estimate and the truth put frame ``i``'s corners on frame 0,
averaged over the clips (mean) and the worst clip (max), and the pairs not estimated.

``--sources vtest``: ``make load``'s vtest (1280x720@15, a static camera, people walking), cut in
2 s chunks (``--limit`` chunks): its true motion is none, so ``truth px`` is the estimate's
distance from the identity, the motion it reads into people walking.

``--sources crowdtruth``: ``load_tests/crowd_source.py``'s master clip (6 crowd stills, each
panned and zoomed for 4 s, the pan and zoom known) in 2 s chunks (``--limit`` chunks), against
its true motion, as ``clips``.

A variant is ``MotionSettings`` fields: ``side``, ``max_corners``, ``window_px``, ``levels``,
``reuse`` (0/1), ``reuse_min_share``.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import operators.redactor as redactor_mod  # noqa: E402
from load_tests.mask_cost import CACHE, config, load_at, read_chunks, stage_chunks  # noqa: E402
from operators import motion as motion_now  # noqa: E402
from operators.redactor import Redactor  # noqa: E402
from operators.types import Boxes  # noqa: E402

DEFAULT_VARIANTS = ("default=", "pair=side:320", "side240=side:240", "side160=side:160", "corners100=max_corners:100",
                    "window15=window_px:15", "levels2=levels:2", "reuse=reuse:1")


def parse_variant(spec: str) -> tuple[str, motion_now.MotionSettings | None]:
    """``name=key:value,...`` -> (name, settings); ``name=`` (nothing after it): ``None``, the
    defaults of ``estimate_camera_motion`` (``CHUNK_SETTINGS``); a clear error for anything else."""
    name, _, body = spec.partition("=")
    if not name:
        raise SystemExit(f"--variant {spec!r}: expected name=key:value,...")
    if not body:
        return name, None
    known = {f.name: f.type for f in fields(motion_now.MotionSettings)}
    kw: dict[str, Any] = {}
    for part in filter(None, body.split(",")):
        key, _, value = part.partition(":")
        if key not in known:
            raise SystemExit(f"--variant {spec!r}: unknown setting {key!r}; expected one of {', '.join(known)}")
        kw[key] = bool(int(value)) if key == "reuse" else float(value) if key == "reuse_min_share" else int(value)
    return name, motion_now.MotionSettings(**kw)


def corner_shift(a: motion_now.CameraMotion, b: motion_now.CameraMotion, hw: tuple[int, int]) -> float:
    """Largest distance (px) between where ``a`` and ``b`` map frame ``i``'s corners onto frame 0."""
    h, w = hw
    pts = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64)
    pa = np.einsum("nij,kj->nki", a.to_first, pts)[..., :2]
    pb = np.einsum("nij,kj->nki", b.to_first, pts)[..., :2]
    return float(np.linalg.norm(pa - pb, axis=-1).max())


def plan_with(red: Redactor, frames: np.ndarray, det: dict[str, Any], motion: motion_now.CameraMotion) -> list[Boxes]:
    """``Redactor.plan_from`` with the fill following ``motion`` (instead of estimating its own)."""
    orig = redactor_mod.fill_gaps

    def fill(per_frame: Any, window: int = 2, **kw: Any) -> Any:
        kw.pop("frames", None)
        return orig(per_frame, window=window, motion=motion, **kw)

    redactor_mod.fill_gaps = fill  # type: ignore[assignment]
    try:
        return red.plan_from(det["raw"], det["failed"], frames.shape[1:3], frames=frames)
    finally:
        redactor_mod.fill_gaps = orig


def same(a: Boxes, b: Boxes) -> bool:
    return np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.score, b.score) and np.array_equal(a.label, b.label)


def truth_rows(name: str, variants: dict[str, motion_now.MotionSettings | None], rounds: int,
               items: Any) -> None:
    """Per variant: CPU, distance from the true motion (mean / max over items), pairs not estimated;
    ``items`` yields ``(frames, truth CameraMotion)``."""
    cost = {v: 0.0 for v in variants}
    err: dict[str, list[float]] = {v: [] for v in variants}
    missed = {v: 0 for v in variants}
    n_frames = 0
    for frames, truth in items:
        n_frames += len(frames)
        best = {v: np.inf for v in variants}
        est: dict[str, motion_now.CameraMotion] = {}
        for _ in range(rounds):
            for v, st in variants.items():
                t0 = time.process_time()
                est[v] = motion_now.estimate_camera_motion(frames, st)
                best[v] = min(best[v], time.process_time() - t0)
        for v in variants:
            cost[v] += best[v]
            err[v].append(corner_shift(truth, est[v], frames.shape[1:3]))
            missed[v] += int((~est[v].ok).sum())
    ref = cost.get("default", next(iter(cost.values())))
    for v in variants:
        print(f"{name:17} {v:14} {cost[v] / n_frames:11.5f} {cost[v] / ref:9.2f} {np.mean(err[v]):13.2f} "
              f"{np.max(err[v]):12.2f} {missed[v]:13d}", flush=True)


def vtest(variants: dict[str, motion_now.MotionSettings | None], rounds: int, limit: int) -> None:
    from load_tests.stage_cost import source_for
    from operators.video import VideoReader

    def items() -> Any:
        with VideoReader(source_for("vtest")) as r:
            for k, c in enumerate(r.chunks(30)):
                if k == limit:
                    break
                yield c.frames, motion_now.CameraMotion.still(len(c.frames))

    print(f"\nvtest: {limit} chunks of 2 s, static camera; truth px: distance from no motion, full-resolution px")
    print(f"{'source':17} {'variant':14} {'CPU-s/frame':>11} {'x default':>9} {'truth px mean':>13} "
          f"{'truth px max':>12} {'not estimated':>13}")
    truth_rows("vtest", variants, rounds, items())


def crowdtruth(variants: dict[str, motion_now.MotionSettings | None], rounds: int, limit: int) -> None:
    import cv2

    from load_tests import crowd_source as cs
    from operators.video import VideoReader

    sizes = [cv2.imread(str(p), cv2.IMREAD_COLOR).shape[:2] for p in cs.crowd_images()]
    per = int(round(cs.FPS * cs.SECONDS_PER_IMAGE))

    def image_to_frame(n: int) -> np.ndarray:  # crowd_frames' own arithmetic for frame n
        idx, k = divmod(n, per)
        ih, iw = sizes[idx]
        t = k / max(1, per - 1)
        z = max(cs.WIDTH / iw, cs.HEIGHT / ih) * (1.0 + 0.15 * t)
        vw, vh = cs.WIDTH / z, cs.HEIGHT / z
        fx = t if idx % 2 == 0 else 1.0 - t
        cx, cy = vw / 2 + fx * (iw - vw), vh / 2 + 0.5 * (ih - vh)
        return np.array([[z, 0.0, cs.WIDTH / 2 - z * cx], [0.0, z, cs.HEIGHT / 2 - z * cy], [0.0, 0.0, 1.0]])

    def items() -> Any:
        n0 = 0
        with VideoReader(cs.build_crowd_clip(ROOT / "out" / "load" / "sources")) as r:
            for k, c in enumerate(r.chunks(per // 2)):
                if k == limit:
                    break
                a = [image_to_frame(n0 + i) for i in range(len(c.frames))]
                n0 += len(c.frames)
                to_first = np.stack([a[0] @ np.linalg.inv(x) for x in a])
                yield c.frames, motion_now.CameraMotion(to_first, np.ones(len(a) - 1, bool))

    print(f"\ncrowd master clip: {limit} chunks of 2 s against the known pan and zoom, full-resolution px")
    print(f"{'source':17} {'variant':14} {'CPU-s/frame':>11} {'x default':>9} {'truth px mean':>13} "
          f"{'truth px max':>12} {'not estimated':>13}")
    truth_rows("crowd", variants, rounds, items())


def clips(variants: dict[str, motion_now.MotionSettings | None], rounds: int, limit: int) -> None:
    import os
    import tempfile

    from operators.evalrun import DATASETS
    from operators.evaluation import load_items, subset
    from operators.evalvideo import clip_from_image, h264_roundtrip
    from operators.video import read_image

    eval_dir = Path(os.environ.get("VEILSTREAM_EVAL_DIR", ROOT.parent / "shared" / "eval"))
    print(f"\nclips: {limit} per set; truth px: full-resolution frame pixels")
    print(f"{'set':17} {'variant':14} {'CPU-s/frame':>11} {'x default':>9} {'truth px mean':>13} "
          f"{'truth px max':>12} {'not estimated':>13}")
    for ds in DATASETS:
        def items(ds: str = ds) -> Any:
            for item in subset(load_items(ds, eval_dir), limit):
                clip, affines = clip_from_image(read_image(item.image_path))
                with tempfile.TemporaryDirectory() as td:
                    frames = h264_roundtrip(clip, Path(td))
                a = [np.array([[s_, 0.0, tx], [0.0, s_, ty], [0.0, 0.0, 1.0]]) for s_, tx, ty in affines]
                to_first = np.stack([a[0] @ np.linalg.inv(x) for x in a])
                yield frames, motion_now.CameraMotion(to_first, np.ones(len(a) - 1, bool))

        truth_rows(ds, variants, rounds, items())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", default="stage,crowd,bench")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--baseline", default="HEAD")
    p.add_argument("--limit", type=int, default=8, help="--sources clips: clips per eval set")
    p.add_argument("--variant", action="append", help=f"name=key:value,... (default: {' '.join(DEFAULT_VARIANTS)})")
    a = p.parse_args()
    variants = dict(parse_variant(v) for v in (a.variant or DEFAULT_VARIANTS))
    base = load_at(a.baseline, "motion.py", "_base_motion")
    red = Redactor(config(), detectors={})
    print(f"baseline {a.baseline}; CPU-s per frame best of {a.rounds} per chunk, alternated; "
          f"px: full-resolution frame pixels", flush=True)
    for name in a.sources.split(","):
        if name in ("clips", "vtest", "crowdtruth"):
            {"clips": clips, "vtest": vtest, "crowdtruth": crowdtruth}[name](variants, a.rounds, a.limit)
            continue
        if name == "stage":
            chunks, dets = stage_chunks()
        else:
            path = CACHE / f"{name}.pkl"
            if not path.is_file():
                raise SystemExit(f"{path} missing: run `load_tests/mask_cost.py detect --sources {name}` first")
            dets = pickle.loads(path.read_bytes())
            chunks = read_chunks(name)
        n_frames = sum(len(c) for c in chunks)
        cost = {v: 0.0 for v in ["baseline", *variants]}
        rows: dict[str, dict[str, float]] = {v: {"shift": 0.0, "ok_diff": 0, "frames_diff": 0, "added": 0,
                                                 "removed": 0, "base_px": 0} for v in variants}
        for frames, det in zip(chunks, dets):
            best = {v: np.inf for v in cost}
            motions: dict[str, Any] = {}
            for _ in range(a.rounds):
                for v in cost:
                    t0 = time.process_time()
                    if v == "baseline":
                        motions[v] = base.estimate_camera_motion(frames)
                    else:
                        motions[v] = motion_now.estimate_camera_motion(frames, variants[v])
                    best[v] = min(best[v], time.process_time() - t0)
            for v in cost:
                cost[v] += best[v]
            hw = frames.shape[1:3]
            ref = motion_now.CameraMotion(motions["baseline"].to_first, motions["baseline"].ok)
            plan_ref = plan_with(red, frames, det, ref)
            cov_ref = [red.coverage(hw, b) for b in plan_ref]
            for v in variants:
                r = rows[v]
                r["shift"] = max(r["shift"], corner_shift(ref, motions[v], hw))
                r["ok_diff"] += int((ref.ok != motions[v].ok).sum())
                plan_v = plan_with(red, frames, det, motions[v])
                for i, (b0, b1) in enumerate(zip(plan_ref, plan_v)):
                    if same(b0, b1):
                        r["base_px"] += int(cov_ref[i].sum())
                        continue
                    r["frames_diff"] += 1
                    cov = red.coverage(hw, b1)
                    r["added"] += int((cov & ~cov_ref[i]).sum())
                    r["removed"] += int((cov_ref[i] & ~cov).sum())
                    r["base_px"] += int(cov_ref[i].sum())
        print(f"\n{name}: {len(chunks)} chunks, {n_frames} frames")
        print(f"{'variant':12} {'CPU-s/frame':>11} {'x base':>7} {'motion px':>9} {'ok diff':>7} "
              f"{'frames diff':>11} {'masked +%':>9} {'masked -%':>9}")
        print(f"{'baseline':12} {cost['baseline'] / n_frames:11.5f} {1.0:7.2f}")
        for v, r in rows.items():
            base_px = max(1, r["base_px"])
            print(f"{v:12} {cost[v] / n_frames:11.5f} {cost[v] / cost['baseline']:7.2f} {r['shift']:9.2f} "
                  f"{int(r['ok_diff']):7d} {int(r['frames_diff']):6d}/{n_frames:<4d} "
                  f"{100 * r['added'] / base_px:9.3f} {100 * r['removed'] / base_px:9.3f}", flush=True)
        if "default" in rows and (rows["default"]["shift"] != 0.0 or rows["default"]["frames_diff"]):
            print(f"{name}: this tree's default motion differs from the baseline's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
