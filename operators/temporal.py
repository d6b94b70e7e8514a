"""Temporal coverage inside one chunk: carry detections to nearby frames.

A detector that finds a face on frame 9 but misses it on frames 7 and 8 (blur, pose,
detection skipped) would leak those frames. ``fill_gaps`` only ever adds boxes: each
frame keeps its own detections and also gets the boxes of detected frames within
``window`` frames before and after, grown for motion. Frames where detection did not run
(``None``, see :func:`detection_schedule`) always get both nearest detected neighbours'
boxes, whatever the window, plus a linearly interpolated box for pairs that match.

Matching across a gap: same label and either IoU > ``MATCH_IOU`` or, for boxes that moved
too far to overlap (a 15 px face panning past the camera moves 40-90 px in 4 frames),
centre distance <= ``MATCH_CENTRE`` box sizes per frame of gap with sizes within
``MATCH_SCALE`` of each other. Greedy one-to-one, overlapping pairs first, then nearest.
A wrong match only adds an extra box: interpolated boxes never replace carried ones.

Following motion (given the chunk's ``frames`` or its :class:`~operators.motion.CameraMotion`):
a moving camera moves every box at once, so carried boxes are moved with the camera's motion
estimated between the frames (and grow only by ``grow_followed`` per frame for the objects'
own motion), and pairs are matched and interpolated in camera-compensated coordinates.
``follow_velocity`` adds each track's own constant velocity from its last two detections;
``coast`` carries boxes a detector missed on more than one scheduled frame in a row. Where
the camera's motion is not estimated (a cut, a flat frame), boxes are carried in place and
grown by ``grow_per_frame`` as before: fail closed, never a smaller box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .motion import CameraMotion, estimate_camera_motion, warp_xyxy
from .types import Boxes, Frames, Label

MATCH_IOU = 0.3
"""Same-label boxes on both sides of a gap with IoU above this are interpolated."""

MATCH_CENTRE = 1.0
"""... or whose centres are at most this many box sizes (mean larger side) apart per frame
of gap, so a small box moving with a pan is still interpolated."""

MATCH_SCALE = 2.0
"""Centre-distance matches need the larger side of one box within this factor of the other's."""


GROW_FOLLOWED = 0.02
"""Carried boxes that follow an estimated camera motion grow by this fraction of their size
per side per frame of distance (the objects' own motion). Chosen on a sweep over whole sets
(docs/quality.md, "Video: moving-camera clips", 2026-12-05): on faces_wider_hard's clips
0.02 and 0.05 leak the same face-frames at every 4th and 8th frame detected, 0.05 masks
5-9 points more of the frame."""


COAST: Mapping[int, int] = {int(Label.PLATE): 2, int(Label.TEXT): 2, int(Label.PLATE_REGION): 2,
                             int(Label.LOOSE_TEXT): 2}
"""Default ``coast`` per label: plates (and the text and plate-region boxes masked for them)
flicker from frame to frame (a plate found on frames 8 and 24 of a clip but not on 16),
faces hardly do. On the plates_traffic clips (docs/quality.md, 2026-12-05) coasting these
labels over 2 detected frames takes the plate-frame leak from 8/203 (every 4th frame
detected) and 12/203 (every 8th) to 0/203; coasting only plate and text boxes leaves both as
they were. On faces_wider_hard coasting faces over 1 removes 7 of 4069 face-frames at every
4th frame for 6 points more masked area, so faces do not coast."""


def _match_labels(label: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Labels as matching across a gap compares them: loose text as a plate. The redactor labels
    a plate-class box loose text or plate by whether a vehicle was found near it on that frame
    (``RedactionConfig.plate_vehicle_reach``); in video the same text flips between the two as
    the vehicle detector's boxes come and go (at night most of all), and matched by label the
    flips were two objects, each coasted (:data:`COAST`), never interpolated: a night
    plates_traffic clip at every 8th frame was 14.9 % masked with dark-frame text loose, 6.5 %
    matched as one (docs/quality.md "Where the crowds' area goes"). Boxes keep their own labels."""
    loose = label == int(Label.LOOSE_TEXT)
    if not loose.any():
        return label
    return np.where(loose, np.int16(int(Label.PLATE)), label).astype(np.int16)


def detection_schedule(n_frames: int, every: int) -> list[bool]:
    """Which frames of a chunk run detection: every ``every``-th from frame 0, plus the
    last frame, so the tail of a chunk is covered from both sides.

    Raises:
        ValueError: ``n_frames < 0`` or ``every < 1``.
    """
    if n_frames < 0:
        raise ValueError(f"n_frames: expected >= 0, got {n_frames}")
    if every < 1:
        raise ValueError(f"every: expected >= 1, got {every}")
    return [i % every == 0 or i == n_frames - 1 for i in range(n_frames)]


def grow(boxes: Boxes, frac: float) -> Boxes:
    """Boxes with each side moved out by ``frac`` of the box's width (x) / height (y)."""
    if not len(boxes) or frac == 0.0:
        return boxes
    xyxy = boxes.xyxy.astype(np.float32)
    wh = np.concatenate([xyxy[:, 2:] - xyxy[:, :2]] * 2, axis=1)
    delta = np.float32(frac) * wh * np.array([-1, -1, 1, 1], np.float32)
    return Boxes((xyxy + delta).astype(np.float32), boxes.score, boxes.label)


def fill_gaps(per_frame: Sequence[Boxes | None], window: int = 2,
              grow_per_frame: float = 0.05, *, frames: Frames | None = None,
              motion: CameraMotion | None = None, grow_followed: float | None = None,
              coast: int | Mapping[int, int] | None = None, follow_velocity: bool = False) -> list[Boxes]:
    """Union each frame's boxes with those carried from nearby detected frames.

    Args:
        per_frame: one entry per frame of the chunk; ``None`` where detection did not run,
            :class:`Boxes` (possibly empty) where it did.
        window: detections also cover this many frames before and after (>= 0).
        grow_per_frame: carried boxes grow by this fraction of their size per side, per
            frame of distance (motion slack), >= 0.
        frames: the chunk's frames ``(N, H, W, 3)``: the camera motion is estimated from
            them (:func:`operators.motion.estimate_camera_motion`) when there is a box to
            carry, and carried and interpolated boxes follow it.
        motion: the camera motion, already estimated (takes the place of ``frames``).
        grow_followed: carried boxes moved with an estimated camera motion grow by this
            fraction per side per frame instead of ``grow_per_frame`` (only the objects'
            own motion is left to cover); default :data:`GROW_FOLLOWED`.
        coast: a box is also carried from up to this many detected frames beyond the
            nearest on each side, when no detected frame nearer to the frame found it again
            (a detector miss on two scheduled frames in a row does not drop it): one number
            for every label, or per label (others 0); default :data:`COAST`.
        follow_velocity: carried boxes also stretch along their own velocity, from the
            match of their detection on the detected frame before it (carried forward) or
            after it (carried backward), camera motion taken out: an object that walks on
            while the detector misses it on the next scheduled frame stays covered.

    Returns:
        One :class:`Boxes` per frame: its own detections first (never removed), then
        carried boxes nearest first, then interpolated boxes. Scores and labels are
        kept; interpolated boxes take the larger score of the pair. A chunk where
        detection ran nowhere gets empty boxes. Inputs are not mutated.
    """
    if window < 0:
        raise ValueError(f"window: expected >= 0, got {window}")
    if not grow_per_frame >= 0.0:
        raise ValueError(f"grow_per_frame: expected >= 0, got {grow_per_frame}")
    followed = GROW_FOLLOWED if grow_followed is None else grow_followed
    if not followed >= 0.0:
        raise ValueError(f"grow_followed: expected >= 0, got {grow_followed}")
    n = len(per_frame)
    if frames is not None and len(frames) != n:
        raise ValueError(f"frames: {len(frames)} frames for {n} detection results")
    if motion is not None and len(motion) != n:
        raise ValueError(f"motion: {len(motion)} frames for {n} detection results")
    per_label = dict(COAST if coast is None else coast if isinstance(coast, Mapping) else {})
    if (isinstance(coast, int) and coast < 0) or any(v < 0 for v in per_label.values()):
        raise ValueError(f"coast: expected >= 0, got {coast}")
    reach = coast if isinstance(coast, int) else max(per_label.values(), default=0)
    if motion is None:
        anything = any(b is not None and len(b) for b in per_frame)
        motion = estimate_camera_motion(frames) if frames is not None and anything else CameraMotion.still(n)
    detected = [i for i, b in enumerate(per_frame) if b is not None]
    # candidates of each gap's forward velocity matching, shared with its interpolation (the same
    # two sets of boxes, sides swapped)
    shared: dict[tuple[int, int], Candidates] = {}
    vel = _velocities(per_frame, detected, motion, shared) if follow_velocity else {}
    out: list[Boxes] = []
    unconfirmed: dict[tuple[int, tuple[int, ...]], npt.NDArray[np.bool_]] = {}
    matched: dict[tuple[int, int], tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]] = {}
    for i in range(n):
        own = per_frame[i]
        prev = max((j for j in detected if j < i), default=None)
        nxt = min((j for j in detected if j > i), default=None)
        sources = {j for j in detected if j != i and abs(j - i) <= window}
        if own is None:
            sources.update(j for j in (prev, nxt) if j is not None)
        parts: list[Boxes] = [own] if own is not None else []
        for j in sorted(sources, key=lambda j: (abs(j - i), j)):
            src = per_frame[j]
            assert src is not None
            parts.append(_carry(src, j, i, motion, grow_per_frame, followed, vel.get((j, 1 if i > j else -1))))
        for side in (sorted((j for j in detected if j < i), reverse=True), sorted(j for j in detected if j > i)):
            for pos in range(1, min(reach + 1, len(side))):
                j = side[pos]
                if j in sources:
                    continue
                src = per_frame[j]
                assert src is not None
                key = (j, tuple(side[:pos]))  # the same for every frame i between two detections
                lost = unconfirmed.get(key)
                if lost is None:
                    lost = _unconfirmed(src, j, side[:pos], per_frame, motion)
                    if not isinstance(coast, int):  # only the labels that coast this far
                        far = np.zeros(len(src), bool)
                        for lab, most in per_label.items():
                            if most >= pos:
                                far |= src.label == lab
                        lost &= far
                    unconfirmed[key] = lost
                v = vel.get((j, 1 if i > j else -1))
                parts.append(_carry(src.select(lost), j, i, motion, grow_per_frame, followed,
                                    None if v is None else v[lost]))
        if own is None and prev is not None and nxt is not None:
            a, b = per_frame[prev], per_frame[nxt]
            assert a is not None and b is not None
            parts.append(_interpolate(a, b, (i - prev) / (nxt - prev), nxt - prev, motion, (prev, i, nxt),
                                      pairs=matched, shared=shared))
        out.append(Boxes.concat(parts))
    return out


def _unconfirmed(src: Boxes, j: int, nearer: Sequence[int], per_frame: Sequence[Boxes | None],
                 motion: CameraMotion) -> npt.NDArray[np.bool_]:
    """Which boxes of ``src`` (detected on frame ``j``) that no same-label box of the detected
    frames ``nearer`` overlaps by IoU > ``MATCH_IOU`` once moved with the camera (strict:
    in a crowd, the centre-distance rule would let a neighbour confirm a missed face)."""
    keep = np.ones(len(src), bool)
    for k in nearer:
        other = per_frame[k]
        if other is None or not len(other) or not keep.any():
            continue
        moved = warp_xyxy(src.xyxy, motion.between(j, k)).astype(np.float64)
        keep &= ~_any_iou_above(moved.astype(np.float32), src.label, other.xyxy, other.label, MATCH_IOU)
    return keep


def _any_iou_above(a: npt.NDArray[np.float32], la: npt.NDArray[np.int16], b: npt.NDArray[np.float32],
                   lb: npt.NDArray[np.int16], threshold: float) -> npt.NDArray[np.bool_]:
    """Per box of ``a``: whether a same-label box of ``b`` has IoU above ``threshold`` (>= 0)
    with it; ``(iou_matrix(a, b) > threshold) & same label``, any per row, computed only for the
    pairs whose x-ranges may overlap (boxes of ``b`` sorted by left edge, a window per box of
    ``a``): IoU above 0 needs an overlap, and each pair's IoU is :func:`iou_matrix`'s own
    arithmetic. A crowded frame holds ~500 detected faces: the full matrix per pair of detected
    frames was most of the fill's time. Non-finite or inverted boxes take the full matrix."""
    if not len(a) or not len(b):
        return np.zeros(len(a), bool)
    la, lb = _match_labels(la), _match_labels(lb)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if (not (np.isfinite(a64).all() and np.isfinite(b64).all()) or (a64[:, 2:] < a64[:, :2]).any()
            or (b64[:, 2:] < b64[:, :2]).any()):
        hit = (iou_matrix(a, b) > threshold) & (la[:, None] == lb[None, :])
        return np.asarray(hit.any(axis=1))
    order = np.argsort(b64[:, 0], kind="stable")
    bs, lbs = b64[order], lb[order]
    widest = float((bs[:, 2] - bs[:, 0]).max())
    # a box of b overlaps a's x-range only if its left edge lies in (a.x1 - widest, a.x2)
    lo = np.searchsorted(bs[:, 0], a64[:, 0] - widest, side="left")
    hi = np.maximum(np.searchsorted(bs[:, 0], a64[:, 2], side="right"), lo)
    counts = hi - lo
    i = np.repeat(np.arange(len(a64)), counts)
    off = np.zeros(len(a64) + 1, np.int64)
    np.cumsum(counts, out=off[1:])
    j = np.arange(int(off[-1]), dtype=np.int64) - off[i] + lo[i]
    hit = (_iou(a64[i], bs[j]) > threshold) & (la[i] == lbs[j])
    out = np.zeros(len(a64), bool)
    out[i[hit]] = True
    return out


def _iou(a64: npt.NDArray[np.float64], b64: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """IoU of broadcast-compatible ``(..., 4)`` xyxy float64 arrays (pairs, or a matrix through
    ``[:, None]`` / ``[None, :]``); 0 where the union is empty, NaN where a corner is."""
    iw = np.clip(np.minimum(a64[..., 2], b64[..., 2]) - np.maximum(a64[..., 0], b64[..., 0]), 0, None)
    ih = np.clip(np.minimum(a64[..., 3], b64[..., 3]) - np.maximum(a64[..., 1], b64[..., 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a64[..., 2] - a64[..., 0], 0, None) * np.clip(a64[..., 3] - a64[..., 1], 0, None)
    area_b = np.clip(b64[..., 2] - b64[..., 0], 0, None) * np.clip(b64[..., 3] - b64[..., 1], 0, None)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(union > 0, inter / union, 0.0))


def iou_matrix(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """``(len(a), len(b))`` IoU of xyxy boxes; 0 where the union is empty."""
    iou = _iou(a.astype(np.float64)[:, None, :], b.astype(np.float64)[None, :, :])
    # with finite corners the ratio is in [0, 1] wherever it is taken: nothing to replace
    if np.isfinite(a).all() and np.isfinite(b).all():
        return iou
    return np.nan_to_num(iou)


def _carry(src: Boxes, j: int, i: int, motion: CameraMotion, grow_still: float, grow_followed: float,
           vel: npt.NDArray[np.float64] | None = None) -> Boxes:
    """``src`` (detected on frame ``j``) as carried to frame ``i``: moved with the camera where
    its motion is estimated on every frame between, grown for what is left unknown, and
    stretched along each box's own velocity ``vel`` (``(K, 2)`` px per frame; the box covers
    both where it was and where that velocity takes it: a wrong velocity only adds area)."""
    if not len(src):
        return src
    if motion.reliable(j, i):
        xyxy = warp_xyxy(src.xyxy, motion.between(j, i)).astype(np.float64)
        frac = grow_followed * abs(j - i)
    else:
        xyxy = src.xyxy.astype(np.float64)
        frac = grow_still * abs(j - i)
    if vel is not None and len(vel) and np.any(vel):
        shift = np.concatenate([vel, vel], axis=1) * float(i - j)
        xyxy = np.concatenate([np.minimum(xyxy[:, :2], xyxy[:, :2] + shift[:, :2]),
                               np.maximum(xyxy[:, 2:], xyxy[:, 2:] + shift[:, 2:])], axis=1)
    return grow(Boxes(xyxy.astype(np.float32), src.score, src.label), frac)


def _interpolate(a: Boxes, b: Boxes, t: float, gap: int = 1, motion: CameraMotion | None = None,
                 frames: tuple[int, int, int] = (0, 0, 0),
                 pairs: dict[tuple[int, int], tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]] | None = None,
                 shared: Mapping[tuple[int, int], Candidates] | None = None) -> Boxes:
    """Greedy one-to-one match of same-label pairs (see the module docstring; ``gap`` frames
    apart), best first, and the box at fraction ``t`` from ``a`` to ``b`` for each pair.

    With ``motion`` and ``frames = (prev, i, next)`` (``a`` on ``prev``, ``b`` on ``next``),
    ``a`` is matched after moving it onto ``next`` with the camera, and the pair is
    interpolated between both boxes moved onto frame ``i``: only the objects' own motion
    is taken as linear, not the camera's. ``pairs``: matches by ``(prev, next)``, shared by the
    frames of one gap (the matching does not depend on ``i``)."""
    if not len(a) or not len(b):
        return Boxes.empty()
    pa, pi, pb = frames
    xa, xb = a.xyxy.astype(np.float64), b.xyxy.astype(np.float64)
    found = None if pairs is None else pairs.get((pa, pb))
    if found is None:
        if motion is not None:
            xa = warp_xyxy(a.xyxy, motion.between(pa, pb)).astype(np.float64)
        swapped = None if shared is None else shared.get((pa, pb))
        found = _pairs(xa, a.label, xb, b.label, gap,
                       None if swapped is None else _swap_sides(swapped, len(xb), len(xa)))
        if pairs is not None:
            pairs[(pa, pb)] = found
    ra, cb_ = found
    if not len(ra):
        return Boxes.empty()
    if motion is not None:
        xa = warp_xyxy(a.xyxy, motion.between(pa, pi)).astype(np.float64)
        xb = warp_xyxy(b.xyxy, motion.between(pb, pi)).astype(np.float64)
    xyxy = (1.0 - t) * xa[ra] + t * xb[cb_]
    return Boxes(xyxy.astype(np.float32), np.maximum(a.score[ra], b.score[cb_]).astype(np.float32),
                 a.label[ra].astype(np.int16))


Candidates = tuple[npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _swap_sides(cand: Candidates, na: int, nb: int) -> Candidates:
    """:func:`_match_candidates` of ``(b, a)`` from those of ``(a, b)`` (``na``, ``nb`` boxes): the
    same pairs with sides swapped, in row-major order of the swapped matrix; IoU and distance do
    not depend on the side (the same floats)."""
    flat, iou, norm = cand
    swapped = (flat % nb) * na + flat // nb
    order = np.argsort(swapped, kind="stable")
    return swapped[order].astype(np.intp), iou[order], norm[order]


def _pairs(xa: npt.NDArray[np.float64], la: npt.NDArray[np.int16], xb: npt.NDArray[np.float64],
           lb: npt.NDArray[np.int16], gap: int, known: Candidates | None = None
           ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Greedy one-to-one matches (rows of ``xa``, rows of ``xb``): overlapping pairs first
    (highest IoU), then the nearest by normalised centre distance."""
    # Only the pairs that may match are sorted and walked (in a crowd a few per box, of
    # len(xa) * len(xb)), in row-major order like the full matrix's; the sort is stable, so
    # ties keep the order of the full sort.
    cand, iou, norm = _match_candidates(xa, la, xb, lb, gap) if known is None else known
    order = cand[np.lexsort((norm, -iou))]
    if not len(order):
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    return _greedy(order // len(xb), order % len(xb), len(xa), len(xb))


def _greedy(ia: npt.NDArray[np.intp], ib: npt.NDArray[np.intp], na: int, nb: int
            ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The greedy one-to-one walk over pairs ``(ia[k], ib[k])`` in the order given (take a pair
    when neither side is taken yet), in rounds instead of pair by pair: a pair that comes first
    among the pairs left of both its row and its column is taken by the walk (every pair
    before it that shares a side was dropped for a side taken earlier), so each round takes
    all of those at once and drops the pairs that share a side with them. The taken pairs in
    walk order. A crowded chunk's gap has ~37,000 candidate pairs; walked one by one in Python
    they were a third of the fill's matching."""
    left = np.arange(len(ia))
    taken: list[npt.NDArray[np.intp]] = []
    big = len(ia)
    while len(left):
        r, c = ia[left], ib[left]
        first_r = np.full(na, big)
        first_c = np.full(nb, big)
        np.minimum.at(first_r, r, left)
        np.minimum.at(first_c, c, left)
        win = left[(first_r[r] == left) & (first_c[c] == left)]
        taken.append(win)
        used_a = np.zeros(na, bool)
        used_b = np.zeros(nb, bool)
        used_a[ia[win]] = True
        used_b[ib[win]] = True
        left = left[~(used_a[r] | used_b[c])]
    k = np.sort(np.concatenate(taken))
    return ia[k].astype(np.intp), ib[k].astype(np.intp)


def _velocities(per_frame: Sequence[Boxes | None], detected: Sequence[int], motion: CameraMotion,
                shared: dict[tuple[int, int], Candidates] | None = None
                ) -> dict[tuple[int, int], npt.NDArray[np.float64]]:
    """Per detected frame ``j`` and direction ``d`` (+1: carried forward, -1: backward), each
    box's own velocity (px per frame, forward in time, in frame ``j``'s pixels, camera motion
    taken out) from its match on the detected frame before (``d = +1``) or after
    (``d = -1``) ``j``: the constant-velocity prediction of a track from its last two
    detections. Zero where a box has no match."""
    out: dict[tuple[int, int], npt.NDArray[np.float64]] = {}
    for k, j in enumerate(detected):
        cur = per_frame[j]
        assert cur is not None
        for d, q in ((1, detected[k - 1] if k > 0 else None), (-1, detected[k + 1] if k + 1 < len(detected) else None)):
            vel = np.zeros((len(cur), 2))
            other = per_frame[q] if q is not None else None
            if q is not None and other is not None and len(other) and len(cur):
                moved = warp_xyxy(other.xyxy, motion.between(q, j)).astype(np.float64)
                xc = cur.xyxy.astype(np.float64)
                cand = _match_candidates(xc, cur.label, moved, other.label, abs(j - q))
                if shared is not None and d == 1:  # (q, j): the gap _interpolate matches, sides swapped
                    shared[(q, j)] = cand
                rows, cols = _pairs(xc, cur.label, moved, other.label, abs(j - q), cand)
                if len(rows):
                    c_cur = (cur.xyxy[rows, :2] + cur.xyxy[rows, 2:]) / 2.0
                    c_other = (moved[cols, :2] + moved[cols, 2:]) / 2.0
                    vel[rows] = (c_cur - c_other) / float(j - q)
            out[(j, d)] = vel
    return out


Matches = tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64], npt.NDArray[np.float64]]

_SIDE_BANDS = 2.0
""":func:`_match_candidates` searches the boxes of ``b`` in bands of sides within this factor."""


def _match_candidates(xa: npt.NDArray[np.float64], la: npt.NDArray[np.int16], xb: npt.NDArray[np.float64],
                      lb: npt.NDArray[np.int16], gap: int
                      ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The pairs :func:`_match_ok` allows, without its full matrices: their row-major flat
    indices ``ia * len(xb) + ib`` (ascending) with each pair's IoU and normalised centre
    distance (:func:`_match_ok`'s own arithmetic, so the same values). A crowded frame holds
    ~370 detected faces: three full ``len(a) x len(b)`` matchings per gap of the temporal fill
    were most of planning's CPU.

    Which pairs are computed: a match needs IoU > ``MATCH_IOU`` (the boxes overlap, so their
    centres are less than ``(side_a + side_b) / 2`` apart in x) or a centre distance of at
    most ``MATCH_CENTRE * gap`` box sizes with sides within ``MATCH_SCALE``; the boxes of
    ``b``, in bands of similar side sorted by centre x, are searched only within that reach
    (with slack) of each box of ``a``. Non-finite or inverted boxes take the full matrices."""
    na, nb = len(xa), len(xb)
    none = (np.zeros(0, np.intp), np.zeros(0, np.float64), np.zeros(0, np.float64))
    if not na or not nb:
        return none
    if (not (np.isfinite(xa).all() and np.isfinite(xb).all()) or (xa[:, 2:] < xa[:, :2]).any()
            or (xb[:, 2:] < xb[:, :2]).any()):
        ok, iou_m, norm_m = _match_ok(xa, la, xb, lb, gap)
        flat = np.flatnonzero(ok.ravel())
        return flat.astype(np.intp), iou_m.ravel()[flat], norm_m.ravel()[flat]
    side_a = np.maximum(xa[:, 2] - xa[:, 0], xa[:, 3] - xa[:, 1])
    side_b = np.maximum(xb[:, 2] - xb[:, 0], xb[:, 3] - xb[:, 1])
    cxa, cxb = (xa[:, 0] + xa[:, 2]) / 2.0, (xb[:, 0] + xb[:, 2]) / 2.0
    reach = max(1.0, MATCH_CENTRE * max(1, gap))
    band = np.floor(np.log2(np.maximum(side_b, 1e-3)) / np.log2(_SIDE_BANDS)).astype(np.int64)
    ia_parts: list[npt.NDArray[np.int64]] = []
    ib_parts: list[npt.NDArray[np.int64]] = []
    r_parts: list[npt.NDArray[np.float64]] = []
    for k in np.unique(band).tolist():
        members = np.flatnonzero(band == k)
        members = members[np.argsort(cxb[members], kind="stable")]
        cx_sorted = cxb[members]
        top = float(side_b[members].max())
        # overlap: |dx| < (side_a + side_b) / 2; centre rule: |dx| <= reach * size with
        # side_b <= MATCH_SCALE * side_a; 1e-6: _match_ok's least size. Slack for rounding.
        r = np.maximum((side_a + top) / 2.0,
                       reach * (np.maximum((side_a + np.minimum(top, MATCH_SCALE * side_a)) / 2.0, 1e-6)))
        r = r * (1.0 + 1e-9) + 1e-6
        lo = np.searchsorted(cx_sorted, cxa - r, side="left")
        hi = np.maximum(np.searchsorted(cx_sorted, cxa + r, side="right"), lo)
        counts = hi - lo
        i = np.repeat(np.arange(na), counts)
        off = np.zeros(na + 1, np.int64)
        np.cumsum(counts, out=off[1:])
        ia_parts.append(i)
        ib_parts.append(members[np.arange(int(off[-1]), dtype=np.int64) - off[i] + lo[i]])
        r_parts.append(r[i])
    ia, ib = np.concatenate(ia_parts), np.concatenate(ib_parts)
    la2, lb2 = _match_labels(la), _match_labels(lb)
    # the same reach bounds the centres' distance in y (IoU > 0 overlaps in y too)
    cya, cyb = (xa[:, 1] + xa[:, 3]) / 2.0, (xb[:, 1] + xb[:, 3]) / 2.0
    same = (la2[ia] == lb2[ib]) & (np.abs(cya[ia] - cyb[ib]) <= np.concatenate(r_parts))
    ia, ib = ia[same], ib[same]
    # _iou's and np.linalg.norm's arithmetic, on columns gathered one by one (much faster than
    # rows of a (K, 4) array); each box's area once
    fa, fb = xa.astype(np.float32).astype(np.float64), xb.astype(np.float32).astype(np.float64)
    area_a = np.clip(fa[:, 2] - fa[:, 0], 0, None) * np.clip(fa[:, 3] - fa[:, 1], 0, None)
    area_b = np.clip(fb[:, 2] - fb[:, 0], 0, None) * np.clip(fb[:, 3] - fb[:, 1], 0, None)
    iw = np.clip(np.minimum(fa[:, 2][ia], fb[:, 2][ib]) - np.maximum(fa[:, 0][ia], fb[:, 0][ib]), 0, None)
    ih = np.clip(np.minimum(fa[:, 3][ia], fb[:, 3][ib]) - np.maximum(fa[:, 1][ia], fb[:, 1][ib]), 0, None)
    inter = iw * ih
    union = area_a[ia] + area_b[ib] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    sa, sb = side_a[ia], side_b[ib]
    dx, dy = cxa[ia] - cxb[ib], cya[ia] - cyb[ib]
    dist = np.sqrt(dx * dx + dy * dy)
    size = np.maximum((sa + sb) / 2.0, 1e-6)
    norm = dist / (size * max(1, gap))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(sa, sb) / np.maximum(np.minimum(sa, sb), 1e-6)
    ok = (iou > MATCH_IOU) | ((norm <= MATCH_CENTRE) & (ratio <= MATCH_SCALE))
    flat = ia[ok] * nb + ib[ok]
    order = np.argsort(flat, kind="stable")
    return flat[order].astype(np.intp), iou[ok][order], norm[ok][order]


def _match_ok(xa: npt.NDArray[np.float64], la: npt.NDArray[np.int16], xb: npt.NDArray[np.float64],
              lb: npt.NDArray[np.int16], gap: int) -> Matches:
    """Which same-label pairs of boxes ``gap`` frames apart may be one object (module
    docstring), with their IoU and centre distance in box sizes per frame."""
    la, lb = _match_labels(la), _match_labels(lb)
    iou = iou_matrix(xa.astype(np.float32), xb.astype(np.float32))
    side_a = np.maximum(xa[:, 2] - xa[:, 0], xa[:, 3] - xa[:, 1])[:, None]
    side_b = np.maximum(xb[:, 2] - xb[:, 0], xb[:, 3] - xb[:, 1])[None, :]
    ca, cb = (xa[:, :2] + xa[:, 2:]) / 2.0, (xb[:, :2] + xb[:, 2:]) / 2.0
    dist = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2)
    size = np.maximum((side_a + side_b) / 2.0, 1e-6)
    norm = dist / (size * max(1, gap))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(side_a, side_b) / np.maximum(np.minimum(side_a, side_b), 1e-6)
    ok = (iou > MATCH_IOU) | ((norm <= MATCH_CENTRE) & (ratio <= MATCH_SCALE))
    ok &= la[:, None] == lb[None, :]
    return ok, iou, norm
