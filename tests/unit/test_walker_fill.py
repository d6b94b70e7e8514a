"""A face walking across a static camera between scheduled detections (issue: kill_ingest leak).

The fault harness's ``kill_ingest`` scenario stored two unmasked faces of bikes.mp4 (cam-b):
frames 30 and 43 of the clip, frames 5 and 18 of its second 1 s chunk at ``detect_every`` 4.
A man walks right at 17-33 px a frame (about half his face's width); CenterFace finds him on
the scheduled frames 8, 12 and 16 only: the shot cuts to him on frame 5 (a cut between frames 4 and 5:
nothing on frame 4) and he walks out of the picture's right edge before frame 20. Each of those frames has a detection on one
side of the gap only, so no pair is interpolated, and the box carried from the one side stays
where the face was (grown 2 % per side per frame on a camera whose motion is estimated) while
the face walks out of it. The boxes below are CenterFace's on that chunk (every frame
detected, rounded): the scheduled ones are the input, the others where the face really is.
"""

from __future__ import annotations

import numpy as np

from operators.redactor import RedactionConfig, Redactor
from operators.temporal import detection_schedule
from operators.types import Boxes, Label

H, W, N = 272, 640, 25

DETECTED = {8: [307, 12, 361, 87], 12: [387, 12, 447, 87], 16: [499, 10, 559, 89]}
"""Scheduled frames (every 4th) where CenterFace found the face; 0, 4, 20 and 24: no face."""

TRUTH = {5: [263, 14, 315, 85], 6: [275, 12, 329, 86], 7: [290, 11, 346, 88], 9: [325, 12, 381, 86],
         13: [412, 11, 471, 88], 17: [535, 9, 595, 89], 18: [567, 9, 629, 90], 19: [601, 9, 640, 81]}
"""Where the face is on frames that were not detected (CenterFace with every frame detected)."""


def _static_clip() -> np.ndarray:
    """A textured picture that does not move: the camera motion is estimated (identity)."""
    import cv2

    rng = np.random.default_rng(7)
    img = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (0, 0), 3)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
    return np.repeat(img[None], N, axis=0)


def _covered(r: Redactor, boxes: Boxes, face: list[int]) -> float:
    x0, y0, x1, y1 = face
    return float(r.coverage((H, W), boxes)[y0:y1, x0:x1].mean())


def test_face_walking_in_and_out_between_detections_stays_masked():
    r = Redactor(RedactionConfig(classes=("face",), detect_every=4), detectors={})
    raw: list[Boxes | None] = [
        (Boxes.of([DETECTED[i]], [0.9], Label.FACE) if i in DETECTED else Boxes.empty()) if s else None
        for i, s in enumerate(detection_schedule(N, 4))]
    planned = r.plan_from(raw, [], (H, W), frames=_static_clip())
    covered = {i: round(_covered(r, planned[i], face), 3) for i, face in TRUTH.items()}
    # the whole face is masked on every frame the face is in, one side of a gap or both
    assert min(covered.values()) >= 0.97, covered
