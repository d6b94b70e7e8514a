"""Camera motion between the frames of a chunk, so temporal fill can follow a pan or a zoom.

A moving camera (a PTZ pan, a dashcam, the eval's zooming clips) moves every object in the
picture together: a face detected on frame 0 is 40-90 px away by frame 4. Temporal fill
(:func:`operators.temporal.fill_gaps`) carries boxes from detected frames to the frames
between them; :func:`estimate_camera_motion` gives it, for every pair of consecutive
frames, the similarity transform (scale, rotation, translation) that maps one frame's
pixels onto the next, so carried boxes move with the picture.

How: each frame is shrunk to ``MOTION_SIDE`` px on its longer side and made grey; corners
of one frame are followed into the next with pyramidal Lucas-Kanade flow, and a partial affine
transform is fitted to them with RANSAC (objects that move on their own are outliers). A pair
with fewer than ``MIN_INLIERS`` inliers, or an inlier share under ``MIN_INLIER_SHARE`` (a cut, a
blank or flat frame), is *not estimated*: its transform is the identity and the temporal fill
falls back to carrying boxes in place with the wider growth it always used.

A chunk (:data:`CHUNK_SETTINGS`) follows the inliers of one pair on into the next frame and
looks for new corners (up to 100) only where fewer than half are left, after a pair not
estimated and on the first frame, with a 15 px window: x0.43-0.62 of the CPU of finding 200
corners on every frame with a 21 px window (~2.1 against ~3.7 ms a 720p frame), the same leaks
in the moving-camera video eval with masked area within 0.05 points, as close to the true
motion of its clips (within 0.3 px of the old estimate's error) and 3-5x closer on the crowd
clip and on a static camera with people walking (corners found afresh land on the walkers; the
ones kept are those that agreed with the camera): docs/performance.md, session 11.
:func:`pair_transform` (two frames, the text pass's carry) keeps :data:`PAIR_SETTINGS`.

Limit: RANSAC takes the motion most corners share. A static camera with a vehicle filling
most of the picture may get that vehicle's motion as the camera's; boxes carried between
detections then move with it (the detected frames themselves are unaffected).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from .types import Frames

MOTION_SIDE = 320
"""Longer side (px) of the grey frames the motion is estimated on."""

MAX_CORNERS = 200
"""Corners followed from one frame to the next."""

MIN_INLIERS = 12
"""A pair's transform counts as estimated with at least this many RANSAC inliers ..."""

MIN_INLIER_SHARE = 0.3
"""... that are at least this share of the corners followed."""

RANSAC_PX = 1.0
"""RANSAC reprojection threshold in pixels of the shrunk frame."""

LK_WINDOW_PX = 21
"""Side (px) of the Lucas-Kanade search window, on every pyramid level."""

LK_LEVELS = 3
"""Pyramid levels above the base that Lucas-Kanade searches."""


@dataclass(frozen=True, slots=True)
class MotionSettings:
    """How the motion is estimated (the field defaults are the module constants, :data:`PAIR_SETTINGS`).

    ``reuse``: the corners followed into frame ``i`` (the RANSAC inliers of the pair
    ``(i - 1, i)``) are followed on into frame ``i + 1`` instead of new corners being found
    on frame ``i``; new ones are found where fewer than ``reuse_min_share`` of
    ``max_corners`` are left (and on the first frame, and after a pair not estimated).
    """

    side: int = MOTION_SIDE
    max_corners: int = MAX_CORNERS
    window_px: int = LK_WINDOW_PX
    levels: int = LK_LEVELS
    reuse: bool = False
    reuse_min_share: float = 0.5

    def __post_init__(self) -> None:
        if self.side < 16 or self.max_corners < MIN_INLIERS or self.window_px < 3 or self.levels < 0:
            raise ValueError(f"motion settings out of range: {self}")
        if not 0.0 <= self.reuse_min_share <= 1.0:
            raise ValueError(f"reuse_min_share: expected 0..1, got {self.reuse_min_share}")

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CameraMotion:
    """Per-frame transforms of one chunk.

    ``to_first[i]`` (3x3) maps frame ``i``'s pixels onto frame 0's, the product of the
    consecutive-pair transforms; ``ok[i]`` says whether the pair ``(i, i + 1)`` was
    estimated (``False``: identity assumed).
    """

    to_first: Matrix  # (N, 3, 3)
    ok: npt.NDArray[np.bool_]  # (max(N - 1, 0),)

    @staticmethod
    def still(n: int) -> CameraMotion:
        """No motion known: every transform is the identity and no pair is estimated."""
        return CameraMotion(np.repeat(np.eye(3)[None], n, axis=0), np.zeros(max(n - 1, 0), bool))

    def __len__(self) -> int:
        return int(self.to_first.shape[0])

    def between(self, j: int, i: int) -> Matrix:
        """3x3 transform from frame ``j``'s pixels to frame ``i``'s."""
        out: Matrix = np.linalg.solve(self.to_first[i], self.to_first[j])
        return out

    def reliable(self, j: int, i: int) -> bool:
        """Every pair between frames ``j`` and ``i`` was estimated."""
        lo, hi = min(i, j), max(i, j)
        return bool(self.ok[lo:hi].all())


def warp_xyxy(xyxy: npt.NDArray[np.float32], m: Matrix) -> npt.NDArray[np.float32]:
    """The axis-aligned hull of ``(K, 4)`` boxes moved by the 3x3 similarity/affine ``m``."""
    if not len(xyxy):
        return xyxy.astype(np.float32).reshape(0, 4)
    x = xyxy.astype(np.float64)
    corners = np.stack([x[:, [0, 1]], x[:, [2, 1]], x[:, [0, 3]], x[:, [2, 3]]], axis=1)  # (K, 4, 2)
    moved = corners @ m[:2, :2].T + m[:2, 2]
    out = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)
    return out.astype(np.float32)


def _grey(frame: npt.NDArray[np.uint8], scale: float) -> npt.NDArray[np.uint8]:
    small = frame if scale == 1.0 else np.asarray(
        cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8)
    out: npt.NDArray[np.uint8] = np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), np.uint8)
    return out


Points = npt.NDArray[np.float32]  # (K, 1, 2), as OpenCV's corner and flow functions use them


def _corners(a: npt.NDArray[np.uint8], settings: MotionSettings) -> Points | None:
    pts = cv2.goodFeaturesToTrack(a, maxCorners=settings.max_corners, qualityLevel=0.01, minDistance=7, blockSize=7)
    return None if pts is None else np.asarray(pts, np.float32)


def pair_transform(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8],
                   settings: MotionSettings | None = None) -> Matrix | None:
    """3x3 transform from grey frame ``a``'s pixels to ``b``'s, or ``None`` where it cannot
    be estimated (see the module docstring)."""
    settings = settings or PAIR_SETTINGS
    return _follow(a, b, _corners(a, settings), settings)[0]


def _follow(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], pts: Points | None,
            settings: MotionSettings) -> tuple[Matrix | None, Points | None]:
    """The transform from ``a`` to ``b`` fitted to corners ``pts`` of ``a`` followed into ``b``
    (``None`` where it cannot be estimated), and where it is, the inliers' positions in ``b``."""
    if pts is None or len(pts) < MIN_INLIERS:
        return None, None
    win = (settings.window_px, settings.window_px)
    nxt, status, _err = cv2.calcOpticalFlowPyrLK(a, b, pts, None, winSize=win, maxLevel=settings.levels)
    if nxt is None:
        return None, None
    good = status.reshape(-1) == 1
    if int(good.sum()) < MIN_INLIERS:
        return None, None
    m, inliers = cv2.estimateAffinePartial2D(pts[good], nxt[good], method=cv2.RANSAC,
                                             ransacReprojThreshold=RANSAC_PX)
    if m is None or inliers is None:
        return None, None
    n_in = int(inliers.sum())
    if n_in < MIN_INLIERS or n_in < MIN_INLIER_SHARE * len(pts):
        return None, None
    out: Matrix = np.vstack([m.astype(np.float64), [0.0, 0.0, 1.0]])
    return out, np.asarray(nxt[good][inliers.reshape(-1) == 1], np.float32)


PAIR_SETTINGS = MotionSettings()
""":func:`pair_transform`'s: up to 200 corners found on the first frame, 21 px window."""

CHUNK_SETTINGS = MotionSettings(max_corners=100, window_px=15, reuse=True)
""":func:`estimate_camera_motion`'s (see the module docstring)."""


def estimate_camera_motion(frames: Frames, settings: MotionSettings | None = None) -> CameraMotion:
    """The camera motion of one chunk ``(N, H, W, 3)`` (see the module docstring), estimated
    with ``settings`` (default :data:`CHUNK_SETTINGS`)."""
    settings = settings or CHUNK_SETTINGS
    n = len(frames)
    if n < 2:
        return CameraMotion.still(n)
    h, w = int(frames.shape[1]), int(frames.shape[2])
    scale = min(1.0, settings.side / max(h, w, 1))
    s = np.diag([scale, scale, 1.0])
    s_inv = np.diag([1.0 / scale, 1.0 / scale, 1.0])
    to_first = np.repeat(np.eye(3)[None], n, axis=0)
    ok = np.zeros(n - 1, bool)
    prev = _grey(frames[0], scale)
    followed: Points | None = None
    for i in range(1, n):
        cur = _grey(frames[i], scale)
        if settings.reuse and followed is not None and len(followed) >= settings.reuse_min_share * settings.max_corners:
            pts: Points | None = followed
        else:
            pts = _corners(prev, settings)
        m, followed = _follow(prev, cur, pts, settings)
        if followed is not None:
            h_s, w_s = cur.shape
            inside = ((followed[:, 0, 0] >= 0) & (followed[:, 0, 1] >= 0)
                      & (followed[:, 0, 0] <= w_s - 1) & (followed[:, 0, 1] <= h_s - 1))
            followed = followed[inside]
        if m is not None:
            ok[i - 1] = True
            full = s_inv @ m @ s  # frame i-1 pixels -> frame i pixels
            to_first[i] = to_first[i - 1] @ np.linalg.inv(full)
        else:
            to_first[i] = to_first[i - 1]
        prev = cur
    return CameraMotion(to_first, ok)
