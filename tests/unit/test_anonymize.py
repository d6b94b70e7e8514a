import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import anonymize as anonymize_mod
from operators.anonymize import (
    ANONYMIZERS,
    ELLIPSE_MIN_PADDING,
    SHAPES,
    BlurAnonymizer,
    FillAnonymizer,
    MaskSpec,
    MosaicAnonymizer,
    anonymize_together,
    make_anonymizer,
    mosaic_block_px,
)
from operators.types import Boxes, ConfigError, Label

STYLES = tuple(ANONYMIZERS)
AMP = 40  # checkerboard amplitude used to probe for surviving high-frequency detail


def _checkerboard(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where((yy + xx) % 2 == 0, AMP, -AMP).astype(np.int16)[..., None]


@st.composite
def scenes(draw):
    h = draw(st.integers(1, 40))
    w = draw(st.integers(1, 40))
    n = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Keep values away from 0/255 so the checkerboard probe never saturates.
    frames = rng.integers(AMP, 256 - AMP, (n, h, w, 3), dtype=np.uint8)
    coord_x = st.floats(-15, w + 15, allow_nan=False)
    coord_y = st.floats(-15, h + 15, allow_nan=False)
    boxes = []
    for _ in range(n):
        k = draw(st.integers(0, 4))
        rows = [[draw(coord_x), draw(coord_y), draw(coord_x), draw(coord_y)] for _ in range(k)]
        labels = [draw(st.sampled_from([Label.FACE, Label.PLATE, Label.FACE, Label.FRAME]))
                  for _ in range(k)]
        boxes.append(Boxes.of(np.array(rows, np.float32).reshape(-1, 4), None, np.array(labels, np.int16)))
    return frames, boxes


def _per_box_regions(masker, hw, boxes):
    return [masker.coverage_mask(hw, boxes.select(np.array([i]))) for i in range(len(boxes))]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("shape", SHAPES)
@settings(max_examples=50, deadline=None)
@given(scene=scenes(), padding=st.sampled_from([0.0, 0.15, 0.5]))
def test_no_original_pixel_survives_inside_padded_box(style, shape, scene, padding):
    frames, boxes = scene
    masker = make_anonymizer(MaskSpec(style=style, shape=shape, padding=padding))
    before = frames.copy()
    out = masker.anonymize(frames, boxes)
    assert np.array_equal(frames, before), "input was mutated"
    assert out.shape == frames.shape and out.dtype == np.uint8 and out is not frames

    noisy = (frames.astype(np.int16) + _checkerboard(*frames.shape[1:3])).astype(np.uint8)
    out_noisy = masker.anonymize(noisy, boxes)
    hw = frames.shape[1:3]
    for i, b in enumerate(boxes):
        cov = masker.coverage_mask(hw, b)
        # Outside the coverage mask nothing changes, bit for bit.
        assert np.array_equal(out[i][~cov], frames[i][~cov])
        regions = _per_box_regions(masker, hw, b)
        if any(int(r.sum()) == 1 for r in regions):
            continue  # a 1-pixel region is its own low-res summary; nothing to probe
        # Inside: the output depends on a low-res summary only, so a +-AMP checkerboard
        # (invisible after averaging any 2+ px cell) barely moves it.
        diff = np.abs(out[i].astype(int) - out_noisy[i].astype(int))[cov]
        assert diff.size == 0 or diff.max() <= AMP // 2 + 1
        if style == "fill":
            assert (out[i][cov] == 0).all()


@pytest.mark.parametrize("shape", SHAPES)
@settings(max_examples=50, deadline=None)
@given(scene=scenes())
def test_coverage_mask_contains_every_changed_pixel_and_the_box_core(shape, scene):
    frames, boxes = scene
    masker = MosaicAnonymizer(MaskSpec(style="mosaic", shape=shape, padding=0.1))
    out = masker.anonymize(frames, boxes)
    h, w = frames.shape[1:3]
    for i, b in enumerate(boxes):
        cov = masker.coverage_mask((h, w), b)
        changed = (out[i] != frames[i]).any(axis=-1)
        assert not (changed & ~cov).any()
        for (x1, y1, x2, y2), lb in zip(b.xyxy, b.label, strict=True):
            if lb == Label.FRAME:
                assert cov.all()
                continue
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            if 0 <= cx < w and 0 <= cy < h and x1 != x2 and y1 != y2:  # zero-area may mask nothing
                assert cov[int(cy), int(cx)], "box centre not masked"
            # every pixel lying fully inside the (unpadded) box is masked, by either shape
            # (an ellipse circumscribes the box: ELLIPSE_MIN_PADDING)
            c0, c1 = max(0, math.ceil(min(x1, x2))), min(w, math.floor(max(x1, x2)))
            r0, r1 = max(0, math.ceil(min(y1, y2))), min(h, math.floor(max(y1, y2)))
            if c1 > c0 and r1 > r0:
                assert cov[r0:r1, c0:c1].all()


def test_mosaic_blocks_scale_with_box_and_are_constant():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (1, 300, 400, 3), dtype=np.uint8)
    box = [50.0, 40.0, 250.0, 260.0]  # 200 x 220, no padding
    masker = MosaicAnonymizer(MaskSpec(style="mosaic", padding=0.0, strength=6))
    out = masker.anonymize(frames, [Boxes.of([box])])
    roi = out[0, 40:260, 50:250].astype(int)
    bs = mosaic_block_px(200.0, 6)
    assert bs == 34
    # every horizontal and vertical run of equal pixels is at least one block long
    for arr in (roi, roi.transpose(1, 0, 2)):
        for row in arr:
            edges = np.flatnonzero((row[1:] != row[:-1]).any(axis=-1)) + 1
            runs = np.diff(np.concatenate([[0], edges, [len(row)]]))
            assert runs.min() >= bs
    assert len(np.unique(roi.reshape(-1, 3), axis=0)) <= (220 // bs) * (200 // bs)


def test_blur_is_not_a_small_fixed_kernel():
    frames = np.zeros((1, 200, 200, 3), np.uint8)
    frames[0, :, 100:] = 255  # a sharp edge in the middle of the box
    out = BlurAnonymizer(MaskSpec(style="blur", padding=0.0)).anonymize(frames, [Boxes.of([[20, 20, 180, 180]])])
    row = out[0, 100, 20:180, 0].astype(int)
    ramp = np.flatnonzero((row > 20) & (row < 235))
    assert len(ramp) >= 20, "edge still sharp: blur does not scale with the box"


# (name, boxes, expected covered pixel rectangle as (r0, r1, c0, c1) or None) on a 32 x 48 frame
EDGE_CASES = [
    ("empty", Boxes.empty(), None),
    ("touching top-left border", Boxes.of([[0, 0, 10, 10]]), (0, 10, 0, 10)),
    ("touching bottom-right border", Boxes.of([[40, 24, 48, 32]]), (24, 32, 40, 48)),
    ("zero-area on pixel corner", Boxes.of([[5, 5, 5, 5]]), None),
    ("zero-area inside a pixel", Boxes.of([[5.5, 6.5, 5.5, 6.5]]), (6, 7, 5, 6)),
    ("outside the frame", Boxes.of([[100, 100, 120, 120]]), None),
    ("partly outside", Boxes.of([[-10, -10, 4.2, 3.0]]), (0, 3, 0, 5)),
    ("inverted corners", Boxes.of([[10, 12, 2, 4]]), (4, 12, 2, 10)),
    ("nan corner ignored", Boxes.of([[np.nan, 0, 10, 10]]), None),
    ("infinite box clipped", Boxes.of([[-np.inf, -np.inf, np.inf, np.inf]]), (0, 32, 0, 48)),
    ("whole-frame label", Boxes.of([[3, 3, 4, 4]], label=Label.FRAME), (0, 32, 0, 48)),
]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("name,boxes,expected", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_cases(style, name, boxes, expected):
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    masker = make_anonymizer(MaskSpec(style=style, shape="rect", padding=0.0))
    out = masker.anonymize(frames, [boxes])
    cov = masker.coverage_mask((32, 48), boxes)
    want = np.zeros((32, 48), bool)
    if expected is not None:
        r0, r1, c0, c1 = expected
        want[r0:r1, c0:c1] = True
    assert np.array_equal(cov, want)
    assert np.array_equal(out[0][~cov], frames[0][~cov])


def test_padding_is_relative_to_box_size():
    masker = FillAnonymizer(MaskSpec(style="fill", padding=0.25))
    cov = masker.coverage_mask((100, 100), Boxes.of([[40, 40, 60, 80]]))  # 20 x 40
    rows, cols = np.flatnonzero(cov.any(1)), np.flatnonzero(cov.any(0))
    assert (cols[0], cols[-1] + 1, rows[0], rows[-1] + 1) == (35, 65, 30, 90)


def test_ellipse_is_inside_padded_rect_and_leaves_corners():
    spec = dict(style="fill", padding=0.25)
    box = Boxes.of([[20, 20, 80, 100]])
    rect = make_anonymizer(MaskSpec(shape="rect", **spec)).coverage_mask((128, 128), box)
    ell = make_anonymizer(MaskSpec(shape="ellipse", **spec)).coverage_mask((128, 128), box)
    assert not (ell & ~rect).any()
    assert ell.sum() < rect.sum() and ell.sum() > 0.75 * math.pi / 4 * rect.sum()
    assert not ell[6, 6] and ell[60, 50]


@pytest.mark.parametrize("padding", [0.0, 0.1, 0.2, ELLIPSE_MIN_PADDING, 0.3])
@pytest.mark.parametrize("xyxy", [[20, 20, 80, 100], [10.3, 40.7, 17.9, 44.2], [50, 10, 51, 90], [0, 0, 60, 30]])
def test_ellipse_circumscribes_the_detection_box(padding, xyxy):
    """Whatever the padding, an ellipse mask covers every pixel the unpadded box touches
    (it is padded at least ELLIPSE_MIN_PADDING), and stays inside the rectangle padded by
    max(padding, ELLIPSE_MIN_PADDING)."""
    box = Boxes.of([xyxy])
    ell = FillAnonymizer(MaskSpec(style="fill", shape="ellipse", padding=padding)).coverage_mask((128, 128), box)
    x1, y1, x2, y2 = xyxy
    assert ell[math.floor(y1):math.ceil(y2), math.floor(x1):math.ceil(x2)].all()
    floor = FillAnonymizer(MaskSpec(style="fill", padding=max(padding, ELLIPSE_MIN_PADDING))).coverage_mask(
        (128, 128), box)
    assert not (ell & ~floor).any()
    # and no bigger than needed: at the floor it is the circumscribing ellipse, pi/2 x the box
    if padding <= ELLIPSE_MIN_PADDING and min(x2 - x1, y2 - y1) >= 30 and x1 > 0:
        assert ell.sum() < 1.15 * math.pi / 2 * (x2 - x1) * (y2 - y1)


def test_tiny_ellipse_never_vanishes():
    masker = MosaicAnonymizer(MaskSpec(style="mosaic", shape="ellipse", padding=0.0))
    cov = masker.coverage_mask((10, 10), Boxes.of([[4.2, 4.2, 4.8, 4.8]]))
    assert cov.sum() == 1 and cov[4, 4]


def test_region_masks_are_masked_and_reported():
    frames = np.full((2, 20, 30, 3), 200, np.uint8)
    zone = np.zeros((20, 30), bool)
    zone[2:5, 3:9] = True
    masker = FillAnonymizer(MaskSpec(style="fill", strength=(1, 2, 3), padding=0.0))
    out = masker.anonymize(frames, [Boxes.empty(), Boxes.of([[20, 10, 25, 15]])], [zone, None])
    assert (out[0][zone] == [1, 2, 3]).all() and (out[0][~zone] == 200).all()
    assert (out[1, 10:15, 20:25] == [1, 2, 3]).all() and (out[1, 2:5, 3:9] == 200).all()
    cov = masker.coverage_mask((20, 30), Boxes.empty(), zone)
    assert np.array_equal(cov, zone)
    with pytest.raises(ValueError, match="region mask"):
        masker.anonymize(frames, [Boxes.empty()] * 2, [np.ones((5, 5), bool), None])


@pytest.mark.parametrize("style", STYLES)
def test_empty_batch_and_length_mismatch(style):
    masker = make_anonymizer(MaskSpec(style=style))
    empty = np.zeros((0, 8, 8, 3), np.uint8)
    assert masker.anonymize(empty, []).shape == (0, 8, 8, 3)
    with pytest.raises(ValueError, match="1 Boxes for 2 frames"):
        masker.anonymize(np.zeros((2, 8, 8, 3), np.uint8), [Boxes.empty()])
    with pytest.raises(ValueError, match="uint8"):
        masker.anonymize(np.zeros((1, 8, 8, 3), np.float32), [Boxes.empty()])


def test_registry_is_explicit():
    assert ANONYMIZERS == {"mosaic": MosaicAnonymizer, "blur": BlurAnonymizer, "fill": FillAnonymizer}
    for style, cls in ANONYMIZERS.items():
        assert isinstance(make_anonymizer(MaskSpec(style=style)), cls)


@pytest.mark.parametrize(
    "spec,message",
    [
        (MaskSpec(style="pixelate"), "style: expected one of mosaic, blur, fill, got 'pixelate'"),
        (MaskSpec(shape="circle"), "shape: expected one of rect, ellipse, got 'circle'"),
        (MaskSpec(padding=-0.1), "padding: expected a number in [0, 2]"),
        (MaskSpec(style="mosaic", strength=0.5), "strength: mosaic expects"),
        (MaskSpec(style="blur", strength=15), "strength: blur expects"),
        (MaskSpec(style="fill", strength=(0, 0, 300)), "strength: fill expects a BGR colour"),
        (MaskSpec(style="fill", strength=0.5), "strength: fill expects a BGR colour"),
    ],
)
def test_bad_specs_name_the_value_and_the_allowed_ones(spec, message):
    with pytest.raises(ConfigError) as err:
        make_anonymizer(spec)
    assert message in str(err.value)


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as err:
        make_anonymizer(MaskSpec(style="x", shape="y", padding=9))
    assert "style:" in str(err.value) and "shape:" in str(err.value) and "padding:" in str(err.value)


def test_class_rejects_other_style():
    with pytest.raises(ConfigError, match="style"):
        MosaicAnonymizer(MaskSpec(style="blur"))


@pytest.mark.parametrize("style", ["blur", "mosaic"])
@pytest.mark.parametrize("period", [4, 8])
def test_detail_finer_than_the_low_res_cells_is_gone(style, period):
    # The Nyquist checkerboard above is also killed by a 3x3 blur; stripes a few pixels
    # wide are not, unless the ROI really was decimated to cells that scale with the box.
    rng = np.random.default_rng(3)
    base = rng.integers(AMP, 256 - AMP, (1, 1, 1, 3), dtype=np.uint8)
    frames = np.broadcast_to(base, (1, 160, 160, 3)).copy()
    xx = np.arange(160)
    stripes = np.where((xx // (period // 2)) % 2 == 0, AMP, -AMP).astype(np.int16)[None, :, None]
    noisy = (frames.astype(np.int16) + stripes).astype(np.uint8)
    box = [Boxes.of([[20, 20, 140, 140]])]  # 120 px: cells of 20 px at the defaults
    masker = make_anonymizer(MaskSpec(style=style, padding=0.0))
    a = masker.anonymize(frames, box)[0, 20:140, 20:140].astype(int)
    b = masker.anonymize(noisy, box)[0, 20:140, 20:140].astype(int)
    # averaging a 20 px cell leaves at most one unpaired stripe: (period / 2) / 20 of AMP
    assert np.abs(a - b).max() <= AMP * (period / 2) / 20 + 1


@pytest.mark.parametrize("style", STYLES)
def test_into_writes_the_same_pixels_in_place_with_one_copy_per_chunk(style):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    boxes = [Boxes.of([[5, 5, 30, 30], [20, 20, 50, 40]]), Boxes.of([[40, 2, 60, 20]])]
    masker = make_anonymizer(MaskSpec(style=style))
    expected = masker.anonymize(frames, boxes)
    buf = frames.copy()
    assert masker.anonymize(frames, boxes, into=buf) is buf and np.array_equal(buf, expected)
    # fully in place (the redactor's later maskers): the same pixels change, nothing outside
    same = frames.copy()
    assert masker.anonymize(same, boxes, into=same) is same
    for i in range(2):
        cov = masker.coverage_mask((48, 64), boxes[i])
        assert np.array_equal(same[i][~cov], frames[i][~cov])
        assert np.array_equal(same[i] != frames[i], expected[i] != frames[i]) or style != "fill"
    with pytest.raises(ValueError, match="into"):
        masker.anonymize(frames, boxes, into=np.zeros((1, 48, 64, 3), np.uint8))


# -- one render per group of overlapping boxes (issue 19: ~345 regions a crowded frame) --------


def _carried_crowd(rng: np.random.Generator, h: int, w: int, faces: int, copies: int) -> Boxes:
    """Faces as temporal fill leaves them: each several jittered, grown copies of one box."""
    rows = []
    for _ in range(faces):
        s = rng.uniform(6, 60)
        x, y = rng.uniform(-10, w - s + 10), rng.uniform(-10, h - s + 10)
        for _ in range(copies):
            g, dx, dy = rng.uniform(0, 0.2), rng.uniform(-0.15, 0.15) * s, rng.uniform(-0.15, 0.15) * s
            rows.append([x + dx - g * s, y + dy - g * s, x + dx + (1 + g) * s, y + dy + (1 + g) * s])
    return Boxes.of(np.array(rows, np.float32), None, np.full(len(rows), Label.FACE, np.int16))


def _one_at_a_time(masker, hw, boxes) -> np.ndarray:
    cov = np.zeros(hw, bool)
    for i in range(len(boxes)):
        cov |= masker.coverage_mask(hw, boxes.select(np.array([i])))
    return cov


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", range(4))
def test_overlapping_boxes_are_rendered_once_and_every_pixel_of_each_is_masked(style, shape, seed):
    rng = np.random.default_rng(seed)
    h, w = 120, 200
    frames = rng.integers(AMP, 256 - AMP, (1, h, w, 3), dtype=np.uint8)
    boxes = _carried_crowd(rng, h, w, faces=12, copies=5)
    masker = make_anonymizer(MaskSpec(style=style, shape=shape, padding=0.2))
    regions = masker._regions((h, w), boxes, None)
    groups = anonymize_mod._merged(regions)
    assert len(groups) < len(regions)  # the copies of one face are one render
    cov = masker.coverage_mask((h, w), boxes)
    # the coverage is exactly the union of the boxes' own (fail closed: no pixel of any box lost)
    assert np.array_equal(cov, _one_at_a_time(masker, (h, w), boxes))
    union = np.zeros((h, w), bool)
    for g in groups:
        union[g.y0:g.y1, g.x0:g.x1] |= True if g.mask is None else g.mask
    assert np.array_equal(union, cov)
    out = masker.anonymize(frames, [boxes])
    assert np.array_equal(out[0][~cov], frames[0][~cov])
    # inside, the output is a function of a coarse grid: a checkerboard does not get through
    noisy = (frames.astype(np.int16) + _checkerboard(h, w)).astype(np.uint8)
    out_noisy = masker.anonymize(noisy, [boxes])
    diff = np.abs(out[0].astype(int) - out_noisy[0].astype(int))[cov]
    assert diff.max() <= AMP // 2 + 1
    if style != "fill":
        assert (out[0] != frames[0]).any(axis=-1)[cov].mean() > 0.9


def test_a_group_cells_are_never_smaller_than_any_member_block():
    rng = np.random.default_rng(7)
    h, w = 160, 160
    frames = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    masker = MosaicAnonymizer(MaskSpec(style="mosaic", shape="rect", padding=0.0))
    # one face, five copies of scales within MERGE_SCALE: one group, cells sized by the largest
    boxes = Boxes.of([[40, 40, 100, 100], [42, 44, 96, 98], [38, 41, 99, 103], [45, 45, 95, 95], [41, 39, 101, 99]])
    groups = anonymize_mod._merged(masker._regions((h, w), boxes, None))
    assert len(groups) == 1
    g = groups[0]
    block = max(mosaic_block_px(min(x2 - x1, y2 - y1)) for x1, y1, x2, y2 in boxes.xyxy)
    out = masker.anonymize(frames, [boxes])[0, g.y0:g.y1, g.x0:g.x1]
    out = out.reshape(-1, 3) if g.mask is None else out[g.mask]
    assert len(np.unique(out, axis=0)) <= ((g.y1 - g.y0) // block) * ((g.x1 - g.x0) // block)
    # a much smaller box beside it is not merged into the big one's coarse cells
    small = Boxes.concat([boxes, Boxes.of([[95, 60, 110, 75]])])
    assert len(anonymize_mod._merged(masker._regions((h, w), small, None))) == 2


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(*[st.floats(-30, 90, allow_nan=False)] * 4), min_size=1, max_size=12),
       padding=st.sampled_from([0.0, 0.2, 0.5]))
def test_batched_ellipses_are_the_one_box_ellipses(rows, padding):
    h, w = 50, 60
    boxes = Boxes.of(np.array(rows, np.float32))
    masker = MosaicAnonymizer(MaskSpec(style="mosaic", shape="ellipse", padding=padding))
    got = masker._regions((h, w), boxes, None)
    want = []
    p = max(padding, ELLIPSE_MIN_PADDING)
    for x1, y1, x2, y2 in boxes.xyxy.astype(np.float64):
        x1, x2 = sorted((float(np.clip(x1, -2.0 * w, 3.0 * w)), float(np.clip(x2, -2.0 * w, 3.0 * w))))
        y1, y2 = sorted((float(np.clip(y1, -2.0 * h, 3.0 * h)), float(np.clip(y2, -2.0 * h, 3.0 * h))))
        px1, px2, py1, py2 = x1 - p * (x2 - x1), x2 + p * (x2 - x1), y1 - p * (y2 - y1), y2 + p * (y2 - y1)
        c0, c1, r0, r1 = max(0, math.floor(px1)), min(w, math.ceil(px2)), max(0, math.floor(py1)), min(h, math.ceil(py2))
        if c1 <= c0 or r1 <= r0:
            continue
        m = anonymize_mod._ellipse_mask(r0, r1, c0, c1, (px1, py1, px2, py2)) if px2 > px1 and py2 > py1 else None
        if m is not None and not m.any():
            continue
        want.append((r0, r1, c0, c1, m))
    assert len(got) == len(want)
    for g, (r0, r1, c0, c1, m) in zip(got, want, strict=True):
        assert (g.y0, g.y1, g.x0, g.x1) == (r0, r1, c0, c1)
        assert (g.mask is None) == (m is None) and (m is None or np.array_equal(g.mask, m))


@pytest.mark.parametrize("style", STYLES)
def test_into_an_array_opencv_cannot_write_in_place_still_gets_every_pixel(style):
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
    boxes = [Boxes.of([[5, 5, 30, 30], [8, 6, 33, 31], [20, 20, 50, 40]])]
    masker = make_anonymizer(MaskSpec(style=style, shape="ellipse"))
    expected = masker.anonymize(frames, boxes)
    # channels reversed: a view OpenCV cannot take as an output, so cv2.copyTo returns a new array
    backing = frames[..., ::-1].copy()
    into = backing[..., ::-1]
    assert not into.flags.c_contiguous
    assert masker.anonymize(frames, boxes, into=into) is into
    assert np.array_equal(into, expected)


def test_into_a_read_only_array_is_refused_not_written():
    frames = np.full((1, 32, 32, 3), 100, np.uint8)
    into = frames.copy()
    into.flags.writeable = False
    boxes = [Boxes.of([[4, 4, 20, 20], [6, 5, 22, 21]])]
    with pytest.raises(ValueError, match="read-only"):
        MosaicAnonymizer(MaskSpec(style="mosaic", shape="ellipse")).anonymize(frames, boxes, into=into)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("seed", range(3))
def test_maskers_that_render_alike_share_renders_and_mask_exactly_their_own_pixels(style, seed):
    """A face masker (ellipse) and a head masker (rect) of one style: their overlapping boxes are
    one render, the pixels written are the union of each masker's own, nothing else changes, and
    detail finer than the coarse cells does not get through."""
    rng = np.random.default_rng(seed)
    h, w = 120, 200
    frames = rng.integers(AMP, 256 - AMP, (2, h, w, 3), dtype=np.uint8)
    faces = [_carried_crowd(rng, h, w, faces=6, copies=3) for _ in range(2)]
    heads = [Boxes.of(b.xyxy * np.float32([1.0, 0.95, 1.0, 1.05]), None, Label.HEAD) for b in faces]
    face_m = make_anonymizer(MaskSpec(style=style, shape="ellipse", padding=0.2))
    head_m = make_anonymizer(MaskSpec(style=style, shape="rect", padding=0.1))
    assert face_m.renders_like(head_m)
    parts = [(face_m, faces), (head_m, heads)]
    out = anonymize_together(frames, parts)
    for i in range(2):
        cov = face_m.coverage_mask((h, w), faces[i]) | head_m.coverage_mask((h, w), heads[i])
        assert np.array_equal(out[i][~cov], frames[i][~cov])
        if style != "fill":
            assert (out[i] != frames[i]).any(axis=-1)[cov].mean() > 0.9
        pooled = face_m._regions((h, w), faces[i], None) + head_m._regions((h, w), heads[i], None)
        assert len(anonymize_mod._merged(pooled)) < len(anonymize_mod._merged(face_m._regions((h, w), faces[i], None))
                                                         + anonymize_mod._merged(head_m._regions((h, w), heads[i], None)))
    noisy = (frames.astype(np.int16) + _checkerboard(h, w)).astype(np.uint8)
    out_noisy = anonymize_together(noisy, parts)
    for i in range(2):
        cov = face_m.coverage_mask((h, w), faces[i]) | head_m.coverage_mask((h, w), heads[i])
        diff = np.abs(out[i].astype(int) - out_noisy[i].astype(int))[cov]
        assert diff.max() <= AMP // 2 + 1
    # in place: the same pixels written (overlapping groups may render already-masked pixels)
    buf = frames.copy()
    assert anonymize_together(buf, parts, into=buf) is buf
    for i in range(2):
        cov = face_m.coverage_mask((h, w), faces[i]) | head_m.coverage_mask((h, w), heads[i])
        assert np.array_equal(buf[i][~cov], frames[i][~cov])
        if style != "fill":
            assert (buf[i] != frames[i]).any(axis=-1)[cov].mean() > 0.9


def test_maskers_of_other_strength_or_style_are_not_merged():
    boxes = [Boxes.of([[10, 10, 50, 50]])]
    frames = np.full((1, 64, 64, 3), 128, np.uint8)
    frames[0, ::2] = 20
    mosaic = make_anonymizer(MaskSpec(style="mosaic", shape="rect", padding=0.0))
    coarse = make_anonymizer(MaskSpec(style="mosaic", shape="rect", padding=0.0, strength=2.0))
    fill = make_anonymizer(MaskSpec(style="fill", shape="rect", padding=0.0))
    assert not mosaic.renders_like(coarse) and not mosaic.renders_like(fill)
    # each keeps its own render: the fill (last) wins where both mask, as one after the other would
    out = anonymize_together(frames, [(mosaic, boxes), (fill, boxes)])
    assert np.array_equal(out, fill.anonymize(mosaic.anonymize(frames, boxes), boxes))
    out = anonymize_together(frames, [(fill, boxes), (coarse, boxes)])
    assert np.array_equal(out, coarse.anonymize(fill.anonymize(frames, boxes), boxes))
