"""Fail-closed plate fallback: a vehicle whose plate the text detector did not find still
gets the part of it where plates are mounted masked.

Text detectors miss plates that are small, blurred, at night, dirty or seen at an angle
(``veilstream eval plates_traffic``: about one plate in ten on street and dashcam frames
with PP-OCRv5); vehicle detectors are far more robust. For each vehicle box large enough
for its plate to be legible, with no plate box in its lower part, we emit a
``Label.PLATE_REGION`` box over the lower part of the vehicle — the same trade the head
fallback makes for persons without a detected face: the vehicle's roof, windows and colour
stay visible, its bumper is masked.

Geometry (from how plates are mounted, then checked on a coarse grid, README "Measured
quality"): front and rear plates sit on the bumper, in the lower part of a vehicle box seen
from the front, back or three-quarter view, anywhere across its width in a three-quarter
view (the plate is at one end); YOLOX-nano's box often ends above the bumper or sits a tenth
of its height too low at night and in motion blur, hence the lower 70 % plus a tenth below.
Vehicles narrower than ``min_px`` carry plates a few pixels wide, which no one can read.
"""

from __future__ import annotations

import numpy as np

from .types import Boxes, Label

REGION_TOP_FRAC = 0.3
"""The region starts this fraction of the vehicle box height below its top."""
REGION_BELOW_FRAC = 0.1
"""The region reaches this fraction of the vehicle box height below its bottom."""
REGION_SIDE_FRAC = 0.0
"""The region leaves this fraction of the vehicle box width free on each side."""
OWN_PLATE_TOP_FRAC = 0.3
"""A plate box whose centre lies inside the vehicle box, below this fraction of its height
(or up to a tenth of its height under it), is this vehicle's plate: no region for it."""
DEFAULT_MIN_PX = 40
"""Vehicles narrower than this (px) get no region (their plates are < ~10 px wide)."""
DEFAULT_MIN_SCORE = 0.5
"""Vehicles the detector is less sure of get no region."""
NEAR_BAND_FRAC = 0.15
"""With ``near`` boxes on its region, a region keeps only the rows within this fraction of
the vehicle box height above and below them (see :func:`plate_regions`)."""


def on_vehicles(plates: Boxes, vehicles: Boxes) -> np.ndarray:
    """``(len(plates), len(vehicles))`` bool: plate box ``i`` is where vehicle ``j`` carries
    its plate (centre inside the box's width, below ``OWN_PLATE_TOP_FRAC`` of its height, or
    up to a tenth of its height under it)."""
    if not len(plates) or not len(vehicles):
        return np.zeros((len(plates), len(vehicles)), bool)
    v = vehicles.xyxy.astype(np.float64)
    x1, y1 = np.minimum(v[:, 0], v[:, 2]), np.minimum(v[:, 1], v[:, 3])
    x2, y2 = np.maximum(v[:, 0], v[:, 2]), np.maximum(v[:, 1], v[:, 3])
    vh = y2 - y1
    p = plates.xyxy.astype(np.float64)
    cx, cy = (p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2
    return ((cx[:, None] > x1[None]) & (cx[:, None] < x2[None])
            & (cy[:, None] > (y1 + OWN_PLATE_TOP_FRAC * vh)[None]) & (cy[:, None] < (y2 + 0.1 * vh)[None]))


def near_vehicles(plates: Boxes, vehicles: Boxes, reach: float) -> np.ndarray:
    """``(len(plates),)`` bool: the centre of plate box ``i`` lies inside a vehicle box or
    at most ``reach`` of the plate box's own heights from one (Euclidean distance from the
    centre to the nearest point of the vehicle box). ``reach`` is in plate heights so that
    it means the same at every scale: a plate whose car the detector found lies at distance
    0 (inside), one whose car was cut into two boxes or found short a little outside it."""
    if not len(plates) or not len(vehicles):
        return np.zeros(len(plates), bool)
    v = vehicles.xyxy.astype(np.float64)
    x1, y1 = np.minimum(v[:, 0], v[:, 2]), np.minimum(v[:, 1], v[:, 3])
    x2, y2 = np.maximum(v[:, 0], v[:, 2]), np.maximum(v[:, 1], v[:, 3])
    p = plates.xyxy.astype(np.float64)
    cx, cy = (p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2
    h = np.maximum(np.abs(p[:, 3] - p[:, 1]), 1.0)
    dx = np.maximum(0.0, np.maximum(x1[None] - cx[:, None], cx[:, None] - x2[None]))
    dy = np.maximum(0.0, np.maximum(y1[None] - cy[:, None], cy[:, None] - y2[None]))
    return np.asarray((np.hypot(dx, dy) <= float(reach) * h[:, None]).any(axis=1), bool)


def plate_regions(vehicles: Boxes, plates: Boxes, frame_hw: tuple[int, int], *,
                  min_px: float = DEFAULT_MIN_PX, min_score: float = DEFAULT_MIN_SCORE,
                  near: Boxes | None = None) -> Boxes:
    """Plate regions for vehicles without a plate box in their lower part.

    Args:
        vehicles: vehicle boxes (labels are not checked), pixel xyxy.
        plates: plate (text) boxes found on the same frame.
        frame_hw: ``(H, W)`` of the frame; results are clipped to it.
        min_px: vehicles narrower than this get no region.
        min_score: vehicles scored below this get no region.
        near: plate boxes found that do not stand for a vehicle's plate (the redactor
            passes every plate box, the square ones included): a region that such boxes
            overlap shrinks to the rows within ``NEAR_BAND_FRAC`` of the vehicle height of
            them, full width. A square box on a bumper is a plate seen at an angle, a
            two-line plate or a tail light; the plate is at its height or between the
            lights, not at the sills. ``None``: regions never shrink.

    Returns:
        ``Label.PLATE_REGION`` boxes with the vehicle's score, at most one per vehicle, in
        vehicle order. Vehicles with non-finite coordinates are skipped.
    """
    if not len(vehicles):
        return Boxes.empty()
    h_img, w_img = float(frame_hw[0]), float(frame_hw[1])
    v = vehicles.xyxy.astype(np.float64)
    x1, y1 = np.minimum(v[:, 0], v[:, 2]), np.minimum(v[:, 1], v[:, 3])
    x2, y2 = np.maximum(v[:, 0], v[:, 2]), np.maximum(v[:, 1], v[:, 3])
    vw, vh = x2 - x1, y2 - y1
    keep = np.isfinite(v).all(axis=1) & (vw >= min_px) & (vehicles.score >= min_score)
    keep &= ~on_vehicles(plates, vehicles).any(axis=0)
    if not keep.any():
        return Boxes.empty()
    rx1 = np.clip(x1 + REGION_SIDE_FRAC * vw, 0, w_img)
    rx2 = np.clip(x2 - REGION_SIDE_FRAC * vw, 0, w_img)
    ry1 = np.clip(y1 + REGION_TOP_FRAC * vh, 0, h_img)
    ry2 = np.clip(y2 + REGION_BELOW_FRAC * vh, 0, h_img)
    if near is not None and len(near):
        n = near.xyxy.astype(np.float64)
        n = n[np.isfinite(n).all(axis=1)]
        nx1, ny1 = np.minimum(n[:, 0], n[:, 2]), np.minimum(n[:, 1], n[:, 3])
        nx2, ny2 = np.maximum(n[:, 0], n[:, 2]), np.maximum(n[:, 1], n[:, 3])
        hit = ((nx1[None] < rx2[:, None]) & (nx2[None] > rx1[:, None])
               & (ny1[None] < ry2[:, None]) & (ny2[None] > ry1[:, None]))
        band = NEAR_BAND_FRAC * vh
        top = np.where(hit, ny1[None], np.inf).min(axis=1) - band
        bottom = np.where(hit, ny2[None], -np.inf).max(axis=1) + band
        shrink = hit.any(axis=1)
        ry1 = np.where(shrink, np.maximum(ry1, top), ry1)
        ry2 = np.where(shrink, np.minimum(ry2, bottom), ry2)
    keep &= (rx2 > rx1) & (ry2 > ry1)
    xyxy = np.stack([rx1, ry1, rx2, ry2], axis=1)[keep].astype(np.float32)
    return Boxes(xyxy, vehicles.score[keep].astype(np.float32),
                 np.full(len(xyxy), int(Label.PLATE_REGION), np.int16))
