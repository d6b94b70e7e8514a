"""Would a second face pass on upscaled crops around persons' heads find the faces the
full-frame pass misses, and what would it cost? (issue 20 item 3; docs/quality.md "Face masks
that follow faces").

    .venv/bin/python load_tests/face_crop_probe.py [--dataset faces_wider_hard] [--side 160]
        [--max-upscale 4] [--cache-dir out/eval_cache] [--time-every 4]

For every person YOLOX returns (score >= the head fallback's ``head_min_score``), the head box
the fallback would mask (:func:`operators.head.head_regions`, no faces given), widened by
``PAD`` of its size on each side, is cut out, upscaled to at most ``--side`` px (at most
``--max-upscale`` times) and padded onto a ``--side`` square canvas; CenterFace (threshold
0.05, as in the union) and YuNet (its union threshold) run on the canvases in batches, their
boxes mapped back to the frame as face boxes, scored at each of ``--crop-thresholds``. The data set is then scored (faces + plates, defaults, cached
full-frame detections) without and with those extra face boxes: leaks, faces >= 20 px,
masked area by source (a crop face found on a person suppresses its head box). CPU cost: the
crop pass and the full-frame face pass (CenterFace + YuNet at the defaults) in process CPU
seconds per image, both run in this one process on every ``--time-every``-th image (the
machine may be shared: only the ratio is meaningful). A probe, not a product pass: nothing
here is wired into the redactor.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAD = 0.25


def crops_for(persons, hw, side: int, max_up: float, min_score: float):
    from operators.head import head_regions
    from operators.types import Boxes

    heads = head_regions(persons, Boxes.empty(), hw, min_score=min_score, top_cut=True)
    out = []
    h, w = hw
    for x1, y1, x2, y2 in heads.xyxy.astype(np.float64):
        bw, bh = x2 - x1, y2 - y1
        cx1, cy1 = max(0, int(x1 - PAD * bw)), max(0, int(y1 - PAD * bh))
        cx2, cy2 = min(w, int(np.ceil(x2 + PAD * bw))), min(h, int(np.ceil(y2 + PAD * bh)))
        if cx2 - cx1 < 4 or cy2 - cy1 < 4:
            continue
        s = min(max_up, side / max(cx2 - cx1, cy2 - cy1))
        out.append((cx1, cy1, cx2, cy2, s))
    return out


def run_crops(img, crops, side, dets):
    from operators.types import Boxes, Label

    if not crops:
        return Boxes.empty()
    canv = np.zeros((len(crops), side, side, 3), np.uint8)
    for k, (x1, y1, x2, y2, s) in enumerate(crops):
        rw, rh = max(1, min(side, round((x2 - x1) * s))), max(1, min(side, round((y2 - y1) * s)))
        canv[k, :rh, :rw] = cv2.resize(img[y1:y2, x1:x2], (rw, rh), interpolation=cv2.INTER_LINEAR)
    parts = []
    for det in dets:
        for k, b in enumerate(det.detect(canv)):
            if not len(b):
                continue
            x1, y1, _, _, s = crops[k]
            xyxy = b.xyxy / s + np.array([x1, y1, x1, y1], np.float32)
            parts.append(Boxes(xyxy.astype(np.float32), b.score, np.full(len(b), Label.FACE, np.int16)))
    return Boxes.concat(parts) if parts else Boxes.empty()


def main(argv: list[str] | None = None) -> int:
    from operators import evalcache
    from operators.detectors import CenterFaceDetector, YuNetDetector
    from operators.detectors.faces import YUNET_THRESHOLD
    from operators.evaldata import default_eval_dir
    from operators.evaluation import Scorer, load_items
    from operators.redactor import RedactionConfig, Redactor
    from operators.types import Boxes, Label
    from operators.video import read_image

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="faces_wider_hard")
    p.add_argument("--side", type=int, default=160)
    p.add_argument("--max-upscale", type=float, default=4.0)
    p.add_argument("--cache-dir", type=Path, default=ROOT / "out" / "eval_cache")
    p.add_argument("--time-every", type=int, default=4)
    p.add_argument("--crop-thresholds", default="0.05,0.2,0.45",
                   help="comma-separated: score the crop pass's boxes at each of these (a box needs this score)")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)

    cfg = RedactionConfig(classes=("face", "plate"), detect_every=1).validate()
    comps, th = evalcache.components(cfg), evalcache.thresholds(cfg)
    items = load_items(args.dataset, default_eval_dir())
    cache = evalcache.DetectionCache(args.cache_dir, args.dataset, items)
    cached = cache.get(comps)
    assert cache.hw is not None
    crop_dets = [CenterFaceDetector(threshold=0.05, max_side=None, batch_size=16),
                 YuNetDetector(threshold=YUNET_THRESHOLD, max_side=None, batch_size=16)]
    full_dets = [CenterFaceDetector(threshold=0.05, max_side=cfg.face_max_side),
                 YuNetDetector(threshold=YUNET_THRESHOLD, max_side=cfg.yunet_max_side)]
    plan_cfg = RedactionConfig(**{**cfg.__dict__, "face_threshold": None, "person_threshold": None,
                                  "text_threshold": None})
    red = Redactor(plan_cfg, detectors={})
    cuts = [float(x) for x in args.crop_thresholds.split(",") if x.strip()]
    names = {t: f"+ head-crop pass, its boxes >= {t:g}" for t in cuts}
    scorers = {"full-frame pass (defaults)": Scorer(args.dataset), **{n: Scorer(args.dataset) for n in names.values()}}
    cpu_crop = cpu_full = 0.0
    timed = n_crops = n_found = 0
    for i, item in enumerate(items):
        hw = cache.hw[i]
        raw = evalcache.combine(cached, th, i)
        persons = raw.select(raw.label == Label.PERSON)
        img = read_image(item.image_path)
        crops = crops_for(persons, hw, args.side, args.max_upscale, cfg.head_min_score)
        t0 = time.process_time()
        extra = run_crops(img, crops, args.side, crop_dets)
        t1 = time.process_time()
        n_crops += len(crops)
        n_found += int((extra.score >= min(cuts, default=0.0)).sum())
        if args.time_every and i % args.time_every == 0:
            t2 = time.process_time()
            for d in full_dets:
                d.detect(img[None])
            cpu_full += time.process_time() - t2
            cpu_crop += t1 - t0
            timed += 1
        dark = functools.partial(evalcache._image_is_dark, item)
        variants = [("full-frame pass (defaults)", raw)]
        variants += [(names[t], Boxes.concat([raw, extra.select(extra.score >= t)])) for t in cuts]
        for name, rb in variants:
            boxes = red.plan_from([rb], [], hw, dark=dark)[0]
            sources = red.coverage_by_source(hw, boxes)
            cov = np.zeros(hw, bool)
            for part in sources.values():
                cov |= part
            scorers[name].add(item, cov, sources=sources)
    rows = {}
    for name, sc in scorers.items():
        rep = sc.report()
        cl = {c.cls: [c.leaked, c.targets] for c in rep.classes}
        rows[name] = {"classes": cl, "masked_area": round(rep.masked_area_share, 4),
                      "by_source": {k: round(v, 4) for k, v in rep.masked_area_by_source.items()}}
        ge = f", >= 20 px {cl['face_ge20'][0]}" if "face_ge20" in cl else ""
        print(f"{name}: face leaked {cl['face'][0]}/{cl['face'][1]}{ge}, masked {rep.masked_area_share:.1%} "
              f"({', '.join(f'{k} {v:.1%}' for k, v in rep.masked_area_by_source.items())})")
    per = {"images": len(items), "crops": n_crops, "crop_face_boxes": n_found, "timed_images": timed,
           "cpu_s_per_image_crop_pass": round(cpu_crop / max(timed, 1), 4),
           "cpu_s_per_image_full_face_pass": round(cpu_full / max(timed, 1), 4)}
    print(f"{n_crops} crops on {len(items)} images ({n_crops / len(items):.1f} per image), {n_found} face boxes; "
          f"CPU-s per image (on {timed}): crop pass {per['cpu_s_per_image_crop_pass']}, "
          f"full-frame face pass {per['cpu_s_per_image_full_face_pass']}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"settings": vars(args) | {"cache_dir": str(args.cache_dir),
                                                                       "json_out": str(args.json_out)},
                                             "rows": rows, "cost": per}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
