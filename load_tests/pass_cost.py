"""Where detection's CPU goes, per pass, per detected frame (issue "Throughput", item 2).

    .venv/bin/python load_tests/pass_cost.py [--rounds 3] [--setting NAME:KEY=VALUE,...]

For each camera kind, the frames ``Redactor.detect`` would detect in one 2 s chunk (every
``detect_every``-th plus the last), as one call:

* ``carphone 176x144``: the demo's two small cameras (``carphone_pristine.mp4``, every 8th);
* ``bikes 640x272``: the demo's street camera (``bikes.mp4``, every 8th);
* ``bikes 320x180``: the same frames resized to 320x180 (a small street camera);
* ``snapshot 320x180``: 16 frames of ``make load``'s 320x180 snapshot source (vtest, no
  vehicles; ``out/load/sources/vtest-320x180-0.5fps.mp4``, left out until ``make load ...
  LOAD_ARGS="--size 320x180"`` built it);
* ``vtest 1280x720``: ``make load``'s default source, its first 2 s chunk (every 4th; left out
  until ``make load`` built ``out/load/sources/vtest-1280x720-15fps.mp4``);
* ``crowd 1280x720``: the crowded load source (``load_tests/crowd_source.py``, every 4th);
* ``bench 1280x720``: ``make bench``'s input (``bigbuckbunny.mp4``, 720p at 25 fps), the
  detected frames of ``veilstream redact``'s first chunk (49 frames, every 4th: 13);
* ``parked 1280x720``: a static street camera: the first ``plates_traffic`` ``ro_*`` dashcam
  frame held still for a chunk of 30 frames (sensor noise of sigma 2 and JPEG q90 per frame,
  every 4th).

Each pass of the default face + plate policy is timed on its own, in process CPU time (every
thread; never wall: the machine is shared): CenterFace, YuNet, YOLOX, the full-frame text pass
and the vehicle-crop text pass (given YOLOX's vehicles of the same frames); ``all`` is
``Redactor.run_detectors`` on the same call (the sum plus the glue). Interleaved rounds in this
one process, median round kept. Settings compare configurations in the same process:
``--setting NAME:KEY=VALUE,...`` where ``KEY`` is a ``RedactionConfig`` field, or ``text.ATTR``
/ ``person.ATTR`` / ``face.ATTR`` for an attribute of a built detector (values as Python
literals); the first setting is the baseline of the ratios. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import ast
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

PASSES = ("centerface", "yunet", "yolox", "text_full", "vehicle_crops", "all")
CROP_COUNTS = ("vehicles", "crops", "searched", "carried", "reused", "crop_mpx")
"""Per call of the vehicle-crop pass (not per frame): YOLOX's vehicle boxes, the crop windows,
the crops searched / carried (plate carry) / reused (lend-once), and the Mpx of zoomed canvases
the net ran on (what its CPU follows: docs/performance.md "Why vtest's vehicle-crop pass costs more than
the crowd's")."""


def _video_frames(path: Path, n: int) -> list[np.ndarray]:
    from operators.video import VideoReader

    got: list[np.ndarray] = []
    with VideoReader(str(path)) as r:
        for chunk in r.chunks(32):
            got.extend(chunk.frames)
            if len(got) >= n:
                break
    return got[:n]


def scheduled(frames: list[np.ndarray], every: int) -> np.ndarray:
    """The frames ``Redactor.detect`` detects in this chunk."""
    from operators.temporal import detection_schedule

    return np.stack([f for f, s in zip(frames, detection_schedule(len(frames), every)) if s])


def cameras(rng_seed: int = 0) -> dict[str, np.ndarray]:
    """Per camera kind, the detected frames of one 2 s chunk (see the module docstring)."""
    import cv2

    from load_tests.crowd_source import build_crowd_clip
    from operators.evaldata import default_eval_dir
    from operators.video import sample_video

    out: dict[str, np.ndarray] = {}
    out["carphone 176x144"] = scheduled(_video_frames(sample_video("carphone_pristine.mp4"), 60), 8)
    out["bikes 640x272"] = scheduled(_video_frames(sample_video("bikes.mp4"), 50), 8)
    out["bikes 320x180"] = np.stack([cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA)
                                     for f in out["bikes 640x272"]])
    snapshot = ROOT / "out" / "load" / "sources" / "vtest-320x180-0.5fps.mp4"
    if snapshot.is_file():
        out["snapshot 320x180"] = np.stack(_video_frames(snapshot, 16))
    vtest = ROOT / "out" / "load" / "sources" / "vtest-1280x720-15fps.mp4"
    if vtest.is_file():  # make load's default source (left out until make load built it)
        out["vtest 1280x720"] = scheduled(_video_frames(vtest, 30), 4)
    crowd = build_crowd_clip(ROOT / "out" / "load" / "sources")
    out["crowd 1280x720"] = scheduled(_video_frames(crowd, 75)[45:75], 4)  # a chunk inside the 2nd image
    out["bench 1280x720"] = scheduled(_video_frames(sample_video("bigbuckbunny.mp4"), 49), 4)
    rng = np.random.default_rng(rng_seed)
    doc = json.loads((default_eval_dir() / "plates_traffic" / "labels.json").read_text())
    names = sorted(im["file"] for im in doc["images"] if im["file"].startswith("ro_"))[:1]
    parked: list[np.ndarray] = []
    for name in names:
        base = cv2.imread(str(default_eval_dir() / "plates_traffic" / "images" / name), cv2.IMREAD_COLOR)
        base = cv2.resize(base, (1280, 720)) if base.shape[:2] != (720, 1280) else base
        for _ in range(30):
            noisy = np.clip(base.astype(np.float32) + rng.normal(0, 2.0, base.shape), 0, 255).astype(np.uint8)
            ok, enc = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 90])
            parked.append(cv2.imdecode(enc, cv2.IMREAD_COLOR))
    out["parked 1280x720"] = scheduled(parked, 4)
    return out


def parse_setting(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``NAME:KEY=VALUE,...`` -> name, RedactionConfig overrides, detector attribute overrides."""
    name, _, rest = spec.partition(":")
    cfg: dict[str, Any] = {}
    attrs: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        k, _, v = part.partition("=")
        try:
            val = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            val = v
        (attrs if "." in k else cfg)[k] = val
    return name, cfg, attrs


def build(cfg: dict[str, Any], attrs: dict[str, Any]) -> Any:
    from operators.redactor import RedactionConfig, Redactor

    red = Redactor(RedactionConfig(classes=("face", "plate"), threads=1, **cfg).validate())
    for k, v in attrs.items():
        det, _, attr = k.partition(".")
        setattr(red.detectors[det], attr, v)
    return red


def passes(red: Any, frames: np.ndarray) -> dict[str, float]:
    """Process CPU seconds of each pass on ``frames`` (one call each), and the vehicle-crop
    pass's ``CROP_COUNTS``."""
    from operators.types import Label

    face, person, text = red.detectors["face"], red.detectors["person"], red.detectors["text"]
    cpu: dict[str, float] = {}
    t0 = time.process_time()
    face.centerface.detect(frames)
    cpu["centerface"] = time.process_time() - t0
    t0 = time.process_time()
    face.yunet.detect(frames)
    cpu["yunet"] = time.process_time() - t0
    t0 = time.process_time()
    pri = person.detect(frames)
    cpu["yolox"] = time.process_time() - t0
    t0 = time.process_time()
    text.detect(frames)
    cpu["text_full"] = time.process_time() - t0
    veh = [b.select(b.label == Label.VEHICLE) for b in pri]
    canvas_px: list[int] = []
    run = text._run
    text._run = lambda blob, session=None: (canvas_px.append(int(blob.shape[0] * blob.shape[1] * blob.shape[2])),
                                            run(blob, session))[1]
    try:
        t0 = time.process_time()
        text.detect_crops(frames, veh)
        cpu["vehicle_crops"] = time.process_time() - t0
    finally:
        del text._run  # the bound method again
    stats = text.last_crop_stats
    cpu.update({"vehicles": sum(len(v) for v in veh), "crops": stats.get("crops", 0),
                "searched": stats.get("searched", 0), "carried": stats.get("carried", 0),
                "reused": stats.get("reused", 0), "crop_mpx": sum(canvas_px) / 1e6})
    t0 = time.process_time()
    red.run_detectors(frames)
    cpu["all"] = time.process_time() - t0
    return cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--setting", action="append", default=[], help="NAME:KEY=VALUE,... (first = baseline)")
    ap.add_argument("--only", default="", help="comma-separated camera kinds (substring match)")
    args = ap.parse_args()
    models = ROOT.parent / "shared" / "models"  # what the Makefile exports
    if models.is_dir():
        os.environ.setdefault("VEILSTREAM_MODEL_DIR", str(models))
    specs = [parse_setting(s) for s in (args.setting or ["defaults:"])]
    cams = cameras()
    if args.only:
        cams = {k: v for k, v in cams.items() if any(s in k for s in args.only.split(","))}
    reds = {name: build(cfg, attrs) for name, cfg, attrs in specs}
    for red in reds.values():  # warm-up: sessions, OpenVINO shape compiles, caches
        for frames in cams.values():
            red.run_detectors(frames)
    rounds: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for cam, frames in cams.items():
            for name, red in reds.items():
                rounds.setdefault((name, cam), []).append(passes(red, frames))
    rows = []
    base = specs[0][0]
    for (name, cam), rs in rounds.items():
        n = len(cams[cam])
        med = {p: statistics.median(r[p] for r in rs) / n for p in PASSES}
        counts = {c: rs[-1][c] for c in CROP_COUNTS}  # the same in every round (deterministic)
        rows.append({"setting": name, "camera": cam, "frames": n, **{p: round(v, 4) for p, v in med.items()},
                     **{c: round(v, 3) for c, v in counts.items()}})
    by = {(r["setting"], r["camera"]): r for r in rows}
    print(f"{'setting':<14} {'camera':<18} " + " ".join(f"{p:>13}" for p in PASSES) + "   vs " + base)
    for r in rows:
        b = by[(base, r["camera"])]
        ratio = r["all"] / b["all"] if b["all"] else float("nan")
        print(f"{r['setting']:<14} {r['camera']:<18} " + " ".join(f"{r[p]:>13.4f}" for p in PASSES)
              + f"   x{ratio:.2f}")
    print("\nvehicle-crop pass, per call: " + ", ".join(CROP_COUNTS))
    for r in rows:
        print(f"{r['setting']:<14} {r['camera']:<18} {r['frames']:>3} frames " + " ".join(
            f"{c}={r[c]:g}" for c in CROP_COUNTS)
              + (f"  ({r['vehicle_crops'] * r['frames'] / r['crop_mpx']:.3f} CPU-s/Mpx)" if r["crop_mpx"] else ""))
    print(json.dumps({"cpu_s_per_detected_frame": rows, "rounds": args.rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
