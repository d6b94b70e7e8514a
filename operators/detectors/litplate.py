"""Lit-plate second look: in a dark frame, bright plate-shaped patches are searched for text
at native resolution.

Why (docs/quality.md, "Plates round 3"): the plates that still leaked at 40 px and wider on
plates_traffic are all in dark frames (night, a red-lit tunnel), and most sit on vehicles
YOLOX-nano does not return, so the vehicle-crop pass never looks at them. The full-frame
text pass sees a 1280x720 frame at 640 px, where such a plate's characters are 6-9 px tall
and PP-OCRv5's probability there is ~0; at native resolution it is ~1.0 on every one of them.
Their colour is not the problem: the same crops scored alike raw, as the max-channel image,
with CLAHE on the luminance and with per-channel stretching. Running the full-frame pass at
native resolution costs x1.68 of the detection CPU; this pass looks at native resolution only
where a plate can be, the way a person would at night: a rear or front plate is lit (and
reflective), so it is a bright, wider-than-tall patch on a darker vehicle.

The pass (per frame):

1. frames whose median grey level is at or above ``DARK_MEDIAN`` are skipped: in daylight a
   plate is no brighter than its surroundings, and the other passes find it. The proposals
   come from the frame's value image (max channel: a plate under red or amber light stays
   bright) at ``SIDE`` px;
2. proposals: pixels ``CONTRAST`` levels brighter than their ``KERNEL`` px neighbourhood,
   closed horizontally (the gaps between characters), components ``MIN_W``-``MAX_W`` px wide
   with a plate's aspect (``MIN_ASPECT``-``MAX_ASPECT``) that fill most of their box;
3. proposals whose centre a text box of the full-frame pass already covers are dropped; the
   ``MAX_WINDOWS`` widest others get a window around them (the plate and what its unclipped
   text box needs), zoomed so the plate is about ``TARGET_H`` px tall (1x-3x of native),
   packed onto shared canvases and run through the same text network. Its boxes are text
   boxes like the full-frame pass's: the same score threshold applies.

A frame that is not dark costs a grey histogram of a sixteenth of its pixels; a dark frame
a few small crops through the network.

The windows miss a plate that is no brighter than what surrounds it (a plate on a car lit as
brightly as the bus beside it) or that merges with its tail lights into one patch (issue 20,
"plates round 3"). So a frame darker than ``NATIVE_MEDIAN`` also gets the full-frame pass at up to
native resolution (``NATIVE_SIDE``, :func:`full_pass_scale`) instead of its 640 px: every plate
is read where it can be read, at about 4x the full-frame pass's pixels, in dark frames only.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

SIDE = 640
"""The value image's longer side (frames smaller than this are used as they are)."""
DARK_MEDIAN = 70.0
"""Frames whose median grey level (0-255) is at or above this are not searched. Set by cost:
daylight footage stays out with a margin (the 720p load source's frames and ``make bench``'s
input have medians of 107-113; a dark frame is one whose median is under about two thirds of
that). The plates_traffic sweep over the gate is in docs/quality.md "Plates round 3"."""
KERNEL = 31
"""Neighbourhood (px at ``SIDE``) a patch must be brighter than: about two plate widths."""
CONTRAST = 25
"""Levels a pixel must exceed its neighbourhood's mean by."""
MIN_VALUE = 60
"""... and its own value at least this (no proposals in the black)."""
MIN_W, MAX_W = 12, 120
"""Proposal width bounds, px at ``SIDE`` (24-240 px plates on a 1280 px frame)."""
MIN_H, MAX_H = 4, 40
MIN_ASPECT, MAX_ASPECT = 1.8, 7.0
"""Plate aspect (width / height): a square-ish EU two-line plate is 1.3 but is not what leaks
at night; the long EU plate is 4.7, and a lit patch can run a little past the plate."""
MIN_FILL = 0.4
"""A proposal's component fills at least this share of its box (a plate is a rectangle)."""
MAX_WINDOWS = 6
"""Windows searched per frame, widest proposals first."""
BESIDE, ABOVE = 0.6, 1.5
"""A window reaches ``BESIDE`` of its proposal's width left and right of it and ``ABOVE`` of its
height above and below."""
TARGET_H = 32.0
"""A window is zoomed so its proposal is about this tall (px), between 1x and 3x."""
MAX_ZOOM = 3.0
CANVAS_W, CANVAS_H, GAP = 640, 352, 32
DIM_MEDIAN = 70.0
"""Frames whose median grey level lies between ``DARK_MEDIAN`` and this get fewer windows, in
proportion (:func:`window_budget`); at or above it none (equal to ``DARK_MEDIAN``: the plain
gate)."""
NATIVE_SIDE: int | None = 1280
"""In a frame darker than ``NATIVE_MEDIAN`` the full-frame text pass runs at up to this longer
side instead of its own (640 px by default; ``None``: its own). Dark plates the 640 px pass sees
at 6-9 px per character, PP-OCRv5 scores about 1.0 at native resolution (docs/quality.md
"Plates round 3"); the plate-shaped windows below miss those no brighter than what surrounds
them (a plate on a lit car beside a bus) or merged with its tail lights."""
NATIVE_MEDIAN = 85.0
"""... darker: median grey level (:func:`median_grey`) below this. Chosen on plates_traffic
(``load_tests/dark_native_sweep.py``, gates 70 / 85 / 100; the set it is measured on, so tuned
on it): 85 is the lowest that masks every plate >= 40 px there; daylight stays out with a
margin (``make bench``'s input and the 720p load source: 107-113)."""
COVER_SHARE = 0.8
"""A proposal counts as covered when one such box holds at least this share of it (its centre
alone is not enough: a box on part of a plate, "B 609 NYK" of ``ro_dayride_type1_001_t1596``
under the native full-frame pass, left the rest of it unsearched and unmasked)."""
COVER_SCORE = 0.25
"""Full-frame text boxes scoring at least this cover a proposal (it is not searched again):
the default text threshold, fixed so that the eval cache (filled at a floor of 0.15) skips
the same proposals as the default run."""


def params() -> dict[str, object]:
    """The pass's constants (the eval cache's signature includes them)."""
    return {"side": SIDE, "dark_median": DARK_MEDIAN, "kernel": KERNEL, "contrast": CONTRAST, "min_value": MIN_VALUE,
            "w": (MIN_W, MAX_W), "h": (MIN_H, MAX_H), "aspect": (MIN_ASPECT, MAX_ASPECT), "fill": MIN_FILL,
            "windows": MAX_WINDOWS, "target_h": TARGET_H, "max_zoom": MAX_ZOOM, "cover": COVER_SCORE,
            "cover_share": COVER_SHARE,
            # added after the cache was first signed: present only where they change the pass
            **({"beside": BESIDE, "above": ABOVE} if (BESIDE, ABOVE) != (0.6, 1.5) else {}),
            **({"dim_median": DIM_MEDIAN} if DIM_MEDIAN != DARK_MEDIAN else {}),
            **({"native_side": NATIVE_SIDE, "native_median": NATIVE_MEDIAN} if NATIVE_SIDE is not None else {})}


def value_image(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """The max-channel image of a BGR frame at ``SIDE`` px (never upscaled) and its scale."""
    h, w = frame.shape[:2]
    s = min(1.0, SIDE / max(h, w))
    small = frame if s == 1.0 else cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))),
                                              interpolation=cv2.INTER_AREA)
    v = small.max(axis=2) if small.ndim == 3 else small
    return np.ascontiguousarray(v), s


def median_grey(frame: np.ndarray) -> int:
    """A BGR frame's median grey level (0-255) on every 4th pixel of every 4th row."""
    sub = np.ascontiguousarray(frame[::4, ::4])
    grey = cv2.cvtColor(sub, cv2.COLOR_BGR2GRAY) if sub.ndim == 3 else sub
    hist = np.bincount(grey.ravel(), minlength=256)
    return int(np.searchsorted(np.cumsum(hist), (grey.size + 1) // 2))


def is_dark(frame: np.ndarray, dark_median: float = DARK_MEDIAN) -> bool:
    """Whether a BGR frame's median grey level (:func:`median_grey`) is below ``dark_median``."""
    return median_grey(frame) < dark_median


def darkness(median: float, dark_median: float = DARK_MEDIAN, dim_median: float | None = None) -> float:
    """How fully the pass runs on a frame of this median grey level: 1 below ``dark_median``,
    0 at or above ``dim_median`` (default ``DIM_MEDIAN``), linear between (no step in cost at
    one grey level: a dusk frame gets part of the dark frame's search)."""
    dim = DIM_MEDIAN if dim_median is None else dim_median
    if median < dark_median:
        return 1.0
    if median >= dim or dim <= dark_median:
        return 0.0
    return (dim - median) / (dim - dark_median)


def window_budget(median: float, dark_median: float = DARK_MEDIAN, dim_median: float | None = None) -> int:
    """Windows the pass may search in a frame of this median grey level: ``MAX_WINDOWS`` times
    its :func:`darkness`, rounded up."""
    return int(np.ceil(MAX_WINDOWS * darkness(median, dark_median, dim_median)))


def full_pass_scale(median: float, hw: tuple[int, int], base: float) -> float:
    """The full-frame text pass's scale for a frame of this median grey level and size: the
    pass's own ``base`` scale, or in a frame darker than ``NATIVE_MEDIAN`` up to native
    resolution (longer side at most ``NATIVE_SIDE``; never below ``base``). Two values, not a
    ramp: every input size is a compile on OpenVINO's static shapes and a kernel search on a
    GPU."""
    if NATIVE_SIDE is None or median >= NATIVE_MEDIAN:
        return base
    return max(base, min(1.0, NATIVE_SIDE / max(hw)))


def proposals(v: np.ndarray, scale: float) -> np.ndarray:
    """``(K, 4)`` float32 xyxy in frame px: bright plate-shaped patches of value image ``v``
    (at ``scale`` of the frame), widest first."""
    bg = cv2.blur(v, (KERNEL, KERNEL))
    m = (v.astype(np.int16) - bg.astype(np.int16) > CONTRAST) & (v >= MIN_VALUE)
    m8 = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 9), np.uint8))
    n, _, st, _ = cv2.connectedComponentsWithStats(m8)
    out = []
    for k in range(1, n):
        x, y, w, h, a = (int(t) for t in st[k])
        if MIN_W <= w <= MAX_W and MIN_H <= h <= MAX_H and MIN_ASPECT <= w / h <= MAX_ASPECT and a >= MIN_FILL * w * h:
            out.append((x, y, x + w, y + h))
    if not out:
        return np.zeros((0, 4), np.float32)
    b = np.asarray(out, np.float32) / np.float32(scale)
    return b[np.argsort(-(b[:, 2] - b[:, 0]), kind="stable")]


def windows(props: np.ndarray, hw: tuple[int, int], covered: np.ndarray,
            budget: int | None = None) -> list[tuple[int, int, int, int, float]]:
    """``(x0, y0, x1, y1, zoom)`` frame windows to search: one per proposal no box of
    ``covered`` (``(M, 4)`` xyxy) covers (``COVER_SHARE`` of it), at most ``budget`` (default ``MAX_WINDOWS``); each reaches
    0.6 of the proposal's width beside it and 1.5 of its height above and below, and fits a
    ``CANVAS_W`` x ``CANVAS_H`` canvas at its zoom."""
    h, w = hw
    cap = MAX_WINDOWS if budget is None else budget
    out: list[tuple[int, int, int, int, float]] = []
    if cap <= 0:
        return out
    for x1, y1, x2, y2 in props.tolist():
        pw, ph = x2 - x1, y2 - y1
        if len(covered):
            iw = np.clip(np.minimum(covered[:, 2], x2) - np.maximum(covered[:, 0], x1), 0, None)
            ih = np.clip(np.minimum(covered[:, 3], y2) - np.maximum(covered[:, 1], y1), 0, None)
            if float((iw * ih).max()) >= COVER_SHARE * pw * ph:
                continue
        box = (int(max(0, x1 - BESIDE * pw)), int(max(0, y1 - ABOVE * ph)),
               int(min(w, x2 + BESIDE * pw)), int(min(h, y2 + ABOVE * ph)))
        bw, bh = box[2] - box[0], box[3] - box[1]
        if bw < 8 or bh < 8:
            continue
        z = min(MAX_ZOOM, max(1.0, TARGET_H / max(ph, 1.0)),
                (CANVAS_W - GAP) / bw, (CANVAS_H - GAP) / bh)
        if z <= 0:
            continue
        out.append((*box, z))
        if len(out) >= cap:
            break
    return out


def search(frame: np.ndarray, covered: np.ndarray, run: Callable[[np.ndarray], np.ndarray],
           pack: Callable[..., tuple[list[tuple[int, int, int]], list[tuple[int, int]]]],
           boxes_of: Callable[[np.ndarray, float, float, float, float], list[tuple[list[float], float]]],
           *, dark_median: float = DARK_MEDIAN, budget: int | None = None) -> list[tuple[list[float], float]]:
    """The pass on one BGR frame: text boxes (frame px) and scores found in its windows.

    Args:
        covered: text boxes already found on the frame (their proposals are skipped).
        run: the text network on a ``(N, H, W, 3)`` uint8 BGR batch -> ``(N, H, W)`` probabilities.
        pack: :func:`~operators.detectors.text.pack_shelves`.
        boxes_of: a probability map's boxes mapped by scale and offset (``TextDetector._boxes``).
        dark_median: the gate (:func:`window_budget`).
        budget: windows to search at most (default: :func:`window_budget` of the frame's median
            grey level).
    """
    if budget is None:
        budget = window_budget(median_grey(frame), dark_median)
    if budget <= 0:
        return []
    v, s = value_image(frame)
    wins = windows(proposals(v, s), frame.shape[:2], covered, budget)
    if not wins:
        return []
    sizes = [(max(1, round((x1 - x0) * z)), max(1, round((y1 - y0) * z))) for x0, y0, x1, y1, z in wins]
    places, shapes = pack([(a + GAP, b + GAP) for a, b in sizes], CANVAS_W, CANVAS_H, 0)
    found: list[tuple[list[float], float]] = []
    for c, (cw, ch) in enumerate(shapes):
        on = [k for k, p in enumerate(places) if p[0] == c]
        blob = np.zeros((1, ch, cw, 3), np.uint8)
        for k in on:
            x0, y0, x1, y1, z = wins[k]
            zw, zh = sizes[k]
            _, px, py = places[k]
            crop = frame[y0:y1, x0:x1]
            blob[0, py:py + zh, px:px + zw] = crop if (zw, zh) == (x1 - x0, y1 - y0) else cv2.resize(
                crop, (zw, zh), interpolation=cv2.INTER_CUBIC)
        prob = run(blob)[0]
        for k in on:
            x0, y0, x1, y1, _ = wins[k]
            zw, zh = sizes[k]
            _, px, py = places[k]
            inv = (x1 - x0) / zw
            found.extend(boxes_of(prob[py:py + zh, px:px + zw], inv, inv, float(x0), float(y0)))
    return found
