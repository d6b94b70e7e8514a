"""`make load LOAD_ARGS="--source crowd"`: the crowded 720p load source is deterministic."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load_tests"))
from crowd_source import MAX_FACES, MIN_FACES, crowd_frames, crowd_images  # noqa: E402

from tests.shared import EVAL  # noqa: E402


def test_crowd_images_are_crowded_and_chosen_by_name():
    import json

    images = crowd_images(EVAL)
    assert len(images) == 6 and [p.name for p in images] == sorted(p.name for p in images)
    faces = {im["file"]: len(im["boxes"]) for im in
             json.loads((EVAL / "faces_wider_hard" / "labels.json").read_text())["images"]}
    assert all(MIN_FACES <= faces[p.name] <= MAX_FACES for p in images)


def test_crowd_frames_pan_and_zoom_deterministically():
    images = crowd_images(EVAL)[:2]
    a = list(crowd_frames(images, fps=3, seconds=1.0, width=160, height=90))
    b = list(crowd_frames(images, fps=3, seconds=1.0, width=160, height=90))
    assert len(a) == 6 and all(f.shape == (90, 160, 3) and f.dtype == np.uint8 for f in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[2])  # the view moves within an image
    assert float(np.abs(a[2].astype(int) - a[3].astype(int)).mean()) > 10  # the next image
