"""Temporal fill that follows motion, measured on the moving-camera clips of ``veilstream eval
--as-video`` (issue 20, item 3; docs/quality.md "Video: moving-camera clips").

    .venv/bin/python load_tests/video_fill.py detect [--sets all] [--limit 8]
    .venv/bin/python load_tests/video_fill.py score --sets faces_wider_hard \\
        --variants '[{"name": "old"}, {"name": "new", "motion": true}]' [--every 4,8]

``detect`` builds each clip exactly as the video eval does (the same images, ``subset`` of
``--limit``; :func:`operators.evalvideo.clip_from_image`, H.264 round trip), runs the eval
config's detectors on every frame once and caches the raw detections and the clip's camera
motion (:func:`operators.motion.estimate_camera_motion`, with its CPU time) under
``out/video_fill``. ``score`` re-plans every cached clip per variant and ``--every`` like
:func:`operators.evalvideo.run_video_eval` (scheduled frames only, ``Redactor.plan_from``)
and scores each frame; a variant is ``fill_gaps`` keyword arguments (``grow_followed``,
``coast``: an int or ``{"label": n}``, ``follow_velocity``) plus ``"motion": true`` to give
the fill the clip's camera motion (``false``/absent: the fill in place, as before), or
``"motion": {"levels": 2, ...}`` to give it the motion estimated on the clip (rebuilt as
``detect`` builds it) with those :class:`operators.motion.MotionSettings` (``{}``: the
defaults; cached per clip and settings beside the detections). Prints leaked target-frames per
class and the masked area, per set, variant and rate.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import operators.redactor as redactor_mod  # noqa: E402
import operators.temporal as temporal  # noqa: E402
from operators.evalrun import dataset_names, eval_config  # noqa: E402
from operators.evaluation import Scorer, load_items, subset  # noqa: E402
from operators.evalvideo import clip_from_image, h264_roundtrip  # noqa: E402
from operators.motion import CameraMotion, MotionSettings, estimate_camera_motion  # noqa: E402
from operators.redactor import Redactor  # noqa: E402
from operators.temporal import detection_schedule  # noqa: E402
from operators.video import read_image  # noqa: E402
from pipeline.cli import build_parser  # noqa: E402

CACHE = ROOT / "out" / "video_fill"  # --cache
SHOWN = ("face", "face_ge20", "face_lt20", "plate", "person")


def _cfg() -> Any:
    return eval_config(build_parser().parse_args(["eval", "all", "--as-video"]))


def _eval_dir() -> Path:
    return Path(os.environ.get("VEILSTREAM_EVAL_DIR", ROOT.parent / "shared" / "eval"))


def detect(sets: tuple[str, ...], limit: int) -> None:
    red = Redactor(replace(_cfg(), detect_every=1))
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        for ds in sets:
            for k, item in enumerate(subset(load_items(ds, _eval_dir()), limit)):
                path = CACHE / f"{ds}_{limit}_{k}.pkl"
                if path.exists():
                    continue
                frames, _ = clip_from_image(read_image(item.image_path))
                frames = h264_roundtrip(frames, Path(td))
                t0 = time.process_time()
                raw, failed, _errors = red.detect_many([frames])[0]
                t1 = time.process_time()
                motion = estimate_camera_motion(frames)
                t2 = time.process_time()
                path.write_bytes(pickle.dumps({"raw": raw, "failed": failed, "motion": motion,
                                               "hw": tuple(int(x) for x in frames.shape[1:3]),
                                               "detect_cpu_s": t1 - t0, "motion_cpu_s": t2 - t1}))
                n = len(frames)
                print(f"{ds} #{k}: detection {(t1 - t0) / n * 1000:.0f} cpu-ms/frame, camera motion "
                      f"{(t2 - t1) / n * 1000:.1f} cpu-ms/frame, estimated on {motion.ok.mean():.0%} of pairs",
                      flush=True)


_CLIP: dict[Path, Any] = {}
"""The last clip rebuilt (one clip's frames at a time)."""


def motion_for(ds: str, limit: int, k: int, image_path: Path, settings: dict[str, Any]) -> CameraMotion:
    """The camera motion of clip ``k`` estimated with ``settings``, cached beside its detections."""
    key = "_".join(f"{a}-{settings[a]}" for a in sorted(settings)) or "default"
    path = CACHE / f"{ds}_{limit}_{k}.motion_{key}.pkl"
    if path.exists():
        out: CameraMotion = pickle.loads(path.read_bytes())
        return out
    if image_path not in _CLIP:
        _CLIP.clear()
        with tempfile.TemporaryDirectory() as td:
            _CLIP[image_path] = h264_roundtrip(clip_from_image(read_image(image_path))[0], Path(td))
    out = estimate_camera_motion(_CLIP[image_path], MotionSettings(**settings))
    path.write_bytes(pickle.dumps(out))
    return out


def score(sets: tuple[str, ...], limit: int, variants: list[dict[str, Any]], everies: list[int]) -> None:
    cfg = _cfg()
    fill = temporal.fill_gaps
    for ds in sets:
        scorers = {(v["name"], n): Scorer(ds, person_class="person" in cfg.classes) for v in variants for n in everies}
        planners = {n: Redactor(replace(cfg, detect_every=n), detectors={}) for n in everies}
        for k, item in enumerate(subset(load_items(ds, _eval_dir()), limit)):
            path = CACHE / f"{ds}_{limit}_{k}.pkl"
            if not path.exists():
                raise SystemExit(f"{path} missing: run `detect` first")
            d = pickle.loads(path.read_bytes())
            _, affines = clip_from_image(read_image(item.image_path))
            for v in variants:
                kw = {a: b for a, b in v.items() if a not in ("name", "motion")}
                if isinstance(kw.get("coast"), dict):
                    kw["coast"] = {int(a): int(b) for a, b in kw["coast"].items()}
                if isinstance(v.get("motion"), dict):
                    motion = motion_for(ds, limit, k, item.image_path, v["motion"])
                else:
                    motion = d["motion"] if v.get("motion") else None

                def patched(per_frame: Any, window: int = 2, *, _m: Any = motion, _kw: Any = kw, **rest: Any) -> Any:
                    rest.pop("frames", None)
                    return fill(per_frame, window=window, motion=_m, **_kw, **rest)

                redactor_mod.fill_gaps = patched  # type: ignore[assignment]
                for n in everies:
                    sched = detection_schedule(len(d["raw"]), n)
                    raw_n = [b if s else None for b, s in zip(d["raw"], sched)]
                    planned = planners[n].plan_from(raw_n, [f for f in d["failed"] if sched[f]], d["hw"])
                    for i, (b, a) in enumerate(zip(planned, affines)):
                        scorers[(v["name"], n)].add(item, planners[n].coverage(d["hw"], b), affine=a, frame=f"{k}#{i}")
        redactor_mod.fill_gaps = fill
        for (name, n), sc in scorers.items():
            rep = sc.report()
            cls = {c.cls: f"{c.leaked}/{c.targets}" for c in rep.classes if c.cls in SHOWN and c.targets}
            print(json.dumps({"dataset": ds, "variant": name, "every": n, "leaked": cls,
                              "masked_area": round(rep.masked_area_share, 4)}), flush=True)


def main() -> None:
    global CACHE
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("detect", "score"))
    p.add_argument("--sets", default="all")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--variants", default='[{"name": "old"}, {"name": "new", "motion": true}]')
    p.add_argument("--every", default="4,8")
    p.add_argument("--cache", default=str(CACHE), help="folder of the cached detections (default %(default)s)")
    a = p.parse_args()
    CACHE = Path(a.cache)
    sets = dataset_names(a.sets)
    if a.step == "detect":
        detect(sets, a.limit)
    else:
        score(sets, a.limit, json.loads(a.variants), [int(x) for x in a.every.split(",")])


if __name__ == "__main__":
    main()
