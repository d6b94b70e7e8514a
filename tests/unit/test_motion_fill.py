"""Temporal fill that follows motion: the camera motion estimate and the boxes it moves.

The fill before operators/motion.py carried boxes in place (grown 5 % per side per frame)
and interpolated only pairs within one box size per frame: a small face moving with a
camera pan leaked on the frames between two detections (docs/quality.md, "Video:
moving-camera clips"). These tests fail on that fill.
"""

import numpy as np
import pytest

from operators.evaluation import box_coverage
from operators.motion import CameraMotion, estimate_camera_motion, warp_xyxy
from operators.temporal import fill_gaps
from operators.types import Boxes, Label

H, W, N = 240, 320, 9
PAN_PX = 12  # camera pans right: the picture moves 12 px left per frame


def _pan_clip(n: int = N, dx: int = PAN_PX) -> np.ndarray:
    """A textured scene (smoothed noise) seen through a camera panning ``dx`` px per frame."""
    rng = np.random.default_rng(7)
    scene = rng.integers(0, 255, (H, W + n * dx, 3), dtype=np.uint8)
    scene = np.asarray(np.repeat(np.repeat(scene[::4, ::4], 4, axis=0), 4, axis=1)[:H, :W + n * dx])
    return np.stack([scene[:, i * dx:i * dx + W] for i in range(n)])


def _covered(boxes: Boxes, xyxy: list[float]) -> float:
    """Share of ``xyxy`` inside the union of ``boxes`` (what the eval scores)."""
    cov = np.zeros((H, W), bool)
    for x0, y0, x1, y1 in boxes.xyxy:
        cov[max(0, int(np.floor(y0))):max(0, int(np.ceil(y1))), max(0, int(np.floor(x0))):max(0, int(np.ceil(x1)))] = True
    return float(box_coverage(cov, np.asarray(xyxy, np.float32)))


def _face_at(frame: int, x0: float = 250.0) -> list[float]:
    """A 10 px face fixed in the scene, where it is on ``frame`` of the pan."""
    x = x0 - PAN_PX * frame
    return [x, 100.0, x + 10.0, 110.0]


def test_camera_pan_is_estimated():
    motion = estimate_camera_motion(_pan_clip())
    assert motion.ok.all()
    m = motion.between(0, 8)
    assert m[0, 2] == pytest.approx(-8 * PAN_PX, abs=1.0) and m[1, 2] == pytest.approx(0.0, abs=1.0)
    assert m[0, 0] == pytest.approx(1.0, abs=0.01)
    back = motion.between(8, 0)
    assert back[0, 2] == pytest.approx(8 * PAN_PX, abs=1.0)


def test_flat_frames_are_not_estimated_and_stay_in_place():
    flat = np.full((4, H, W, 3), 128, np.uint8)
    motion = estimate_camera_motion(flat)
    assert not motion.ok.any() and not motion.reliable(0, 3)
    assert np.allclose(motion.between(0, 3), np.eye(3))
    still = CameraMotion.still(3)
    assert len(still) == 3 and not still.reliable(0, 1)


def test_warp_moves_and_scales_boxes():
    m = np.array([[2.0, 0.0, 5.0], [0.0, 2.0, -1.0], [0.0, 0.0, 1.0]])
    out = warp_xyxy(np.array([[10, 10, 20, 30]], np.float32), m)
    assert out.tolist() == [[25.0, 19.0, 45.0, 59.0]]
    assert warp_xyxy(np.zeros((0, 4), np.float32), m).shape == (0, 4)


def test_camera_pan_moves_all_carried_boxes():
    # Two faces seen on frame 0 only (missed on frame 8): every frame between must still
    # cover both where the pan took them. Carried in place, they leak from frame 2 on.
    clip = _pan_clip()
    faces = [_face_at(0), _face_at(0, x0=200.0)]
    per_frame: list[Boxes | None] = [None] * N
    per_frame[0] = Boxes.of(faces, [0.9, 0.8], Label.FACE)
    per_frame[8] = Boxes.empty()
    out = fill_gaps(per_frame, window=8, frames=clip)
    for i in range(1, 8):
        for x0 in (250.0, 200.0):
            assert _covered(out[i], _face_at(i, x0)) >= 0.9, (i, x0)
    old = fill_gaps(per_frame, window=8)
    assert min(_covered(old[i], _face_at(i)) for i in range(1, 8)) < 0.5


def test_box_moving_with_the_pan_is_covered_between_two_detections():
    # 10 px face, 12 px per frame: 1.2 sizes a frame, beyond the centre-distance match of
    # the fill without motion, so it used to get no interpolated box in between.
    clip = _pan_clip()
    per_frame: list[Boxes | None] = [None] * N
    per_frame[0] = Boxes.of([_face_at(0)], [0.9], Label.FACE)
    per_frame[8] = Boxes.of([_face_at(8)], [0.9], Label.FACE)
    out = fill_gaps(per_frame, window=8, frames=clip)
    assert all(_covered(out[i], _face_at(i)) >= 0.99 for i in range(N))
    old = fill_gaps(per_frame, window=8)
    assert min(_covered(old[i], _face_at(i)) for i in range(N)) < 0.5


def test_face_missed_on_two_scheduled_frames_is_coasted():
    # detect every 4: found on frame 0, missed on 4 and 8; with coast=1 frame 5-7 still
    # get it (moved with the camera); the old rule only reached from frames 4 and 8.
    clip = _pan_clip()
    per_frame: list[Boxes | None] = [None] * N
    per_frame[0] = Boxes.of([_face_at(0)], [0.9], Label.FACE)
    per_frame[4] = Boxes.empty()
    per_frame[8] = Boxes.empty()
    out = fill_gaps(per_frame, window=4, frames=clip, coast=1)
    assert all(_covered(out[i], _face_at(i)) >= 0.9 for i in range(N))
    old = fill_gaps(per_frame, window=4)
    assert _covered(old[6], _face_at(6)) == 0.0


def test_a_static_camera_changes_nothing():
    clip = np.repeat(_pan_clip()[:1], N, axis=0)
    per_frame: list[Boxes | None] = [None] * N
    per_frame[0] = Boxes.of([[100, 100, 120, 130]], [0.9], Label.FACE)
    per_frame[8] = Boxes.of([[104, 100, 124, 130]], [0.9], Label.FACE)
    new = fill_gaps(per_frame, window=8, frames=clip, grow_followed=0.05)
    old = fill_gaps(per_frame, window=8)
    for a, b in zip(new, old):
        assert np.allclose(a.xyxy, b.xyxy, atol=0.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="frames"):
        fill_gaps([Boxes.empty()] * 3, frames=_pan_clip(2))
    with pytest.raises(ValueError, match="coast"):
        fill_gaps([Boxes.empty()], coast=-1)
    with pytest.raises(ValueError, match="grow_followed"):
        fill_gaps([Boxes.empty()], grow_followed=-0.1)


def test_walking_face_missed_on_the_next_detection_follows_its_velocity():
    # Static camera, a 20 px face walking 6 px a frame, detected on frames 0 and 4 and
    # missed on 8: frames 5-8 get the box stretched along the velocity of its last two
    # detections; carried in place (grown 5 % per side per frame) it leaks from frame 6.
    def face(i: int) -> list[float]:
        return [40.0 + 6 * i, 50.0, 60.0 + 6 * i, 70.0]

    per_frame: list[Boxes | None] = [None] * N
    per_frame[0] = Boxes.of([face(0)], [0.9], Label.FACE)
    per_frame[4] = Boxes.of([face(4)], [0.9], Label.FACE)
    per_frame[8] = Boxes.empty()
    out = fill_gaps(per_frame, window=4, follow_velocity=True)
    assert all(_covered(out[i], face(i)) >= 0.99 for i in range(N))
    old = fill_gaps(per_frame, window=4)
    assert min(_covered(old[i], face(i)) for i in range(5, N)) < 0.5


def test_plates_coast_by_default_faces_do_not():
    # The text detector behind plates flickers: a plate found on frame 0 only of 0/4/8 is
    # carried to frames 5-8 by default (coast 2 for plates), a face is not (coast 0).
    clip = _pan_clip()
    per_frame: list[Boxes | None] = [None] * N
    per_frame[0] = Boxes.concat([Boxes.of([_face_at(0)], [0.9], Label.PLATE),
                                 Boxes.of([_face_at(0, x0=200.0)], [0.9], Label.FACE)])
    per_frame[4] = Boxes.empty()
    per_frame[8] = Boxes.empty()
    out = fill_gaps(per_frame, window=4, frames=clip)
    assert all(_covered(out[i].select(out[i].label == Label.PLATE), _face_at(i)) >= 0.9 for i in range(N))
    assert _covered(out[6].select(out[6].label == Label.FACE), _face_at(6, x0=200.0)) == 0.0
    with pytest.raises(ValueError, match="coast"):
        fill_gaps([Boxes.empty()], coast={int(Label.PLATE): -1})


def test_redactor_finish_masks_the_moved_face_on_unscheduled_frames():
    # The process actor's path: Redactor.finish(frames, raw, ...) gives temporal fill the
    # chunk, so a face found on frame 0 only (missed on 8) is masked where the pan took it.
    from operators.redactor import RedactionConfig, Redactor

    clip = _pan_clip()
    red = Redactor(RedactionConfig(classes=("face",), style="fill", detect_every=8), detectors={})
    raw: list[Boxes | None] = [None] * N
    raw[0] = Boxes.of([_face_at(0)], [0.9], Label.FACE)
    raw[8] = Boxes.empty()
    res = red.finish(clip, raw, [])
    for i in range(1, 8):
        assert _covered(res.boxes[i], _face_at(i)) >= 0.9, i
    x0, y0, x1, y1 = (int(v) for v in _face_at(5))
    assert not np.array_equal(res.frames[5, y0:y1, x0:x1], clip[5, y0:y1, x0:x1])
    # planned without the frames (as before), the face is left where it was found
    assert min(_covered(b, _face_at(i)) for i, b in enumerate(red.plan_from(raw, [], (H, W)))) < 0.5
