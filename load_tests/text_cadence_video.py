"""The full-frame text pass cadence (``RedactionConfig.text_full_every``) on the moving-camera
video eval (issue "Throughput", item 2).

    VEILSTREAM_MODEL_DIR=../shared/models .venv/bin/python load_tests/text_cadence_video.py \\
        [--sets plates_traffic,plates_eu,faces_wider_hard,coco_val2017] [--every 4,8] \\
        [--full-every 1,2,3] [--limit 8] [--json-out out/text_cadence_video.json]

The clips, labels and scoring are ``veilstream eval --as-video``'s (``operators/evalvideo.py``:
25-frame H.264 clips of a zooming, panning camera made from each image; ``--limit`` images
spread over each set). Unlike that eval, detection runs per schedule: for each
``--detect-every`` N the scheduled frames of a clip go through the detectors as the one call
``Redactor.detect_many`` makes of a chunk, so the vehicle-crop pass's carry and reuse see what
the pipeline's call sees. Within one N every cadence shares the first-stage detectors (faces,
YOLOX), the vehicle-crop pass and one full-frame text pass on every scheduled frame; cadence M
composes each frame's text boxes as ``TextDetector.detect_given(..., full_from=...)`` does
(the full-pass boxes of ``text_full_sources``' source frame, moved with the camera motion as
``TextDetector.full_carry_motion`` moves them, then the frame's own crop boxes; ``--in-place``
adds each cadence with the boxes kept where they were, as ``Mp``), so the cadences differ by the cadence alone. The composition is checked once against
``Redactor.detect_many`` with ``text_full_every`` M on the first clip (``--no-check`` skips it).

Prints leaked target-frames and masked area per set, class, N and M, the full pass's share of
detection CPU (process CPU-s, every thread; the machine may be shared: read ratios), then one
JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.evaluation import Scorer, load_items, subset  # noqa: E402
from operators.evalvideo import clip_from_image, h264_roundtrip  # noqa: E402
from operators.redactor import RedactionConfig, Redactor, text_full_sources  # noqa: E402
from operators.temporal import detection_schedule  # noqa: E402
from operators.types import Boxes  # noqa: E402
from operators.video import read_image  # noqa: E402


def split_passes(red: Redactor, batch: np.ndarray) -> tuple[list[list[Boxes]], list[Boxes], list[Boxes], dict[str, float]]:
    """First-stage detectors' boxes (per detector, per frame, in ``run_detectors``' order), the
    full-frame text pass and the vehicle-crop pass on ``batch``, and the CPU-s of each part."""
    cpu: dict[str, float] = {}
    first: list[list[Boxes]] = []
    t = time.process_time()
    for _k, d in red.detectors.items():
        if not hasattr(d, "detect_given"):
            first.append(list(d.detect(batch)))
    cpu["first_stage"] = time.process_time() - t
    priors = [Boxes.concat([r[i] for r in first]) for i in range(len(batch))]
    text: Any = red.detectors["text"]
    t = time.process_time()
    if text.crops and text.full_min_side is not None and max(batch.shape[1:3]) < text.full_min_side:
        full = [Boxes.empty() for _ in range(len(batch))]
    else:
        full = list(text.detect(batch))
    cpu["text_full"] = time.process_time() - t
    t = time.process_time()
    crops = list(text.detect_crops(batch, priors)) if text.crops else [Boxes.empty() for _ in range(len(batch))]
    cpu["text_crops"] = time.process_time() - t
    return first, full, crops, cpu


def compose(first: list[list[Boxes]], full: list[Boxes], crops: list[Boxes], every: int,
            batch: np.ndarray | None = None) -> list[Boxes]:
    """Per scheduled frame, what ``detect_many`` returns with ``text_full_every`` ``every``:
    with ``batch``, carried boxes follow the camera motion (``TextDetector.full_carry_motion``,
    the default), without it they stay in place."""
    from operators.detectors.text import _follow_camera

    src = text_full_sources(len(full), every)
    carried = [full[src[p]] if batch is None or src[p] == p else _follow_camera(batch, src[p], p, full[src[p]])
               for p in range(len(full))]
    return [Boxes.concat([*(r[p] for r in first), Boxes.concat([carried[p], crops[p]])]) for p in range(len(full))]


def same(a: Boxes, b: Boxes) -> bool:
    return (a.xyxy.shape == b.xyxy.shape and np.allclose(a.xyxy, b.xyxy, atol=1e-3)
            and np.array_equal(a.label, b.label) and np.allclose(a.score, b.score, atol=1e-4))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="plates_traffic,plates_eu,faces_wider_hard,coco_val2017")
    ap.add_argument("--every", default="4,8", help="--detect-every values")
    ap.add_argument("--full-every", default="1,2,3", help="text_full_every values (the first is the baseline)")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--eval-dir", default=os.environ.get("VEILSTREAM_EVAL_DIR", str(ROOT.parent / "shared" / "eval")))
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--in-place", action="store_true",
                    help="also score each cadence > 1 with carried boxes kept in place (as Mp; "
                         "TextDetector.full_carry_motion=False)")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    everies = [int(x) for x in args.every.split(",")]
    cadences: list[Any] = [int(x) for x in args.full_every.split(",")]
    if args.in_place:
        cadences += [f"{m}p" for m in cadences if m > 1]
    base = RedactionConfig(model_dir=os.environ.get("VEILSTREAM_MODEL_DIR"))
    red = Redactor(replace(base, detect_every=1))
    planners = {n: Redactor(replace(base, detect_every=n), detectors={}) for n in everies}
    checked = args.no_check
    results: list[dict[str, Any]] = []
    cpu_tot = {"first_stage": 0.0, "text_full": 0.0, "text_crops": 0.0}
    runs_tot = {m: 0 for m in cadences}
    frames_tot = 0
    with tempfile.TemporaryDirectory(prefix="veil-cadence-") as td:
        for ds in args.sets.split(","):
            items = subset(load_items(ds, Path(args.eval_dir)), args.limit)
            scorers = {(n, m): Scorer(ds) for n in everies for m in cadences}
            for k, item in enumerate(items):
                img = read_image(item.image_path)
                frames, affines = clip_from_image(img)
                frames = h264_roundtrip(frames, Path(td))
                hw = (int(frames.shape[1]), int(frames.shape[2]))
                for n in everies:
                    sched = [i for i, s in enumerate(detection_schedule(len(frames), n)) if s]
                    first, full, crops, cpu = split_passes(red, frames[sched])
                    for key in cpu_tot:
                        cpu_tot[key] += cpu[key]
                    frames_tot += len(sched)
                    for m in cadences:
                        mm = int(str(m).rstrip("p"))
                        runs_tot[m] += len(set(text_full_sources(len(sched), mm)))
                        follows = red.detectors["text"].full_carry_motion and not str(m).endswith("p")  # type: ignore[attr-defined]
                        det = compose(first, full, crops, mm, frames[sched] if follows else None)
                        if not checked and isinstance(m, int):
                            ref = Redactor(replace(base, detect_every=n, text_full_every=m),
                                           detectors=red.detectors).detect_many([frames])[0][0]
                            got = [b for b in ref if b is not None]
                            assert len(got) == len(det) and all(same(a, b) for a, b in zip(got, det)), \
                                f"composition differs from detect_many at every {n}, text_full_every {m}"
                        raw: list[Boxes | None] = [None] * len(frames)
                        for p, i in enumerate(sched):
                            raw[i] = det[p]
                        planned = planners[n].plan_from(raw, [], hw, frames=frames)
                        for i, (b, a) in enumerate(zip(planned, affines)):
                            scorers[(n, m)].add(item, planners[n].coverage(hw, b), affine=a,
                                                frame=f"{Path(item.image_path).name}#{i}")
                    checked = True
                print(f"{ds}: clip {k + 1}/{len(items)}", file=sys.stderr, flush=True)
            for n in everies:
                for m in cadences:
                    rep = scorers[(n, m)].report()
                    results.append({"dataset": ds, "detect_every": n, "text_full_every": m,
                                    "masked_area": round(rep.masked_area_share, 4),
                                    "classes": {c.cls: [c.leaked, c.targets] for c in rep.classes if c.targets},
                                    "leaks": sorted({lk["image"] for lk in rep.leaks})})
    print(f"as video: {args.limit} clips per set; leaked target-frames / target-frames; masked share of all frames")
    print(f"{'dataset':<17}{'class':<14}" + "".join(f"{f'e{n} full/{m}':>16}" for n in everies for m in cadences))
    for ds in args.sets.split(","):
        rows = {(r["detect_every"], r["text_full_every"]): r for r in results if r["dataset"] == ds}
        classes = list(next(iter(rows.values()))["classes"])
        for c in classes:
            cells = ["{}/{}".format(*rows[(n, m)]["classes"].get(c, [0, 0])) for n in everies for m in cadences]
            print(f"{ds:<17}{c:<14}" + "".join(f"{x:>16}" for x in cells))
        print(f"{ds:<17}{'masked area':<14}" + "".join(
            f"{rows[(n, m)]['masked_area']:>15.1%} " for n in everies for m in cadences))
    share = {str(m): runs_tot[m] / max(1, frames_tot) for m in cadences}
    det_cpu = sum(cpu_tot.values())
    print(f"detection CPU-s (process, all threads) over {frames_tot} detected frames: "
          + ", ".join(f"{k} {v:.1f}" for k, v in cpu_tot.items())
          + "; full pass runs on " + ", ".join(f"M={m}: {share[str(m)]:.0%}" for m in cadences)
          + " of detected frames -> detection CPU x"
          + ", ".join(f"{(det_cpu - cpu_tot['text_full'] * (1 - share[str(m)])) / det_cpu:.2f} (M={m})" for m in cadences))
    doc = {"limit": args.limit, "detect_every": everies, "text_full_every": cadences, "results": results,
           "cpu_s": cpu_tot, "detected_frames": frames_tot, "full_pass_share": share}
    print(json.dumps(doc))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
