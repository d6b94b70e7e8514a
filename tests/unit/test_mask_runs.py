"""Masks drawn as row runs (issue 19, crowd target, session 13): the same pixels as the per-box,
per-pixel masks they replace.

The reference below is the algorithm main had before (28ff8fb), one box at a time: each box's
window and its own ellipse mask from the per-pixel test ``ny2 + nx2 <= 1``, overlapping regions
merged by ORing every member's mask into its group's, each group rendered and written in turn.
Every output here must be ``np.array_equal`` to it.
"""

import math
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import anonymize as anonymize_mod
from operators.anonymize import (
    ANONYMIZERS,
    ELLIPSE_MIN_PADDING,
    MERGE_SCALE,
    SHAPES,
    MaskSpec,
    anonymize_together,
    make_anonymizer,
)
from operators.types import Boxes, Label

STYLES = tuple(ANONYMIZERS)


# -- the reference: main's masking before row runs, one box at a time -------------------------

def _ref_ellipse_mask(r0, r1, c0, c1, box):
    x1, y1, x2, y2 = box
    cx, cy, a, b = (x1 + x2) / 2.0, (y1 + y2) / 2.0, (x2 - x1) / 2.0, (y2 - y1) / 2.0
    cols = np.arange(c0, c1, dtype=np.float64)
    rows = np.arange(r0, r1, dtype=np.float64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        nx = np.minimum(np.maximum((cols - cx) / a, 0.0), (cols + 1.0 - cx) / a)
        ny = np.minimum(np.maximum((rows - cy) / b, 0.0), (rows + 1.0 - cy) / b)
        return (ny[:, None] ** 2 + nx[None, :] ** 2) <= 1.0


def _ref_regions(anon, hw, boxes, region_mask=None):
    """``(y0, y1, x0, x1, mask or None, short)`` per region, as ``_regions`` computed them."""
    h, w = hw
    if h == 0 or w == 0:
        return []
    if len(boxes) and (boxes.label == Label.FRAME).any():
        return [(0, h, 0, w, None, float(min(h, w)))]
    ellipse = anon.spec.shape == "ellipse"
    pad = float(anon.spec.padding)
    p = max(pad, ELLIPSE_MIN_PADDING) if ellipse else pad
    out = []
    for x1, y1, x2, y2 in np.asarray(boxes.xyxy, np.float64).reshape(-1, 4).tolist():
        if any(math.isnan(v) for v in (x1, y1, x2, y2)):
            continue
        x1, x2 = sorted((min(max(x1, -2.0 * w), 3.0 * w), min(max(x2, -2.0 * w), 3.0 * w)))
        y1, y2 = sorted((min(max(y1, -2.0 * h), 3.0 * h), min(max(y2, -2.0 * h), 3.0 * h)))
        bw, bh = x2 - x1, y2 - y1
        px1, px2, py1, py2 = x1 - p * bw, x2 + p * bw, y1 - p * bh, y2 + p * bh
        c0, c1 = max(0, math.floor(px1)), min(w, math.ceil(px2))
        r0, r1 = max(0, math.floor(py1)), min(h, math.ceil(py2))
        if c1 <= c0 or r1 <= r0:
            continue
        mask = None
        if ellipse and px2 > px1 and py2 > py1:
            mask = _ref_ellipse_mask(r0, r1, c0, c1, (px1, py1, px2, py2))
            if not mask.any():
                continue
        out.append((r0, r1, c0, c1, mask, min(px2 - px1, py2 - py1)))
    if region_mask is not None:
        rm = np.asarray(region_mask, bool)
        rows = np.flatnonzero(rm.any(axis=1))
        if rows.size:
            cols = np.flatnonzero(rm.any(axis=0))
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            sub = rm[r0:r1, c0:c1]
            out.append((r0, r1, c0, c1, None if sub.all() else sub, float(min(r1 - r0, c1 - c0))))
    return out


def _ref_merged(regions):
    n = len(regions)
    if n < 2:
        return regions
    y0, y1, x0, x1 = (np.array([r[k] for r in regions], np.int64) for k in range(4))
    short = np.array([r[5] for r in regions], np.float64)
    free = np.ones(n, bool)
    out = []
    for lead in np.argsort(-short, kind="stable").tolist():
        if not free[lead]:
            continue
        members = np.flatnonzero(free & (y0 < y1[lead]) & (y1 > y0[lead]) & (x0 < x1[lead]) & (x1 > x0[lead])
                                 & (short * MERGE_SCALE >= short[lead]))
        members = members if members.size else np.array([lead])
        free[members] = False
        if members.size == 1:
            out.append(regions[int(members[0])])
            continue
        gy0, gy1 = int(y0[members].min()), int(y1[members].max())
        gx0, gx1 = int(x0[members].min()), int(x1[members].max())
        mask = np.zeros((gy1 - gy0, gx1 - gx0), bool)
        for k in members.tolist():
            r0, r1, c0, c1, m, _ = regions[k]
            sub = mask[r0 - gy0:r1 - gy0, c0 - gx0:c1 - gx0]
            if m is None:
                sub[...] = True
            else:
                sub |= m
        out.append((gy0, gy1, gx0, gx1, None if mask.all() else mask, float(short[lead])))
    out.reverse()
    return out


def _ref_write(anon, src, dst, regions):
    for y0, y1, x0, x1, mask, short in regions:
        rendered = anon._render(src[y0:y1, x0:x1], short)
        if mask is None:
            dst[y0:y1, x0:x1] = rendered
        else:
            dst[y0:y1, x0:x1][mask] = rendered[mask]


def _ref_together(frames, parts, into=None):
    groups = []
    for anon, boxes in parts:
        for g in groups:
            if g[0][0].renders_like(anon):
                g.append((anon, boxes))
                break
        else:
            groups.append([(anon, boxes)])
    out = frames.copy() if into is None else into
    h, w = frames.shape[1:3]
    for k, g in enumerate(groups):
        src = frames if k == 0 else out
        for i in range(frames.shape[0]):
            regions = [r for anon, boxes in g if len(boxes[i]) for r in _ref_regions(anon, (h, w), boxes[i])]
            if regions:
                _ref_write(g[0][0], src[i], out[i], _ref_merged(regions))
    return out


def _ref_anonymize(anon, frames, boxes, region_masks=None):
    out = frames.copy()
    for i in range(frames.shape[0]):
        rm = None if region_masks is None else region_masks[i]
        _ref_write(anon, frames[i], out[i], _ref_merged(_ref_regions(anon, frames.shape[1:3], boxes[i], rm)))
    return out


def _ref_coverage(anon, hw, boxes, region_mask=None):
    cov = np.zeros(hw, bool)
    for y0, y1, x0, x1, mask, _ in _ref_regions(anon, hw, boxes, region_mask):
        cov[y0:y1, x0:x1] |= True if mask is None else mask
    return cov


# -- scenes -------------------------------------------------------------------------------------

def _carried_crowd(rng, h, w, faces, copies):
    """Faces as temporal fill leaves them: each several jittered, grown copies of one box."""
    rows = []
    for _ in range(faces):
        s = rng.uniform(6, 60)
        x, y = rng.uniform(-10, w - s + 10), rng.uniform(-10, h - s + 10)
        for _ in range(copies):
            g, dx, dy = rng.uniform(0, 0.2), rng.uniform(-0.15, 0.15) * s, rng.uniform(-0.15, 0.15) * s
            rows.append([x + dx - g * s, y + dy - g * s, x + dx + (1 + g) * s, y + dy + (1 + g) * s])
    return np.array(rows, np.float32).reshape(-1, 4)


def _scene(kind, rng, h, w):
    if kind == "empty":
        return np.zeros((0, 4), np.float32)
    if kind == "crowd":  # many overlapping ellipses: carried copies of each face, neighbours touching
        return _carried_crowd(rng, h, w, faces=40, copies=8)
    if kind == "edges":  # boxes across every border and corner, centres off the frame
        rows = []
        for x in (-30.0, -5.5, -0.25, 0.0, w - 12.0, w - 0.5, w + 4.0):
            for y in (-30.0, -6.5, 0.0, h - 9.0, h - 0.75, h + 3.0):
                rows.append([x, y, x + rng.uniform(1, 40), y + rng.uniform(1, 40)])
        return np.array(rows, np.float32)
    if kind == "tiny":  # 1-2 px, sub-pixel, zero-area, on and off the pixel grid
        rows = []
        for _ in range(60):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            s = rng.choice([0.0, 0.01, 0.3, 0.5, 1.0, 1.5, 2.0])
            x = round(x) if rng.random() < 0.3 else x
            rows.append([x, y, x + s, y + rng.choice([s, 0.0, 1.0, 2.0])])
        return np.array(rows, np.float32)
    if kind == "huge":  # larger than the frame, far outside (clipped), inverted corners
        return np.array([[-1e6, -1e6, 1e6, 1e6], [-50, -40, w + 60, h + 30], [w * 0.9, h * 0.8, -w, -h],
                         [5, 5, w * 3.5, 8], [w / 2, -1e9, w / 2 + 30, 1e9], [10, 10, 60, 50]], np.float32)
    if kind == "mixed":  # all of it, and NaN corners
        rows = np.concatenate([_scene(k, rng, h, w) for k in ("crowd", "edges", "tiny", "huge")])
        rows[rng.integers(0, len(rows), 5), rng.integers(0, 4, 5)] = np.nan
        return rows
    raise AssertionError(kind)


KINDS = ("empty", "crowd", "edges", "tiny", "huge", "mixed")


def _seed(*parts):
    return zlib.crc32(repr(parts).encode())


def _frames(rng, n, h, w):
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# -- the row runs themselves ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_row_runs_are_the_per_pixel_test(seed):
    """Each row's run ``first..last`` is exactly the columns whose pixel passes ``ny2 + nx2 <= 1``,
    for centres on and off the pixel grid, tiny, huge and very flat ellipses."""
    rng = np.random.default_rng(seed)
    for _ in range(150):
        cx = rng.choice([rng.uniform(-20, 80), float(rng.integers(-20, 80)), rng.integers(-20, 80) + 0.5])
        cy = rng.uniform(-20, 80)
        a = float(rng.choice([rng.uniform(0.01, 3), rng.uniform(3, 60), 1e-9, 0.5, 1.0, 2.5, 400.0]))
        b = float(rng.choice([rng.uniform(0.01, 3), rng.uniform(3, 60), 1e-9, 0.5, 1.0, 2.5]))
        r0, r1 = math.floor(cy - b) - 2, math.ceil(cy + b) + 2
        c0, c1 = math.floor(cx - a) - 2, math.ceil(cx + a) + 2
        want = _ref_ellipse_mask(r0, r1, c0, c1, (cx - a, cy - b, cx + a, cy + b))
        x1, x2, y1, y2 = cx - a, cx + a, cy - b, cy + b
        rows = np.arange(r0, r1, dtype=np.float64)
        one = np.ones(len(rows))
        first, last = anonymize_mod._ellipse_row_runs(rows, one * ((x1 + x2) / 2.0), one * ((y1 + y2) / 2.0),
                                                      one * ((x2 - x1) / 2.0), one * ((y2 - y1) / 2.0))
        cols = np.arange(c0, c1)
        got = (cols[None, :] >= first[:, None]) & (cols[None, :] <= last[:, None])
        assert np.array_equal(got, want), (cx, cy, a, b)
        assert (first[want.any(axis=1)] > c0).all() and (last[want.any(axis=1)] < c1 - 1).all()


@pytest.mark.parametrize("seed", range(3))
def test_run_ends_are_found_from_any_estimate_on_their_side(seed):
    """The square-root estimate is usually right; the ends must come out the same from the centre
    column (every step outward) and from far beyond the end (every step inward)."""
    rng = np.random.default_rng(seed)
    n = 400
    cx, a = rng.uniform(-10, 10, n), rng.choice([0.3, 1.0, 7.5, 40.0], n) * rng.uniform(0.5, 1.5, n)
    ny2 = rng.choice([0.0, 0.5, 0.99, 1.0], n) * rng.uniform(0.0, 1.0, n)
    centre = np.floor(cx)
    cols = np.arange(-80, 81, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        nx = np.minimum(np.maximum((cols[None, :] - cx[:, None]) / a[:, None], 0.0),
                        (cols[None, :] + 1.0 - cx[:, None]) / a[:, None])
    inside = (ny2[:, None] + nx ** 2) <= 1.0
    want_last = cols[np.where(inside, np.arange(len(cols)), -1).max(axis=1)]
    want_first = cols[np.where(inside, np.arange(len(cols)), len(cols)).min(axis=1)]
    for start_right, start_left in ((centre, centre), (centre + 70.0, centre - 70.0)):
        last = anonymize_mod._run_end(start_right.copy(), cx, a, ny2, 1.0)
        first = anonymize_mod._run_end(start_left.copy(), cx, a, ny2, -1.0)
        assert np.array_equal(last, want_last) and np.array_equal(first, want_first)


@pytest.mark.parametrize("seed", range(4))
def test_paint_marks_every_run_overlapping_or_not(seed):
    rng = np.random.default_rng(seed)
    rows, width = 50, 30
    start = rng.integers(0, width, 400)
    end = np.minimum(width, start + rng.integers(1, 12, 400))
    row = rng.integers(0, rows, 400)
    want = np.zeros((rows, width), bool)
    for r, s, e in zip(row, start, end, strict=True):
        want[r, s:e] = True
    got = anonymize_mod._paint(rows * (width + 1), row * (width + 1) + start, row * (width + 1) + end)
    assert np.array_equal(got.reshape(rows, width + 1)[:, :width], want)


# -- whole outputs against the reference ----------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("style", STYLES)
def test_one_masker_is_the_reference(style, shape, kind):
    rng = np.random.default_rng(_seed(style, shape, kind))
    h, w = 90, 130
    frames = _frames(rng, 3, h, w)
    boxes = [Boxes.of(_scene(kind, rng, h, w)) for _ in range(3)]
    masker = make_anonymizer(MaskSpec(style=style, shape=shape, padding=0.2))
    assert np.array_equal(masker.anonymize(frames, boxes), _ref_anonymize(masker, frames, boxes))
    for b in boxes:
        assert np.array_equal(masker.coverage_mask((h, w), b), _ref_coverage(masker, (h, w), b))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("in_place", [False, True])
def test_several_maskers_together_are_the_reference(style, kind, in_place):
    """The stream's arrangement: an ellipse face masker, rect head/plate maskers of the same style
    (merged across labels), and one of another style after them; frames with and without boxes."""
    rng = np.random.default_rng(_seed(style, kind, in_place))
    h, w = 100, 160
    frames = _frames(rng, 5, h, w)
    face = make_anonymizer(MaskSpec(style=style, shape="ellipse", padding=0.2))
    head = make_anonymizer(MaskSpec(style=style, shape="rect", padding=0.05))
    plate = make_anonymizer(MaskSpec(style=style, shape="rect", padding=0.25))
    other = make_anonymizer(MaskSpec(style="fill" if style != "fill" else "blur", shape="ellipse", padding=0.1))
    faces = [Boxes.of(_scene(kind, rng, h, w)) for _ in range(5)]
    faces[2] = Boxes.empty()
    heads = [Boxes.of(f.xyxy * np.float32([1.0, 0.95, 1.0, 1.05]), None, Label.HEAD) for f in faces]
    plates = [Boxes.of(_scene("tiny" if i % 2 else "edges", rng, h, w), None, Label.PLATE) for i in range(5)]
    others = [Boxes.of(_scene("edges", rng, h, w)[:4]) for _ in range(5)]
    parts = [(face, faces), (head, heads), (plate, plates), (other, others)]
    want = _ref_together(frames, parts)
    if in_place:
        buf = frames.copy()
        assert anonymize_together(buf, parts, into=buf) is buf
        want = frames.copy()
        _ref_together(want, parts, into=want)
        assert np.array_equal(buf, want)
    else:
        assert np.array_equal(anonymize_together(frames, parts), want)


@pytest.mark.parametrize("batch", [1, 7, 300, 100_000])
def test_frames_batched_together_are_each_the_reference(monkeypatch, batch):
    """A chunk's frames have their regions drawn in batches of about ``_BATCH_BOXES`` boxes; wherever
    the batches are cut, every frame gets its own regions."""
    monkeypatch.setattr(anonymize_mod, "_BATCH_BOXES", batch)
    rng = np.random.default_rng(batch)
    h, w = 72, 96
    frames = _frames(rng, 9, h, w)
    faces = [Boxes.of(_scene(k, rng, h, w)) for k in ("crowd", "empty", "tiny", "empty", "edges", "huge",
                                                      "mixed", "crowd", "empty")]
    texts = [Boxes.of(_scene("tiny", rng, h, w)[:5], None, Label.TEXT) if i % 3 else Boxes.empty()
             for i in range(9)]
    face = make_anonymizer(MaskSpec(style="mosaic", shape="ellipse", padding=0.2))
    text = make_anonymizer(MaskSpec(style="mosaic", shape="rect", padding=0.25))
    parts = [(face, faces), (text, texts)]
    assert np.array_equal(anonymize_together(frames, parts), _ref_together(frames, parts))


def test_a_chunk_regions_are_drawn_in_one_pass_not_per_frame_and_label(monkeypatch):
    calls = []
    batch = anonymize_mod._layout_batch
    monkeypatch.setattr(anonymize_mod, "_layout_batch", lambda hw, frames: calls.append(len(frames)) or
                        batch(hw, frames))
    rng = np.random.default_rng(3)
    frames = _frames(rng, 12, 60, 80)
    face = make_anonymizer(MaskSpec(style="mosaic", shape="ellipse", padding=0.2))
    head = make_anonymizer(MaskSpec(style="mosaic", shape="rect", padding=0.05))
    faces = [Boxes.of(_carried_crowd(rng, 60, 80, 3, 4)) for _ in range(12)]
    parts = [(face, faces), (head, faces)]
    out = anonymize_together(frames, parts)
    assert calls == [12]
    assert np.array_equal(out, _ref_together(frames, parts))


@pytest.mark.parametrize("style", STYLES)
def test_whole_frame_boxes_and_zones_are_the_reference(style):
    rng = np.random.default_rng(11)
    h, w = 40, 50
    frames = _frames(rng, 4, h, w)
    zone = np.zeros((h, w), bool)
    zone[5:30, 3:12] = True
    zone[10:20, 20:44] = True  # two runs on some rows
    zone[25, 30] = True
    full = np.zeros((h, w), bool)
    full[4:9, 6:20] = True  # fills its bounding box
    boxes = [Boxes.of([[1, 1, 20, 20]], None, Label.FRAME), Boxes.of(_scene("edges", rng, h, w)),
             Boxes.of(np.concatenate([_scene("tiny", rng, h, w), [[2, 2, 9, 9]]]), None,
                      np.r_[np.zeros(60, np.int16), np.int16(Label.FRAME)]), Boxes.empty()]
    masks = [zone, zone, None, full]
    for shape in SHAPES:
        masker = make_anonymizer(MaskSpec(style=style, shape=shape, padding=0.15))
        assert np.array_equal(masker.anonymize(frames, boxes, masks), _ref_anonymize(masker, frames, boxes, masks))
        for b, m in zip(boxes, masks, strict=True):
            assert np.array_equal(masker.coverage_mask((h, w), b, m), _ref_coverage(masker, (h, w), b, m))


def test_empty_and_degenerate_frames():
    masker = make_anonymizer(MaskSpec(style="mosaic", shape="ellipse"))
    for shape in [(2, 0, 5, 3), (2, 5, 0, 3), (1, 1, 1, 3)]:
        frames = np.full(shape, 7, np.uint8)
        boxes = [Boxes.of([[0, 0, 3, 3], [-1, -1, 0.5, 0.5]]) for _ in range(shape[0])]
        assert np.array_equal(masker.anonymize(frames, boxes), _ref_anonymize(masker, frames, boxes))


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(*[st.floats(-40, 120, allow_nan=False, width=32)] * 4), min_size=0, max_size=25),
       padding=st.sampled_from([0.0, 0.15, 0.2, 0.5, 2.0]), shape=st.sampled_from(SHAPES),
       style=st.sampled_from(STYLES), seed=st.integers(0, 2**32 - 1))
def test_random_boxes_are_the_reference(rows, padding, shape, style, seed):
    rng = np.random.default_rng(seed)
    h, w = 48, 64
    frames = _frames(rng, 2, h, w)
    arr = np.array(rows, np.float32).reshape(-1, 4)
    face = make_anonymizer(MaskSpec(style=style, shape=shape, padding=padding))
    rect = make_anonymizer(MaskSpec(style=style, shape="rect", padding=0.1))
    parts = [(face, [Boxes.of(arr), Boxes.of(arr[::-1])]), (rect, [Boxes.of(arr[::2]), Boxes.empty()])]
    assert np.array_equal(anonymize_together(frames, parts), _ref_together(frames, parts))
    for b in parts[0][1]:
        assert np.array_equal(face.coverage_mask((h, w), b), _ref_coverage(face, (h, w), b))
