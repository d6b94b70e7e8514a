"""What masking and planning cost per frame, this tree against a baseline revision, in one process
(issue 19 "Throughput"; docs/performance.md "Masking cost").

    .venv/bin/python load_tests/mask_cost.py detect [--sources crowd,bench]
    .venv/bin/python load_tests/mask_cost.py measure [--baseline REV] [--rounds 3]

``detect`` decodes the first chunks of each source the way ``veilstream redact`` and the stream
do (2 s chunks), runs the default detectors (``RedactionConfig(detect_every=4)``, the stream's
and ``redact``'s schedule) once and caches frames' source, raw detections and failures under
``out/mask_cost``. Sources: ``crowd`` (``load_tests/crowd_source.py``: 1280x720@15 of ~40 people,
a slow pan and zoom; two 30-frame chunks) and ``bench`` (``make bench``'s 1280x720
bigbuckbunny.mp4, one 50-frame chunk). ``measure --sources stage`` takes instead the crowd chunks
and cached detections of ``load_tests/stage_cost.py`` (two 60-frame chunks, ~930 boxes a frame to
mask after the fill, against ~345 on ``crowd``'s).

``measure`` loads ``operators/anonymize.py``, ``operators/temporal.py`` and ``operators/motion.py``
(the camera-motion estimate the fill follows) as they are at ``--baseline`` (git) beside this tree's, and per source and chunk times (CPU seconds,
``time.process_time``; best of ``--rounds``, alternated) planning (``Redactor.plan_from``: the
head and plate fallbacks, camera motion and temporal fill) and masking (``Redactor.apply`` in
place on a copy made outside the timer, as ``redact`` and the stream do), and prints CPU-s per
frame, the masked regions rendered per frame, and checks. Three codes: ``before`` (the baseline's
masking, one label's masker after the other), ``label`` (this tree's masker, still one label at
a time: main before ``Redactor.apply`` merged labels) and ``after`` (this tree). The checks:

* the temporal fill's output is identical (every box, score and label) before and after;
* every pixel the baseline masks is masked now (``coverage``), and ``coverage`` is exactly the
  set of pixels ``apply`` changed or may have changed (pixels outside it are bit-identical).

``coverage [--sets all] [--stale-ok]`` compares ``Redactor.coverage`` (what ``veilstream eval``
scores) of the baseline and this tree on every image of the eval sets, planned from the eval's
detection cache (``out/eval_cache``; missing components are computed as ``veilstream eval``
does, or with ``--stale-ok`` taken from the newest cached file of that component: the
comparison needs the same boxes for both, not today's), and prints the differing pixels and
this tree's leaks and masked area per set.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import pickle
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import operators.redactor as redactor_mod  # noqa: E402
from operators.redactor import RedactionConfig, Redactor  # noqa: E402
from operators.types import Boxes  # noqa: E402
from operators.video import VideoReader, sample_video  # noqa: E402

CACHE = ROOT / "out" / "mask_cost"
SOURCES = {"crowd": (2, 2.0), "bench": (1, 2.0)}
"""Source -> (chunks, seconds per chunk)."""
BASELINE = "3d95458"
"""main before issue 19's masking work (the default ``--baseline``)."""


def source_path(name: str) -> Path:
    if name == "crowd":
        from load_tests.crowd_source import build_crowd_clip

        return build_crowd_clip(ROOT / "out" / "load" / "sources")
    if name == "bench":
        return sample_video("bigbuckbunny.mp4")
    raise SystemExit(f"unknown source {name!r}: expected one of {', '.join(SOURCES)}")


STAGE_DETECTIONS = ROOT / "out" / "stage_cost" / "crowd-2.pkl"
"""``stage``: ``load_tests/stage_cost.py --chunks 2 --detections`` this file (its first run caches
the crowd's detections there)."""


def stage_chunks() -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """``--sources stage``: the chunks ``stage_cost.py`` times (``make load SOURCE=crowd``'s
    re-encoded 1280x720@15, cut as ingest cuts it: two 60-frame chunks, ~930 boxes a frame
    to mask after the fill) with its cached detections (every 4th frame and the last)."""
    from load_tests.stage_cost import source_for
    from operators.codec import decode_chunk_payload, split_gops
    from operators.temporal import detection_schedule

    if not STAGE_DETECTIONS.is_file():
        raise SystemExit(f"{STAGE_DETECTIONS} missing: run `load_tests/stage_cost.py --chunks 2 --rounds 1 "
                         f"--detections {STAGE_DETECTIONS.relative_to(ROOT)}` first")
    cached = pickle.loads(STAGE_DETECTIONS.read_bytes())
    chunks: list[np.ndarray] = []
    dets: list[dict[str, Any]] = []
    for seq, g in zip(range(len(cached)), split_gops(str(source_for("crowd")), 2.0)):
        frames = decode_chunk_payload("h264", g.payload, (g.width, g.height), expected_frames=len(g.pts_ms))
        raw: list[Boxes | None] = [None] * len(frames)
        for j, i in enumerate(i for i, s in enumerate(detection_schedule(len(frames), 4)) if s):
            raw[i] = cached[seq][j]
        chunks.append(frames)
        dets.append({"raw": raw, "failed": []})
    return chunks, dets


def read_chunks(name: str) -> list[np.ndarray]:
    if name == "stage":
        return stage_chunks()[0]
    n_chunks, seconds = SOURCES[name]
    out: list[np.ndarray] = []
    with VideoReader(source_path(name)) as r:
        size = max(1, round(seconds * (r.info.fps or 25)))
        for c in r.chunks(size):
            out.append(c.frames)
            if len(out) == n_chunks:
                break
    return out


def config() -> RedactionConfig:
    return RedactionConfig(detect_every=4).validate()


def cmd_detect(args: argparse.Namespace) -> int:
    CACHE.mkdir(parents=True, exist_ok=True)
    red = Redactor(config())
    for name in args.sources.split(","):
        chunks = read_chunks(name)
        dets = []
        for frames in chunks:
            raw, failed, errors, detect_ms = red.detect(frames)
            dets.append({"raw": raw, "failed": failed, "errors": errors, "detect_ms": detect_ms})
            print(f"{name}: {len(frames)} frames, {sum(b is not None for b in raw)} detected, "
                  f"{sum(len(b) for b in raw if b is not None)} boxes, {detect_ms / 1000:.1f} s", flush=True)
        (CACHE / f"{name}.pkl").write_bytes(pickle.dumps(dets))
    return 0


def load_at(rev: str, rel: str, name: str) -> types.ModuleType:
    """``operators/<rel>`` as it is at git ``rev``, as module ``operators.<name>`` (its relative
    imports resolve against this tree's ``operators``)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:operators/{rel}"], check=True,
                         capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader(f"operators.{name}", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "operators"
    sys.modules[mod.__name__] = mod
    exec(compile(src, f"{rev}:operators/{rel}", "exec"), mod.__dict__)  # noqa: S102 - our own source
    return mod


def redactor_variant(anonymize: types.ModuleType, temporal: types.ModuleType, *, per_label: bool = False) -> Redactor:
    """A redactor masking with ``anonymize`` and filling with ``temporal``; ``per_label``: one
    masker after the other, each rendering its own label's boxes (``Redactor.apply`` before
    labels were merged; the baseline's own apply)."""
    red = Redactor(config(), detectors={})
    red._maskers = {lb: anonymize.make_anonymizer(m.spec) for lb, m in red._maskers.items()}
    red._region_masker = anonymize.make_anonymizer(red._region_masker.spec)
    red._fill = temporal.fill_gaps  # type: ignore[attr-defined]
    if per_label:
        red.apply = functools.partial(apply_per_label, red)  # type: ignore[method-assign]
    return red


def apply_per_label(red: Redactor, frames: np.ndarray, boxes: list[Boxes], camera_id: str | None = None, *,
                    in_place: bool = False) -> np.ndarray:
    """``Redactor.apply`` as it was before labels were merged (no zones here)."""
    out: np.ndarray | None = frames if in_place and frames.flags.writeable else None
    for label, masker in red._maskers.items():
        sel = [b.select(b.label == label) for b in boxes]
        if any(len(s) for s in sel):
            out = masker.anonymize(frames if out is None else out, sel, into=out)
    return frames.copy() if out is None else out


def plan(red: Redactor, frames: np.ndarray, det: dict[str, Any]) -> list[Boxes]:
    orig = redactor_mod.fill_gaps
    redactor_mod.fill_gaps = red._fill  # type: ignore[attr-defined]
    try:
        return red.plan_from(det["raw"], det["failed"], frames.shape[1:3], frames=frames)
    finally:
        redactor_mod.fill_gaps = orig


def cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def regions_per_frame(red: Redactor, frames: np.ndarray, boxes: list[Boxes]) -> float:
    """Regions the renderer renders per frame (after any merging it does: per label, or across
    labels where ``apply`` merges them)."""
    n = 0
    across = not isinstance(red.apply, functools.partial)
    for b in boxes:
        pooled: list[Any] = []
        merged: Callable[[list[Any]], list[Any]] = lambda r: r  # noqa: E731
        for label, masker in red._maskers.items():
            sel = b.select(b.label == label)
            if len(sel):
                merged = getattr(sys.modules[type(masker).__module__], "_merged", merged)
                regions = masker._regions(frames.shape[1:3], sel, None)
                if across:
                    pooled.extend(regions)
                else:
                    n += len(merged(regions))
        n += len(merged(pooled))
    return n / len(boxes)


def same_boxes(a: list[Boxes], b: list[Boxes]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x.xyxy, y.xyxy) and np.array_equal(x.score, y.score) and np.array_equal(x.label, y.label)
        for x, y in zip(a, b))


def cmd_measure(args: argparse.Namespace) -> int:
    import operators.anonymize as anon_now
    import operators.temporal as temp_now

    base_temporal = load_at(args.baseline, "temporal.py", "_base_temporal")
    # the baseline's fill follows the baseline's camera-motion estimate
    base_motion = load_at(args.baseline, "motion.py", "_base_motion")
    for attr in ("estimate_camera_motion", "CameraMotion", "warp_xyxy"):
        setattr(base_temporal, attr, getattr(base_motion, attr))
    base = redactor_variant(load_at(args.baseline, "anonymize.py", "_base_anonymize"), base_temporal, per_label=True)
    now = redactor_variant(anon_now, temp_now)
    # "label": this tree's renderer, one label at a time (main before the cross-label merge)
    variants = {"before": base, "label": redactor_variant(anon_now, temp_now, per_label=True), "after": now}
    rows = []
    ok = True
    for name in args.sources.split(","):
        if name == "stage":
            chunks, dets = stage_chunks()
        else:
            path = CACHE / f"{name}.pkl"
            if not path.is_file():
                raise SystemExit(f"{path} missing: run `mask_cost.py detect --sources {name}` first")
            dets = pickle.loads(path.read_bytes())
            chunks = read_chunks(name)
        n_frames = sum(len(c) for c in chunks)
        cost = {v: {"plan": 0.0, "mask": 0.0, "regions": 0.0} for v in variants}
        for red in variants.values():  # warm up, untimed (the first plan imports the lit-plate gate's detectors)
            red.apply(chunks[0].copy(), plan(red, chunks[0], dets[0]), in_place=True)
        for frames, det in zip(chunks, dets):
            best: dict[str, dict[str, float]] = {v: {"plan": np.inf, "mask": np.inf} for v in variants}
            plans: dict[str, list[Boxes]] = {}
            outs: dict[str, np.ndarray] = {}
            for _ in range(args.rounds):
                for v, red in variants.items():
                    t, plans[v] = cpu(functools.partial(plan, red, frames, det))
                    best[v]["plan"] = min(best[v]["plan"], t)
                    buf = frames.copy()
                    t, outs[v] = cpu(functools.partial(red.apply, buf, plans[v], in_place=True))
                    best[v]["mask"] = min(best[v]["mask"], t)
            for v in variants:
                cost[v]["plan"] += best[v]["plan"]
                cost[v]["mask"] += best[v]["mask"]
                cost[v]["regions"] += regions_per_frame(variants[v], frames, plans[v]) * len(frames)
            if not same_boxes(plans["before"], plans["after"]) or not same_boxes(plans["label"], plans["after"]):
                print(f"{name}: FILL DIFFERS before/after", flush=True)
                ok = False
            for i in range(len(frames)):
                cov_b = base.coverage(frames.shape[1:3], plans["before"][i])
                cov_a = now.coverage(frames.shape[1:3], plans["after"][i])
                changed = (outs["after"][i] != frames[i]).any(axis=2)
                if (cov_b & ~cov_a).any() or (changed & ~cov_a).any():
                    print(f"{name} frame {i}: coverage lost ({int((cov_b & ~cov_a).sum())} px) or pixels "
                          f"changed outside it ({int((changed & ~cov_a).sum())} px)", flush=True)
                    ok = False
                if (cov_a & ~cov_b).any():
                    print(f"{name} frame {i}: {int((cov_a & ~cov_b).sum())} px more masked than before", flush=True)
        for v in variants:
            rows.append((name, v, cost[v]["plan"] / n_frames, cost[v]["mask"] / n_frames, cost[v]["regions"] / n_frames))
    print(f"\nCPU-s per frame, best of {args.rounds} per chunk (baseline {args.baseline}, this tree)")
    print(f"{'source':8} {'code':7} {'plan':>8} {'mask':>8} {'plan+mask':>10} {'regions/frame':>14}")
    for name, v, p, m, r in rows:
        print(f"{name:8} {v:7} {p:8.4f} {m:8.4f} {p + m:10.4f} {r:14.1f}")
    print("fill identical, coverage kept" if ok else "CHECKS FAILED")
    return 0 if ok else 1


def cmd_coverage(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from operators import evalcache
    from operators.evaldata import default_eval_dir
    from operators.evalrun import dataset_names
    from operators.evaluation import Scorer, load_items

    cfg = RedactionConfig(classes=("face", "plate"), detect_every=1).validate()  # veilstream eval's
    comps, th = evalcache.components(cfg), evalcache.thresholds(cfg)
    plan_cfg = replace(cfg, face_threshold=None, person_threshold=None, text_threshold=None)
    now = Redactor(plan_cfg, detectors={})
    base_anon = load_at(args.baseline, "anonymize.py", "_base_anonymize")
    orig = redactor_mod.make_anonymizer
    redactor_mod.make_anonymizer = base_anon.make_anonymizer
    try:
        base = Redactor(plan_cfg, detectors={})
    finally:
        redactor_mod.make_anonymizer = orig
    ok = True
    for ds in dataset_names(args.sets):
        items = load_items(ds, default_eval_dir())
        cache = evalcache.DetectionCache(ROOT / "out" / "eval_cache", ds, items, progress=sys.stderr.isatty())
        if args.stale_ok:
            def newest(comp: Any, _own: Any = cache._path, _n: int = len(items)) -> Path | None:
                path = _own(comp)
                if path is None or path.is_file():
                    return path
                found = sorted(path.parent.glob(f"{comp.key}-*-n{_n}.npz"), key=lambda q: q.stat().st_mtime)
                return found[-1] if found else path
            cache._path = newest  # type: ignore[method-assign]
        cached = cache.get(comps)
        assert cache.hw is not None
        small = cfg.text_full_min_side
        differ = total = 0
        scorer = Scorer(ds)
        for i, item in enumerate(items):
            hw = cache.hw[i]
            th_i = th if not (small and "text_crops" in cached and max(hw) < small) else \
                {k: v for k, v in th.items() if k != "text_full"}
            boxes = now.plan_from([evalcache.combine(cached, th_i, i)], [], hw,
                                  dark=functools.partial(evalcache._image_is_dark, item))[0]
            a, b = base.coverage(hw, boxes), now.coverage(hw, boxes)
            differ += int((a != b).sum())
            total += a.size
            scorer.add(item, b, sources=now.coverage_by_source(hw, boxes))
        rep = scorer.report()
        ok &= differ == 0
        leaks = {c.cls: f"{c.leaked}/{c.targets}" for c in rep.classes if c.targets}
        print(f"{ds}: {len(items)} images, {differ} of {total} pixels masked differently; "
              f"leaked {leaks}, masked area {rep.masked_area_share:.4f}", flush=True)
    print("coverage identical on every set" if ok else "COVERAGE DIFFERS")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("detect")
    d.add_argument("--sources", default="crowd,bench")
    m = sub.add_parser("measure")
    m.add_argument("--sources", default="crowd,bench")
    m.add_argument("--baseline", default=BASELINE)
    m.add_argument("--rounds", type=int, default=3)
    c = sub.add_parser("coverage")
    c.add_argument("--sets", default="all")
    c.add_argument("--baseline", default=BASELINE)
    c.add_argument("--stale-ok", action="store_true")
    args = p.parse_args(argv)
    return {"detect": cmd_detect, "measure": cmd_measure, "coverage": cmd_coverage}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
