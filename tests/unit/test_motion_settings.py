"""How the camera motion is estimated (operators.motion.MotionSettings): resolution, corners,
the Lucas-Kanade window and pyramid, and corners followed on from one pair to the next."""

import numpy as np
import pytest

import operators.motion as motion
from operators.motion import MotionSettings, estimate_camera_motion

H, W, N = 240, 320, 9


def _pan_clip(n: int = N, dx: int = 12, h: int = H, w: int = W, cell: int = 4) -> np.ndarray:
    """A textured scene (``cell`` px blocks of noise) seen through a camera panning ``dx`` px per frame."""
    rng = np.random.default_rng(11)
    scene = rng.integers(0, 255, (h // cell + 1, (w + n * dx) // cell + 1, 3), dtype=np.uint8)
    scene = np.repeat(np.repeat(scene, cell, axis=0), cell, axis=1)[:h, :w + n * dx]
    return np.ascontiguousarray(np.stack([scene[:, i * dx:i * dx + w] for i in range(n)]))


@pytest.mark.parametrize("kw", [
    {"side": 15}, {"max_corners": 11}, {"window_px": 2}, {"levels": -1},
    {"reuse_min_share": -0.1}, {"reuse_min_share": 1.5},
])
def test_settings_out_of_range_are_refused(kw):
    with pytest.raises(ValueError, match="motion settings|reuse_min_share"):
        MotionSettings(**kw)


@pytest.mark.parametrize("settings", [
    MotionSettings(),
    MotionSettings(levels=2, window_px=15, max_corners=100),
    MotionSettings(window_px=15, max_corners=100),
    MotionSettings(reuse=True),
])
def test_a_pan_is_estimated_with_every_setting(settings):
    m = estimate_camera_motion(_pan_clip(), settings)
    assert m.ok.all()
    assert m.between(0, 8)[0, 2] == pytest.approx(-96.0, abs=1.0)
    assert m.between(0, 8)[1, 2] == pytest.approx(0.0, abs=1.0)


def test_a_fast_pan_needs_the_default_pyramid():
    # 24 px a frame at 320 px (96 px a frame on a 1280 px camera: a fast PTZ pan) is followed
    # with three pyramid levels; with two it is lost (not estimated: the fill then carries in
    # place), which is why a cheaper estimate keeps the levels (docs/performance.md, session 11)
    clip = _pan_clip(n=5, dx=24)
    m = estimate_camera_motion(clip)
    assert m.ok.all() and m.between(0, 4)[0, 2] == pytest.approx(-96.0, abs=2.0)
    assert not estimate_camera_motion(clip, MotionSettings(levels=2)).ok.all()


def test_a_lower_resolution_scales_back_to_frame_pixels():
    # 640x480 panning 24 px a frame, estimated on 160 px frames (a quarter): 6 px there
    clip = _pan_clip(dx=24, h=480, w=640, cell=8)
    m = estimate_camera_motion(clip, MotionSettings(side=160))
    assert m.ok.all()
    assert m.between(0, 8)[0, 2] == pytest.approx(-192.0, abs=3.0)


def test_defaults_chunk_and_pair():
    # a chunk's estimate defaults to CHUNK_SETTINGS, a pair's (the text pass's carry) to the
    # module constants, bit for bit
    clip = _pan_clip()
    a, b = estimate_camera_motion(clip), estimate_camera_motion(clip, motion.CHUNK_SETTINGS)
    assert np.array_equal(a.to_first, b.to_first) and np.array_equal(a.ok, b.ok)
    old = estimate_camera_motion(clip, MotionSettings())
    assert not np.array_equal(a.to_first, old.to_first)
    g0, g1 = (np.asarray(motion.cv2.cvtColor(f, motion.cv2.COLOR_BGR2GRAY)) for f in clip[:2])
    assert motion.PAIR_SETTINGS == MotionSettings()
    assert np.array_equal(motion.pair_transform(g0, g1), motion.pair_transform(g0, g1, MotionSettings()))


def test_a_chunk_finds_corners_once_while_they_last(monkeypatch):
    # the chunk's default follows the first frame's corners through a clean pan: one search,
    # not one a frame (the search and a 200-corner flow were most of the estimate's CPU)
    calls = _count_corner_searches(monkeypatch)
    m = estimate_camera_motion(_pan_clip())
    assert m.ok.all() and len(calls) == 1


def _count_corner_searches(monkeypatch) -> list[int]:
    calls: list[int] = []
    find = motion.cv2.goodFeaturesToTrack

    def counted(*args, **kw):
        calls.append(1)
        return find(*args, **kw)

    monkeypatch.setattr(motion.cv2, "goodFeaturesToTrack", counted)
    return calls


def test_reuse_follows_the_corners_on_instead_of_finding_new_ones(monkeypatch):
    calls = _count_corner_searches(monkeypatch)
    estimate_camera_motion(_pan_clip(), MotionSettings())
    assert len(calls) == N - 1
    calls.clear()
    estimate_camera_motion(_pan_clip(), MotionSettings(reuse=True, reuse_min_share=0.0))
    assert len(calls) == 1


def test_reuse_finds_new_corners_after_a_pair_not_estimated(monkeypatch):
    # a flat frame in the middle: the pairs on either side of it are not estimated; after it
    # corners are found afresh and the rest of the pan is estimated again
    clip = _pan_clip()
    clip[4] = 128
    calls = _count_corner_searches(monkeypatch)
    m = estimate_camera_motion(clip, MotionSettings(reuse=True, reuse_min_share=0.0))
    assert m.ok.tolist() == [True, True, True, False, False, True, True, True]
    assert m.between(5, 8)[0, 2] == pytest.approx(-36.0, abs=1.0)
    assert len(calls) >= 3  # frame 0, the flat frame 4, frame 5


def test_reuse_refinds_corners_when_too_few_are_left(monkeypatch):
    # panning 12 px a frame, corners leave the picture at the left edge: with a share of 1.0
    # every pair that keeps fewer than max_corners inliers searches again
    calls = _count_corner_searches(monkeypatch)
    m = estimate_camera_motion(_pan_clip(), MotionSettings(reuse=True, reuse_min_share=1.0))
    assert m.ok.all() and len(calls) == N - 1
