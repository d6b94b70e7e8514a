"""load_tests/contained_boxes.py: a box is "contained" only when every pixel its masker writes
for it is written for another kept box of the same label (ellipses included)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load_tests"))
from contained_boxes import contained, drop_contained  # noqa: E402

from load_tests.mask_cost import config  # noqa: E402  (contained_boxes put the repo on the path)
from operators.redactor import Redactor  # noqa: E402
from operators.types import Boxes, Label  # noqa: E402


def _boxes(rows: list[tuple[float, float, float, float]], label: Label = Label.FACE) -> Boxes:
    return Boxes(np.asarray(rows, np.float32).reshape(-1, 4), np.full(len(rows), 0.9, np.float32),
                 np.full(len(rows), int(label), np.int16))


def test_contained_needs_every_masked_pixel_covered():
    red = Redactor(config(), detectors={})
    face, hw = red._maskers[int(Label.FACE)], (240, 320)
    assert face.spec.shape == "ellipse"
    assert contained(face, hw, _boxes([])).tolist() == []
    assert contained(face, hw, _boxes([(10, 10, 50, 50)])).tolist() == [False]
    big = (100, 60, 220, 200)
    # the centre of the big ellipse: contained; the corner of its padded box (inside the
    # rectangle, outside the ellipse): not; the big one itself never
    assert contained(face, hw, _boxes([big, (150, 115, 170, 140)])).tolist() == [False, True]
    assert contained(face, hw, _boxes([big, (78, 34, 88, 44)])).tolist() == [False, False]
    # of two identical boxes exactly one goes
    assert contained(face, hw, _boxes([big, big])).tolist() == [False, True]
    # a rectangle masker (plates): the corner box is inside
    plate = red._maskers[int(Label.PLATE)]
    assert plate.spec.shape == "rect"
    assert contained(plate, hw, _boxes([big, (78, 34, 88, 44)], Label.PLATE)).tolist() == [False, True]


def test_dropping_contained_boxes_keeps_what_is_masked():
    red = Redactor(config(), detectors={})
    hw = (240, 320)
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 260, (60, 2))
    wh = rng.uniform(4, 60, (60, 2))
    rows = [tuple(v) for v in np.hstack([xy, xy + wh])]
    boxes = Boxes.concat([_boxes(rows[:40]), _boxes(rows[40:], Label.PLATE)])
    kept = drop_contained(red, hw, boxes)
    assert 0 < len(kept) < len(boxes)
    np.testing.assert_array_equal(red.coverage(hw, kept), red.coverage(hw, boxes))
