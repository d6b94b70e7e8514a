"""``veilstream eval``: measure what the product promises, the LEAK RATE.

A target leaks when less than its required share is covered by masked pixels in the
output (definitions in ``shared/eval/README.md``):

* faces_dlib: a labelled face box (tight eyes-nose-mouth) leaks when less than
  ``FACE_BOX_COVERAGE`` of it is masked.
* coco_val2017 faces: a person with the nose and at least one eye labelled is a face
  target; it is protected when the mask covers the nose and every labelled eye. Face size
  is estimated from keypoints (``face_size_px``) so that tiny, unidentifiable faces can
  be reported separately (the target is on faces >= 10 px).
* coco_val2017 persons (only when the person class is masked): leak below 0.8 coverage.
* plates_eu: the share of plates covered at >= 0.8 (the target) and at >= 0.5.

Coverage is computed from :meth:`Redactor.coverage`, i.e. exactly the pixels the
anonymizers replace, not from detector boxes.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .types import Boxes, InputError

FACE_BOX_COVERAGE = 0.8
PLATE_COVERAGE = 0.8
PLATE_COVERAGE_LOW = 0.5
PERSON_COVERAGE = 0.8
MIN_FACE_PX = 10.0
DATASETS = ("faces_dlib", "coco_val2017", "plates_eu")


@dataclass
class ClassReport:
    dataset: str
    cls: str
    targets: int = 0
    leaked: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def leak_rate(self) -> float:
        return self.leaked / self.targets if self.targets else 0.0


@dataclass
class DatasetReport:
    dataset: str
    images: int = 0
    seconds: float = 0.0
    masked_area: list[float] = field(default_factory=list)
    classes: list[ClassReport] = field(default_factory=list)
    leaks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def masked_area_share(self) -> float:
        return float(np.mean(self.masked_area)) if self.masked_area else 0.0


def points_covered(cov: np.ndarray, pts: np.ndarray) -> bool:
    """True when every ``(x, y)`` point lies on a masked pixel (points clipped to the frame)."""
    h, w = cov.shape
    for x, y in np.asarray(pts, np.float64).reshape(-1, 2):
        xi = min(max(int(math.floor(x)), 0), w - 1)
        yi = min(max(int(math.floor(y)), 0), h - 1)
        if not cov[yi, xi]:
            return False
    return True


def box_coverage(cov: np.ndarray, xyxy: Iterable[float]) -> float:
    """Share of the box's pixels (clipped to the frame) that are masked; 1.0 for empty boxes."""
    h, w = cov.shape
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    xa, ya = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
    xb, yb = min(w, int(math.ceil(x2))), min(h, int(math.ceil(y2)))
    if xb <= xa or yb <= ya:
        return 1.0
    return float(cov[ya:yb, xa:xb].mean())


def face_size_px(points: np.ndarray) -> float:
    """Face width estimated from keypoints (nose, eyes, ears; ``(K, 2)``).

    The widest keypoint span times 1.5 (eyes span ~40% of a face's width, ears ~90%),
    and never less than 2.5x the largest nose-to-eye distance.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) < 2:
        return 0.0
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    return float(max(d.max() * 1.5, d[0, 1:].max() * 2.5))


CoverageFn = Callable[[np.ndarray], np.ndarray]
"""Maps a BGR image ``(H, W, 3)`` to its ``(H, W)`` bool mask coverage."""


def evaluate(dataset: str, eval_dir: Path, coverage_fn: CoverageFn, *, person_class: bool = False,
             progress: bool = False) -> DatasetReport:
    """Run ``coverage_fn`` on every image of one data set and count leaks."""
    from . import evaldata
    from .video import read_image

    rep = DatasetReport(dataset)
    items: list[Any]
    if dataset == "faces_dlib":
        items = evaldata.load_faces_dlib(eval_dir / "faces_dlib")
    elif dataset == "coco_val2017":
        items = evaldata.load_coco(eval_dir / "coco_val2017")
    elif dataset == "plates_eu":
        items = evaldata.load_plates_eu(eval_dir / "plates_eu")
    else:
        raise InputError(f"unknown data set {dataset!r}; expected one of {', '.join(DATASETS)} or all")
    face = ClassReport(dataset, "face")
    face_small = ClassReport(dataset, "face_lt_10px")
    plate = ClassReport(dataset, "plate")
    person = ClassReport(dataset, "person")
    plate_low_leaks = 0
    for n, item in enumerate(items):
        img = read_image(item.image_path)
        t0 = time.perf_counter()
        cov = coverage_fn(img)
        rep.seconds += time.perf_counter() - t0
        rep.images += 1
        rep.masked_area.append(float(cov.mean()))
        name = Path(item.image_path).name
        if dataset == "faces_dlib":
            for box in item.face_boxes:
                c = box_coverage(cov, box)
                face.targets += 1
                if c < FACE_BOX_COVERAGE:
                    face.leaked += 1
                    rep.leaks.append({"image": name, "cls": "face", "box": [round(float(v), 1) for v in box],
                                      "coverage": round(c, 3)})
        elif dataset == "coco_val2017":
            heads = item.head_points or item.face_points
            for pts, head in zip(item.face_points, heads):
                # protected = nose and every labelled eye covered; size from all head points
                size = face_size_px(head)
                target = face if size >= MIN_FACE_PX else face_small
                target.targets += 1
                if not points_covered(cov, pts):
                    target.leaked += 1
                    if target is face:
                        rep.leaks.append({"image": name, "cls": "face", "size_px": round(size, 1),
                                          "points": np.round(pts, 1).tolist()})
            if person_class:
                for box in item.person_boxes:
                    person.targets += 1
                    if box_coverage(cov, box) < PERSON_COVERAGE:
                        person.leaked += 1
        else:
            for box in item.plate_boxes:
                c = box_coverage(cov, box)
                plate.targets += 1
                if c < PLATE_COVERAGE:
                    plate.leaked += 1
                    rep.leaks.append({"image": name, "cls": "plate", "coverage": round(c, 3)})
                if c < PLATE_COVERAGE_LOW:
                    plate_low_leaks += 1
        if progress:
            print(f"\r{dataset}: {n + 1}/{len(items)}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    if dataset == "faces_dlib":
        rep.classes = [face]
    elif dataset == "coco_val2017":
        rep.classes = [face, face_small] + ([person] if person_class else [])
    else:
        plate.extra = {"covered_ge_0.8": round(1 - plate.leak_rate, 4),
                       "covered_ge_0.5": round(1 - plate_low_leaks / plate.targets, 4) if plate.targets else 0.0}
        rep.classes = [plate]
    return rep


def report_json(reports: list[DatasetReport], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "settings": settings,
        "datasets": [
            {"dataset": r.dataset, "images": r.images, "fps": round(r.fps, 2),
             "masked_area_share": round(r.masked_area_share, 4),
             "classes": [{**{k: v for k, v in asdict(c).items() if k != "extra"},
                          "leak_rate": round(c.leak_rate, 4), **c.extra} for c in r.classes],
             "leaks": r.leaks}
            for r in reports
        ],
    }


def report_table(reports: list[DatasetReport]) -> str:
    lines = [f"{'dataset':<14} {'class':<13} {'targets':>7} {'leaked':>6} {'leak rate':>9} "
             f"{'masked area':>11} {'fps':>6}"]
    for r in reports:
        for c in r.classes:
            lines.append(f"{r.dataset:<14} {c.cls:<13} {c.targets:>7} {c.leaked:>6} {c.leak_rate:>9.1%} "
                         f"{r.masked_area_share:>11.1%} {r.fps:>6.1f}")
            for k, v in c.extra.items():
                lines.append(f"{'':<14} {'  ' + k:<13} {v:>7.1%}")
    return "\n".join(lines)


def default_eval_dir() -> Path:
    import os

    env = os.environ.get("VEILSTREAM_EVAL_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "eval"


def run_eval(args: Any) -> int:
    """CLI entry for ``veilstream eval``."""
    from .redactor import RedactionConfig, Redactor

    eval_dir = Path(args.eval_dir) if args.eval_dir else default_eval_dir()
    if not eval_dir.is_dir():
        raise InputError(f"eval data folder {str(eval_dir)!r} not found; pass --eval-dir or set VEILSTREAM_EVAL_DIR")
    names = DATASETS if args.dataset == "all" else (args.dataset,)
    for n in names:
        if n not in DATASETS:
            raise InputError(f"unknown data set {n!r}; expected one of {', '.join(DATASETS)} or all")
    cfg = RedactionConfig(classes=tuple(args.classes), style=args.style, detect_every=1,
                          providers=tuple(args.providers) if args.providers else None,
                          model_dir=args.model_dir, face_model=getattr(args, "face_model", "centerface"),
                          **({"face_max_side": args.face_max_side or None}  # type: ignore[arg-type]
                             if getattr(args, "face_max_side", None) is not None else {})).validate()
    redactor = Redactor(cfg)

    def coverage_fn(img: np.ndarray) -> np.ndarray:
        boxes, _failed, _errors, _ms = redactor.plan(img[None])
        return redactor.coverage(img.shape[:2], boxes[0] if boxes else Boxes.empty())

    reports = [evaluate(n, eval_dir, coverage_fn, person_class="person" in cfg.classes,
                        progress=sys.stderr.isatty()) for n in names]
    settings = {"classes": list(cfg.classes), "style": cfg.style, "face_padding": cfg.face_padding,
                "face_model": cfg.face_model, "face_max_side": cfg.face_max_side,
                "models": redactor.model_ids}
    print(report_table(reports))
    doc = report_json(reports, settings)
    print(json.dumps(doc))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=2))
    return 0
