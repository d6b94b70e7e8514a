"""load_tests/cadence_coverage.py: a reference box counts as uncovered exactly when less than
min_cover of its pixels (clipped to the frame) are masked; faces and heads split at 20 px wide;
labels that are never masked for a class (person, vehicle, frame) are not reference boxes."""

from __future__ import annotations

import numpy as np
import pytest

from load_tests.cadence_coverage import add_counts, covered_fraction, uncovered_counts
from operators.types import Boxes, Label


def _boxes(rows: list[tuple[float, float, float, float, Label]]) -> Boxes:
    return Boxes(np.asarray([r[:4] for r in rows], np.float32).reshape(-1, 4),
                 np.full(len(rows), 0.9, np.float32), np.asarray([int(r[4]) for r in rows], np.int16))


def test_covered_fraction_counts_the_box_pixels_masked():
    cov = np.zeros((100, 200), bool)
    cov[:, :50] = True
    assert covered_fraction(cov, (0, 0, 50, 10)) == 1.0
    assert covered_fraction(cov, (50, 0, 100, 10)) == 0.0
    assert covered_fraction(cov, (25, 0, 75, 10)) == pytest.approx(0.5)
    # fractional edges round out to whole pixels: [40, 60) -> 10 of 20 columns masked
    assert covered_fraction(cov, (40.5, 0.2, 59.5, 9.9)) == pytest.approx(0.5)


def test_covered_fraction_clips_to_the_frame():
    cov = np.zeros((100, 200), bool)
    cov[:, 190:] = True
    # half the box lies right of the frame: only its 10 in-frame columns count, all masked
    assert covered_fraction(cov, (190, 0, 210, 10)) == 1.0
    cov[:10, :10] = True
    assert covered_fraction(cov, (-10, -10, 10, 10)) == 1.0
    # nothing of the box is in the frame: nothing of it is shown
    assert covered_fraction(cov, (300, 300, 320, 320)) == 1.0
    assert covered_fraction(np.zeros((100, 200), bool), (10, 10, 10, 20)) == 1.0


def test_uncovered_counts_by_label_and_size():
    cov = np.zeros((100, 200), bool)
    cov[:, :100] = True
    ref = _boxes([
        (0, 0, 30, 30, Label.FACE),        # covered, >= 20 px
        (100, 0, 130, 30, Label.FACE),     # uncovered, >= 20 px
        (110, 40, 120, 50, Label.FACE),    # uncovered, < 20 px
        (91, 0, 101, 10, Label.HEAD),      # 9 of 10 columns masked: exactly 0.9, covered
        (92, 20, 102, 30, Label.PLATE),    # 8 of 10: uncovered
        (0, 50, 50, 90, Label.PLATE_REGION),
        (150, 50, 190, 90, Label.LOOSE_TEXT),
        (100, 0, 200, 100, Label.PERSON),  # never a reference box
        (100, 0, 200, 100, Label.VEHICLE),
        (0, 0, 200, 100, Label.FRAME),
    ])
    got = uncovered_counts(ref, cov, 0.9)
    assert got == {"face": [3, 2], "face_ge20": [2, 1], "face_lt20": [1, 1], "head": [1, 0], "head_lt20": [1, 0],
                   "plate": [1, 1], "plate_region": [1, 0], "loose_text": [1, 1]}
    assert uncovered_counts(ref, cov, 0.8)["plate"] == [1, 0]
    assert uncovered_counts(Boxes.empty(), cov, 0.9) == {}


def test_add_counts_sums_per_key():
    into = {"face": [3, 1]}
    add_counts(into, {"face": [2, 2], "plate": [1, 0]})
    assert into == {"face": [5, 3], "plate": [1, 0]}
