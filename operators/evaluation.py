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
* plates_traffic: a plate leaks below 0.8 box coverage; also by subset (``ro`` MIT dashcam,
  ``kg`` web photos), night, and plate width bucket. The labels of an all-zero frame
  (``tags["blank"]``, see :func:`operators.evaldata.blank_image`) are counted apart as
  ``plate_blank`` and in no rate: the set's README says to leave them out (x / 396).
* faces_wider_hard: a face leaks when less than 0.8 of its central region (box shrunk to
  60 % of width and height) is masked; ``ignore`` faces are not scored; by width bucket
  (< 20, 20-40, 40-80, >= 80 px) and >= 20 / < 20 px.

Coverage is computed from :meth:`Redactor.coverage`, i.e. exactly the pixels the
anonymizers replace, not from detector boxes.

This module is the scoring core (data sets, :class:`Scorer`, reports) and imports no other
``eval*`` module: :mod:`operators.evalcache`, :mod:`operators.evalsweep` and
:mod:`operators.evalvideo` build on it, and :mod:`operators.evalrun` (the ``veilstream eval``
entry) sits on top of all of them.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import evaldata
from .types import InputError

FACE_BOX_COVERAGE = 0.8
PLATE_COVERAGE = 0.8
PLATE_COVERAGE_LOW = 0.5
PERSON_COVERAGE = 0.8
MIN_FACE_PX = 10.0
WIDER_COVERAGE = 0.8
WIDER_CENTRAL_FRAC = 0.6
DATASETS = ("faces_dlib", "coco_val2017", "plates_eu", "plates_traffic", "faces_wider_hard")


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
    masked_area_sum_by_source: dict[str, float] = field(default_factory=dict)
    """Mask source (``Redactor.coverage_by_source``) -> its masked share summed over images."""
    masked_area_only_sum_by_source: dict[str, float] = field(default_factory=dict)
    """Mask source -> the share of the frame only it masks (no other source), summed over images."""

    @property
    def fps(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def masked_area_share(self) -> float:
        return float(np.mean(self.masked_area)) if self.masked_area else 0.0

    @property
    def masked_area_by_source(self) -> dict[str, float]:
        """Mean share of the frame each mask source covers (sources overlap, so these may sum
        to more than :attr:`masked_area_share`), in :data:`SOURCE_ORDER`."""
        n = len(self.masked_area)
        if not n:
            return {}
        known = [k for k in SOURCE_ORDER if k in self.masked_area_sum_by_source]
        rest = sorted(k for k in self.masked_area_sum_by_source if k not in SOURCE_ORDER)
        return {k: self.masked_area_sum_by_source[k] / n for k in known + rest}

    @property
    def masked_area_only_by_source(self) -> dict[str, float]:
        """Mean share of the frame that each mask source alone covers: what the masked area
        would lose without that source's masks (the rest kept), in :data:`SOURCE_ORDER`. These
        and the pixels two or more sources cover sum to :attr:`masked_area_share`."""
        n = len(self.masked_area)
        if not n:
            return {}
        return {k: self.masked_area_only_sum_by_source.get(k, 0.0) / n for k in self.masked_area_by_source}


SOURCE_ORDER = ("face", "head", "plate", "plate_region", "loose_text", "text", "person", "zone", "frame")
"""Mask sources in report order: detected faces, the head fallback, plate boxes, the vehicle
plate fallback, loose text (plate-class text with no vehicle near it), text, persons, privacy
zones, whole frames (fail closed)."""


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


CoverageFn = Callable[[np.ndarray], "np.ndarray | dict[str, np.ndarray]"]
"""Maps a BGR image ``(H, W, 3)`` to its ``(H, W)`` bool mask coverage, or to that coverage
split by mask source (``Redactor.coverage_by_source``; the union is scored)."""


def width_bucket(width: float) -> str:
    """The README's width bucket name for a box ``width`` px wide (< 20, 20-40, 40-80, >= 80)."""
    for hi, name in ((20, "w0_20"), (40, "w20_40"), (80, "w40_80")):
        if width < hi:
            return name
    return "w80_up"


WIDTH_BUCKETS = ("w0_20", "w20_40", "w40_80", "w80_up")


def central_region(xyxy: Iterable[float], frac: float = WIDER_CENTRAL_FRAC) -> list[float]:
    """The box shrunk to ``frac`` of its width and height around its centre."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * frac / 2, (y2 - y1) * frac / 2
    return [cx - hw, cy - hh, cx + hw, cy + hh]


def load_items(dataset: str, eval_dir: Path) -> list[Any]:
    """The :class:`~operators.evaldata.EvalItem` list of one data set."""
    loaders = {"faces_dlib": evaldata.load_faces_dlib, "coco_val2017": evaldata.load_coco,
               "plates_eu": evaldata.load_plates_eu, "plates_traffic": evaldata.load_plates_traffic,
               "faces_wider_hard": evaldata.load_faces_wider}
    if dataset not in loaders:
        raise InputError(f"unknown data set {dataset!r}; expected one of {', '.join(DATASETS)} or all")
    try:
        return loaders[dataset](eval_dir / dataset)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise InputError(f"data set {dataset!r} in {str(eval_dir)!r} unreadable: {exc}") from None


Affine = tuple[float, float, float]
"""``(s, tx, ty)``: a label at ``(x, y)`` is at ``(s*x + tx, s*y + ty)`` on the scored frame."""


def _map_box(box: Iterable[float], a: Affine | None) -> list[float]:
    b = [float(v) for v in box]
    if a is None:
        return b
    s, tx, ty = a
    return [s * b[0] + tx, s * b[1] + ty, s * b[2] + tx, s * b[3] + ty]


def _inside_share(box: list[float], hw: tuple[int, int]) -> float:
    """Share of the box's area inside the frame (labels may leave a panned frame)."""
    x1, y1, x2, y2 = box
    area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    if area <= 0:
        return 0.0
    h, w = hw
    iw = max(0.0, min(x2, w) - max(x1, 0.0))
    ih = max(0.0, min(y2, h) - max(y1, 0.0))
    return iw * ih / area


MIN_INSIDE = 0.5
"""In video scoring a target counts on a frame only when this share of it is in view."""


class Scorer:
    """Counts targets and leaks of one data set, image (or video frame) by image.

    ``add(item, cov)`` scores one coverage mask against the item's labels, mapped by an
    optional :data:`Affine` (the pan/zoom of a video frame made from the image).
    """

    def __init__(self, dataset: str, *, person_class: bool = False) -> None:
        if dataset not in DATASETS:
            raise InputError(f"unknown data set {dataset!r}; expected one of {', '.join(DATASETS)} or all")
        self.dataset = dataset
        self.person_class = person_class
        self.rep = DatasetReport(dataset)
        self.cls: dict[str, ClassReport] = {}
        self.plate_low_leaks = 0

    def _c(self, name: str) -> ClassReport:
        if name not in self.cls:
            self.cls[name] = ClassReport(self.dataset, name)
        return self.cls[name]

    def _count(self, names: Iterable[str], leaked: bool) -> None:
        for n in names:
            c = self._c(n)
            c.targets += 1
            c.leaked += int(leaked)

    def add(self, item: Any, cov: np.ndarray, affine: Affine | None = None, frame: str | None = None,
            sources: dict[str, np.ndarray] | None = None) -> None:
        """Score one frame. ``sources``: its coverage split by mask source
        (:meth:`~operators.redactor.Redactor.coverage_by_source`), for the per-source area."""
        ds = self.dataset
        hw = (int(cov.shape[0]), int(cov.shape[1]))
        scale = affine[0] if affine is not None else 1.0
        name = frame or Path(item.image_path).name
        self.rep.images += 1
        self.rep.masked_area.append(float(cov.mean()))
        by = self.rep.masked_area_sum_by_source
        only = self.rep.masked_area_only_sum_by_source
        if sources:
            # how many sources mask each pixel: those at 1 are the source's own cost
            count = np.zeros(hw, np.uint8)
            for m in sources.values():
                count += np.asarray(m, bool)
            alone = count == 1
            for k, m in sources.items():
                mb = np.asarray(m, bool)
                by[k] = by.get(k, 0.0) + float(mb.mean())
                only[k] = only.get(k, 0.0) + float((mb & alone).mean())
        video = affine is not None
        if ds in ("faces_dlib", "faces_wider_hard"):
            for box in item.face_boxes:
                b = _map_box(box, affine)
                if video and _inside_share(b, hw) < MIN_INSIDE:
                    continue
                if ds == "faces_dlib":
                    c = box_coverage(cov, b)
                    leaked = c < FACE_BOX_COVERAGE
                    names = ["face"]
                else:
                    c = box_coverage(cov, central_region(b))
                    leaked = c < WIDER_COVERAGE
                    width = float(box[2] - box[0])  # bucket by the labelled (source) width
                    names = ["face", "face_ge20" if width >= 20 else "face_lt20", f"face_{width_bucket(width)}"]
                self._count(names, leaked)
                if leaked:
                    self.rep.leaks.append({"image": name, "cls": "face", "box": [round(v, 1) for v in b],
                                           "coverage": round(c, 3)})
        elif ds == "coco_val2017":
            heads = item.head_points or item.face_points
            for pts, head in zip(item.face_points, heads):
                p = np.asarray(pts, np.float64)
                if affine is not None:
                    p = p * scale + np.array([affine[1], affine[2]])
                    if not ((p[:, 0] >= 0) & (p[:, 0] < hw[1]) & (p[:, 1] >= 0) & (p[:, 1] < hw[0])).all():
                        continue
                # protected = nose and every labelled eye covered; size from all head points
                size = face_size_px(head)
                cname = "face" if size >= MIN_FACE_PX else "face_lt_10px"
                leaked = not points_covered(cov, p)
                self._count([cname], leaked)
                if leaked and cname == "face":
                    self.rep.leaks.append({"image": name, "cls": "face", "size_px": round(size, 1),
                                           "points": np.round(p, 1).tolist()})
            if self.person_class:
                for box in item.person_boxes:
                    b = _map_box(box, affine)
                    if video and _inside_share(b, hw) < MIN_INSIDE:
                        continue
                    self._count(["person"], box_coverage(cov, b) < PERSON_COVERAGE)
        else:
            extra = [f"plate_{item.tags['subset']}"] if ds == "plates_traffic" else []
            if ds == "plates_traffic" and item.tags.get("night") == "1":
                extra.append("plate_night")
            blank = item.tags.get("blank") == "1"
            for box in item.plate_boxes:
                b = _map_box(box, affine)
                if video and _inside_share(b, hw) < MIN_INSIDE:
                    continue
                c = box_coverage(cov, b)
                leaked = c < PLATE_COVERAGE
                if blank:  # an all-zero frame: nothing to read, nothing to score (reported apart)
                    self._count(["plate_blank"], leaked)
                    continue
                width = float(box[2] - box[0])
                self._count(["plate", *extra] + ([f"plate_{width_bucket(width)}"] if ds == "plates_traffic" else []),
                            leaked)
                if c < PLATE_COVERAGE_LOW:
                    self.plate_low_leaks += 1
                if leaked:
                    self.rep.leaks.append({"image": name, "cls": "plate", "box": [round(v, 1) for v in b],
                                           "coverage": round(c, 3)})

    def report(self) -> DatasetReport:
        order = {"faces_dlib": ["face"],
                 "coco_val2017": ["face", "face_lt_10px"] + (["person"] if self.person_class else []),
                 "plates_eu": ["plate"],
                 "plates_traffic": ["plate", "plate_ro", "plate_kg", "plate_night",
                                    *(f"plate_{b}" for b in WIDTH_BUCKETS)]
                 + (["plate_blank"] if "plate_blank" in self.cls else []),
                 "faces_wider_hard": ["face", "face_ge20", "face_lt20", *(f"face_{b}" for b in WIDTH_BUCKETS)]}
        self.rep.classes = [self._c(n) for n in order[self.dataset]]
        if self.dataset == "plates_eu":
            plate = self._c("plate")
            plate.extra = {"covered_ge_0.8": round(1 - plate.leak_rate, 4),
                           "covered_ge_0.5": round(1 - self.plate_low_leaks / plate.targets, 4)
                           if plate.targets else 0.0}
        return self.rep


def evaluate(dataset: str, eval_dir: Path, coverage_fn: CoverageFn, *, person_class: bool = False,
             progress: bool = False, limit: int | None = None) -> DatasetReport:
    """Run ``coverage_fn`` on every image of one data set (the first ``limit``) and count leaks."""
    from .video import read_image

    items = subset(load_items(dataset, eval_dir), limit)
    scorer = Scorer(dataset, person_class=person_class)
    for n, item in enumerate(items):
        img = read_image(item.image_path)
        t0 = time.perf_counter()
        got = coverage_fn(img)
        scorer.rep.seconds += time.perf_counter() - t0
        if isinstance(got, dict):  # split by mask source (Redactor.coverage_by_source)
            cov = np.zeros(img.shape[:2], bool)
            for part in got.values():
                cov |= part
            scorer.add(item, cov, sources=got)
        else:
            scorer.add(item, got)
        if progress:
            print(f"\r{dataset}: {n + 1}/{len(items)}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return scorer.report()


def subset(items: list[Any], limit: int | None) -> list[Any]:
    """``limit`` items spread evenly over the set (every k-th), or all of them: a fixed,
    deterministic subset that still mixes the set's sources (ro/kg, day/night, events)."""
    if not limit or limit >= len(items):
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def report_json(reports: list[DatasetReport], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "settings": settings,
        "datasets": [
            {"dataset": r.dataset, "images": r.images, "fps": round(r.fps, 2),
             "masked_area_share": round(r.masked_area_share, 4),
             "masked_area_by_source": {k: round(v, 4) for k, v in r.masked_area_by_source.items()},
             "masked_area_only_by_source": {k: round(v, 4) for k, v in r.masked_area_only_by_source.items()},
             "classes": [{**{k: v for k, v in asdict(c).items() if k != "extra"},
                          "leak_rate": round(c.leak_rate, 4), **c.extra} for c in r.classes],
             "leaks": r.leaks}
            for r in reports
        ],
    }


def report_table(reports: list[DatasetReport]) -> str:
    lines = [f"{'dataset':<16} {'class':<13} {'targets':>7} {'leaked':>6} {'leak rate':>9} "
             f"{'masked area':>11} {'fps':>6}"]
    for r in reports:
        for c in r.classes:
            lines.append(f"{r.dataset:<16} {c.cls:<13} {c.targets:>7} {c.leaked:>6} {c.leak_rate:>9.1%} "
                         f"{r.masked_area_share:>11.1%} {r.fps:>6.1f}")
            for k, v in c.extra.items():
                lines.append(f"{'':<16} {'  ' + k:<13} {v:>7.1%}")
        if r.masked_area_by_source:
            parts = ", ".join(f"{k} {v:.1%}" for k, v in r.masked_area_by_source.items())
            lines.append(f"{r.dataset:<16} masked area by source: {parts} (overlaps count in each)")
            parts = ", ".join(f"{k} {v:.1%}" for k, v in r.masked_area_only_by_source.items())
            lines.append(f"{r.dataset:<16} masked by that source alone: {parts}")
    return "\n".join(lines)
