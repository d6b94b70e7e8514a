"""Detectors on real labelled images from ../shared/eval and on synthetic frames."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from operators.detectors import (
    DETECTORS,
    CenterFaceDetector,
    TextDetector,
    YoloxPersonDetector,
    YuNetDetector,
    build_detector,
)
from operators.evaldata import load_coco, load_faces_dlib, load_plates_eu
from operators.types import Boxes, ConfigError, Detector, Label
from operators.video import read_image
from tests.shared import EVAL, MODELS

ROOT = Path(__file__).resolve().parents[2]
EVAL_DIR = EVAL
MODEL_DIR = MODELS


def _coverage(boxes: Boxes, target_xyxy, hw) -> float:
    m = np.zeros(hw, bool)
    for x1, y1, x2, y2 in boxes.xyxy:
        m[int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))] = True
    x1, y1, x2, y2 = (int(round(v)) for v in target_xyxy)
    return float(m[y1:y2, x1:x2].mean())


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def dets():
    return {
        "centerface": CenterFaceDetector(threads=2),
        "yunet": YuNetDetector(model_dir=MODEL_DIR, threads=2),
        "yolox_person": YoloxPersonDetector(model_dir=MODEL_DIR, threads=2),
        "ppocr_text": TextDetector(threads=2),
    }


@pytest.fixture(scope="module")
def dlib_item():
    return next(i for i in load_faces_dlib(EVAL_DIR / "faces_dlib") if i.image_path.name == "2008_002506.jpg")


def test_registry_of_kinds():
    assert set(DETECTORS) == {"centerface", "yunet", "yolox_person", "ppocr_text", "centerface+yunet"}
    with pytest.raises(ConfigError, match="centerface"):
        build_detector("nope")


def test_protocol_and_labels(dets):
    for d in dets.values():
        assert isinstance(d, Detector)
    assert dets["centerface"].labels == (Label.FACE,)
    assert dets["yunet"].labels == (Label.FACE,)
    assert dets["yolox_person"].labels == (Label.PERSON,)
    assert dets["ppocr_text"].labels == (Label.PLATE,)
    assert len(dets["centerface"].model_sha256) == 64


@pytest.mark.parametrize("kind", ["centerface", "yunet"])
def test_faces_found_on_dlib_photo(dets, dlib_item, kind):
    img = read_image(dlib_item.image_path)
    (found,) = dets[kind].detect(img[None])
    assert set(found.label.tolist()) == {int(Label.FACE)}
    for face in dlib_item.face_boxes:
        assert _coverage(found, face, img.shape[:2]) >= 0.8, (kind, face)


def test_centerface_covers_coco_keypoint_face(dets):
    item = next(i for i in load_coco(EVAL_DIR / "coco_val2017") if i.image_path.name == "000000034417.jpg")
    img = read_image(item.image_path)
    (found,) = dets["centerface"].detect(img[None])
    for pts in item.face_points:
        inside = [any(x1 <= x <= x2 and y1 <= y <= y2 for x1, y1, x2, y2 in found.xyxy) for x, y in pts]
        assert all(inside), pts


def test_persons_found_on_coco_photo(dets):
    items = [i for i in load_coco(EVAL_DIR / "coco_val2017") if len(i.person_boxes)]
    item = max(items[:10], key=lambda i: float(np.prod(i.person_boxes[:, 2:] - i.person_boxes[:, :2], 1).max()))
    img = read_image(item.image_path)
    (found,) = dets["yolox_person"].detect(img[None])
    assert len(found) and set(found.label.tolist()) == {int(Label.PERSON)}
    biggest = item.person_boxes[np.argmax(np.prod(item.person_boxes[:, 2:] - item.person_boxes[:, :2], 1))]
    assert max(_iou(b, biggest) for b in found.xyxy) >= 0.5


@pytest.mark.parametrize("name", ["eu1.jpg", "eu2.jpg", "eu3.jpg"])
def test_plates_covered(dets, name):
    item = next(i for i in load_plates_eu(EVAL_DIR / "plates_eu") if i.image_path.name == name)
    img = read_image(item.image_path)
    (found,) = dets["ppocr_text"].detect(img[None])
    assert set(found.label.tolist()) == {int(Label.PLATE)}
    assert _coverage(found, item.plate_boxes[0], img.shape[:2]) >= 0.8


def test_both_text_models_cover_a_plate_with_their_own_input_normalisation():
    item = next(i for i in load_plates_eu(EVAL_DIR / "plates_eu") if i.image_path.name == "eu2.jpg")
    img = read_image(item.image_path)
    v4, v5 = TextDetector("ppocr_det", threads=1), TextDetector(threads=1)
    assert (v4.imagenet_norm, v5.imagenet_norm) == (False, True)
    assert v5.model_path.name == "det.onnx" and v5.model_path.parent.parent.name == "ppocrv5"
    for d in (v4, v5):
        assert _coverage(d.detect(img[None])[0], item.plate_boxes[0], img.shape[:2]) >= 0.8


def test_text_label_variant():
    d = TextDetector(label=Label.TEXT, threads=1, max_side=320)
    assert d.labels == (Label.TEXT,)
    img = read_image(EVAL_DIR / "plates_eu" / "eu1.jpg")
    for b in d.detect(img[None]):
        assert set(b.label.tolist()) <= {int(Label.TEXT)}


@pytest.mark.parametrize("kind", ["centerface", "yunet", "yolox_person", "ppocr_text"])
@pytest.mark.parametrize("n", [0, 1, 3])
def test_blank_frames_give_empty_boxes(dets, kind, n):
    out = dets[kind].detect(np.zeros((n, 120, 200, 3), np.uint8))
    assert len(out) == n
    for b in out:
        assert len(b) == 0 and b.xyxy.shape == (0, 4) and b.xyxy.dtype == np.float32
        assert b.score.shape == (0,) and b.label.dtype == np.int16


@pytest.mark.parametrize("kind", ["centerface", "yunet", "yolox_person", "ppocr_text"])
def test_batch_equals_singles_not_mutated_and_clipped(dets, dlib_item, kind):
    a = read_image(dlib_item.image_path)
    b = cv2.resize(read_image(EVAL_DIR / "plates_eu" / "eu2.jpg"), (a.shape[1], a.shape[0]))
    # shift content so that detections touch the frame border
    a = np.ascontiguousarray(a[:, 40:])
    b = np.ascontiguousarray(b[:, 40:])
    frames = np.stack([a, b])
    before = frames.copy()
    batch = dets[kind].detect(frames)
    assert np.array_equal(frames, before)
    singles = [dets[kind].detect(f[None])[0] for f in frames]
    h, w = frames.shape[1:3]
    for got, ref in zip(batch, singles, strict=True):
        assert len(got) == len(ref)
        np.testing.assert_allclose(got.xyxy, ref.xyxy, atol=0.5)
        if len(got):
            assert (got.xyxy[:, 0::2] >= 0).all() and (got.xyxy[:, 0::2] <= w).all()
            assert (got.xyxy[:, 1::2] >= 0).all() and (got.xyxy[:, 1::2] <= h).all()
            assert (got.xyxy[:, 2:] > got.xyxy[:, :2]).all()


def test_rejects_bad_input(dets):
    from schemas.errors import InputError

    with pytest.raises(InputError):
        dets["centerface"].detect(np.zeros((120, 200, 3), np.uint8))
    with pytest.raises(InputError):
        dets["centerface"].detect(np.zeros((1, 120, 200, 3), np.float32))


def test_missing_explicit_provider_fails():
    from schemas.errors import ProviderError

    with pytest.raises(ProviderError, match="CPUExecutionProvider"):
        CenterFaceDetector(providers=["tensorrt"])


def test_pack_shelves_places_apart_on_grid():
    from operators.detectors.text import pack_shelves

    rng = np.random.default_rng(3)
    sizes = [(int(w), int(h)) for w, h in zip(rng.integers(20, 769, 40), rng.integers(20, 417, 40))]
    places, shapes = pack_shelves(sizes, 1600, 896, 32)
    assert len(shapes) < len(sizes)
    for c, (cw, ch) in enumerate(shapes):
        assert cw % 32 == 0 and ch % 32 == 0 and cw <= 1600 and ch <= 896
        rects = [(x, y, x + w, y + h) for (cc, x, y), (w, h) in zip(places, sizes) if cc == c]
        for x0, y0, x1, y1 in rects:
            assert x0 % 32 == 0 and y0 % 32 == 0 and x1 + 32 <= cw and y1 + 32 <= ch
        for i, a in enumerate(rects):  # at least the gap between any two crops
            for b in rects[i + 1:]:
                assert a[2] + 32 <= b[0] or b[2] + 32 <= a[0] or a[3] + 32 <= b[1] or b[3] + 32 <= a[1]
    with pytest.raises(ValueError):
        pack_shelves([(760, 10)], 768, 416, 32)


def test_packed_vehicle_crops_map_back_to_their_frame_and_place():
    item = next(i for i in load_plates_eu(EVAL_DIR / "plates_eu") if i.image_path.name == "eu1.jpg")
    x1, y1, x2, y2 = (int(v) for v in item.plate_boxes[0])
    patch = read_image(item.image_path)[y1 - 20:y2 + 20, x1 - 20:x2 + 20]  # a real plate, 243x86
    ph, pw = patch.shape[:2]
    frames = np.full((3, 720, 1280, 3), 110, np.uint8)
    plates = {0: (100, 300), 1: (800, 500)}  # frame -> plate's top-left (x, y)
    for f, (px, py) in plates.items():
        frames[f, py:py + ph, px:px + pw] = patch

    def veh(*rows):
        return Boxes(np.asarray(rows, np.float32).reshape(-1, 4), np.full(len(rows), 0.9, np.float32),
                     np.full(len(rows), int(Label.VEHICLE), np.int16))
    # frame 0: the plate's vehicle; frame 1: the plate's vehicle and an empty one beside it,
    # packed next to each other (and to frame 0's); frame 2: two empty vehicles
    priors = [veh((60, 150, 400, 420)), veh((760, 350, 1100, 620), (420, 350, 740, 620)),
              veh((60, 150, 400, 420), (760, 350, 1100, 620))]
    # a canvas of 2x2 crops at this zoom: crops of different frames share canvases
    geometry = {"crop_width": 1536, "crop_height": 832, "crop_max_zoom": 1.5}
    d = TextDetector(crops=True, threads=1, **geometry)
    assert d.crop_pack
    canvases = []
    run = d._run
    d._run = lambda blob: (canvases.extend(blob), run(blob))[1]
    out = d.detect_crops(frames, priors)
    assert len(canvases) == 2  # 5 crops
    assert len(out) == 3 and len(out[2]) == 0
    for f, (px, py) in plates.items():
        assert len(out[f]) and _coverage(out[f], (px + 20, py + 20, px + pw - 20, py + ph - 20), (720, 1280)) >= 0.6
        # every box is the plate's: inside the plate's vehicle window, none on the empty vehicle
        assert (out[f].xyxy[:, 0] >= px - 60).all() and (out[f].xyxy[:, 2] <= px + pw + 60).all()
        assert (out[f].xyxy[:, 1] >= py - 60).all() and (out[f].xyxy[:, 3] <= py + ph + 60).all()
    # the same plates found one crop per canvas (the unpacked pass)
    ref = TextDetector(crops=True, threads=1, crop_pack=False, **geometry).detect_crops(frames, priors)
    for f in plates:
        assert max(_iou(a, b) for a in out[f].xyxy for b in ref[f].xyxy) > 0.7
    # untrimmed (as on a GPU): the same two canvases at the one full shape, the same boxes
    d.crop_trim = False
    canvases.clear()
    full = d.detect_crops(frames, priors)
    assert [c.shape for c in canvases] == [(832, 1536, 3)] * 2
    for f in plates:
        assert max(_iou(a, b) for a in out[f].xyxy for b in full[f].xyxy) > 0.7


def test_parked_vehicle_plate_carried_moved_vehicle_searched_again():
    """Plate carry: a parked car's crop is searched once per call and its plate carried to the
    later frames where the vehicle and the picture did not move; a vehicle that moved (or
    whose picture changed) is searched again; a crop that found no plate lends its (empty)
    result once only; the carried plate box is masked."""
    from operators.redactor import RedactionConfig, Redactor

    item = next(i for i in load_plates_eu(EVAL_DIR / "plates_eu") if i.image_path.name == "eu1.jpg")
    x1, y1, x2, y2 = (int(v) for v in item.plate_boxes[0])
    patch = read_image(item.image_path)[y1 - 20:y2 + 20, x1 - 20:x2 + 20]
    ph, pw = patch.shape[:2]
    frames = np.full((7, 720, 1280, 3), 110, np.uint8)
    frames[:4, 300:300 + ph, 100:100 + pw] = patch  # frames 0-3: parked
    frames[1:, 100:200, 1000:1100] = 200  # something changed elsewhere: the plate did not
    frames[4:, 340:340 + ph, 160:160 + pw] = patch  # frames 4-6: the car moved 60 px right, 40 down
    frames[6, 340:340 + ph, 160:160 + pw] //= 2  # frame 6: same place, the picture changed (shade)

    def veh(*rows):
        return Boxes(np.asarray(rows, np.float32).reshape(-1, 4), np.full(len(rows), 0.9, np.float32),
                     np.full(len(rows), int(Label.VEHICLE), np.int16))
    parked, moved, empty = (60, 150, 400, 420), (120, 190, 460, 460), (760, 350, 1100, 620)
    priors = [veh(parked, empty)] * 4 + [veh(moved, empty)] * 3
    d = TextDetector(crops=True, threads=1)
    searched = []
    run = d._run
    d._run = lambda blob: (searched.append(len(blob)), run(blob))[1]
    out = d.detect_crops(frames, priors)
    # plate: frame 0 searched, 1-3 carried; frame 4 (moved) searched, 5 carried, 6 (changed)
    # searched. Empty vehicle: 0 searched, 1 takes it, 2 searched, 3 takes 2, 4 searched, ...
    assert d.last_crop_stats == {"crops": 14, "searched": 3 + 4, "carried": 4, "reused": 3}
    in_view = [(100, 300), (100, 300), (100, 300), (100, 300), (160, 340), (160, 340), (160, 340)]
    for f, (px, py) in enumerate(in_view):
        assert _coverage(out[f], (px + 20, py + 20, px + pw - 20, py + ph - 20), (720, 1280)) >= 0.6, f
    for f in (1, 2, 3):
        np.testing.assert_array_equal(out[f].xyxy, out[0].xyxy)
    np.testing.assert_array_equal(out[5].xyxy, out[4].xyxy)
    assert not np.array_equal(out[4].xyxy, out[0].xyxy)
    # no carry: the lend-once pass before (every other frame of the parked car searched)
    d.crop_carry = 0
    d.detect_crops(frames, priors)
    assert d.last_crop_stats["carried"] == 0 and d.last_crop_stats["searched"] == 4 + 4
    d.crop_carry, d.crop_reuse = 8, 0  # no reuse at all: every crop searched
    d.detect_crops(frames, priors)
    assert d.last_crop_stats["searched"] == 14
    # fail closed: the carried box is masked (plate fallback off, so only the plate box can)
    d.crop_reuse = 6.0
    red = Redactor(RedactionConfig(classes=("plate",), detect_every=1, temporal_window=0, plate_fallback=False,
                                   style="fill"), detectors={"text": d})
    found = d.detect_crops(frames, priors)
    assert d.last_crop_stats["carried"] == 4
    raw = [Boxes.concat([p, b]) for p, b in zip(priors, found)]
    masked = red.apply(frames, red.plan_from(raw, [], (720, 1280)))
    for f in (2, 3, 5):  # carried frames
        px, py = in_view[f]
        region = (slice(py + 25, py + ph - 25), slice(px + 25, px + pw - 25))
        assert (masked[f][region] != frames[f][region]).any(axis=-1).mean() > 0.9, f


def test_only_a_plate_shaped_box_tall_enough_is_carried():
    found = TextDetector._found_plate
    assert found([([0.0, 0.0, 80.0, 20.0], 0.9)])  # a plate, 20 px tall
    assert not found([([0.0, 0.0, 40.0, 10.0], 0.9)])  # a small plate: searched again
    assert not found([([0.0, 0.0, 30.0, 30.0], 0.9)])  # square (a tail light): searched again
    assert not found([])


def test_budget_zooms_scale_every_crop_by_one_factor_never_below_its_own_pixels():
    from operators.detectors.text import budget_zooms

    wins = [(0, 0, 60, 30), (100, 0, 140, 20)]  # 1800 and 800 px
    assert budget_zooms(wins, [6.0, 6.0], 1e9) == [6.0, 6.0]  # fits: unchanged
    z = budget_zooms(wins, [6.0, 4.0], 4 * 2600)
    assert z[0] / z[1] == pytest.approx(6.0 / 4.0)  # one factor for every crop of the frame
    assert 1800 * z[0] ** 2 + 800 * z[1] ** 2 == pytest.approx(4 * 2600)  # fills the budget
    # a budget under the crops' own pixels: each crop at its own size (or the smaller zoom it had)
    assert budget_zooms(wins, [6.0, 0.5], 100) == [1.0, 0.5]


def test_crop_budget_caps_a_small_frames_zoomed_crops_and_still_searches_every_vehicle():
    frames = np.full((1, 180, 320, 3), 110, np.uint8)
    veh = Boxes(np.asarray([(10, 40, 110, 140), (150, 60, 230, 130), (240, 90, 300, 150)], np.float32),
                np.full(3, 0.9, np.float32), np.full(3, int(Label.VEHICLE), np.int16))
    seen: dict[str, list[tuple[int, int, int]]] = {}
    for name, budget in (("none", None), ("budget", 2.0)):
        d = TextDetector(crops=True, threads=1, crop_pack=False, crop_budget=budget)
        jobs = []
        search = d._search_crops
        d._search_crops = lambda fr, js, todo, _s=search, _j=jobs: (_j.extend(js[k] for k in todo), _s(fr, js, todo))[1]
        d.detect_crops(frames, [veh])
        assert d.last_crop_stats["crops"] == d.last_crop_stats["searched"] == 3  # every vehicle
        seen[name] = [(j[0], j[2], j[3]) for j in jobs]
    area = {k: sum(w * h for _, w, h in v) for k, v in seen.items()}
    assert area["none"] > 4 * 320 * 180  # up to 6x each: several times the frame
    assert area["budget"] <= 2.0 * 320 * 180 * 1.02  # rounding to whole px
    assert area["budget"] >= 1.8 * 320 * 180  # the budget is spent, not undercut
    with pytest.raises(ValueError, match="crop_budget"):
        TextDetector(crops=True, crop_budget=0)


def test_text_crop_budget_reaches_the_text_detector_and_is_validated():
    from operators.redactor import RedactionConfig, Redactor

    assert RedactionConfig().text_crop_budget is None
    red = Redactor(RedactionConfig(classes=("plate",), text_crop_budget=3.0, threads=1, model_dir=str(MODELS)).validate())
    assert red.detectors["text"].crop_budget == 3.0
    with pytest.raises(ConfigError, match="text_crop_budget"):
        RedactionConfig(text_crop_budget=-1).validate()


def test_full_frame_text_pass_runs_on_every_nth_detected_frame_and_its_boxes_are_carried():
    """``text_full_every`` 2: the full-frame pass (no vehicles here: the only pass that can find
    the plate) runs on detected frames 0, 2, 4 and the last of the chunk, never on 1 and 3;
    skipped frames get the latest pass's boxes, moved with the picture where its motion can be
    estimated (the camera pans between frames 2 and 3), else where they were, and masked there
    (fail closed). A chunk of one frame (a still image) always gets the
    pass."""
    from operators.redactor import RedactionConfig, Redactor

    item = next(i for i in load_plates_eu(EVAL_DIR / "plates_eu") if i.image_path.name == "eu1.jpg")
    x1, y1, x2, y2 = (int(v) for v in item.plate_boxes[0])
    patch = read_image(item.image_path)[y1 - 20:y2 + 20, x1 - 20:x2 + 20]
    ph, pw = patch.shape[:2]
    rng = np.random.default_rng(0)
    scene = cv2.resize(rng.integers(60, 160, (45, 80, 3), dtype=np.uint8), (640, 360), interpolation=cv2.INTER_CUBIC)
    scene[40:40 + ph, 40:40 + pw] = patch
    frames = np.stack([scene] * 3 + [np.roll(scene, (24, 32), axis=(0, 1))] * 3)  # the camera pans at frame 3
    frames[:, -1, -1, 0] = np.arange(6)  # which frame the pass saw
    d = TextDetector(crops=True, threads=1)
    ran: list[int] = []
    detect = d.detect
    d.detect = lambda fr: (ran.extend(int(f[-1, -1, 0]) for f in fr), detect(fr))[1]
    cfg = RedactionConfig(classes=("plate",), detect_every=1, temporal_window=0, plate_fallback=False, style="fill",
                          text_full_every=2)
    red = Redactor(cfg, detectors={"text": d})
    raw, failed, errors, _ms = red.detect(frames)
    assert not failed and not errors
    assert ran == [0, 2, 4, 5]  # 1 and 3 skipped; 5 is the chunk's last
    np.testing.assert_allclose(raw[1].xyxy, raw[0].xyxy, atol=1.0)  # a still picture: where they were
    old, new = (60, 60, 40 + pw - 20, 40 + ph - 20), (92, 84, 72 + pw - 20, 64 + ph - 20)  # plate, less a margin
    assert _coverage(raw[2], old, (360, 640)) >= 0.8 and _coverage(raw[4], new, (360, 640)) >= 0.8
    assert _coverage(raw[3], new, (360, 640)) >= 0.8  # carried from frame 2 along the motion
    out = red.redact(frames).frames
    inner = (slice(new[1], new[3]), slice(new[0], new[2]))
    assert (out[3][inner] != frames[3][inner]).any(axis=-1).mean() > 0.9
    # without motion following (or where none is estimated) the carried box stays where it was
    d.full_carry_motion = False
    raw, *_ = red.detect(frames)
    np.testing.assert_array_equal(raw[3].xyxy, raw[2].xyxy)
    out = red.redact(frames).frames
    bx1, by1, bx2, by2 = (int(round(v)) for v in raw[3].xyxy[np.argmax(raw[3].xyxy[:, 2] - raw[3].xyxy[:, 0])])
    inner = (slice(by1 + 1, by2 - 1), slice(bx1 + 1, bx2 - 1))  # the carried box, where it was
    assert (out[3][inner] != frames[3][inner]).any(axis=-1).mean() > 0.95
    ran.clear()
    red.detect(frames[:1])
    assert len(ran) == 1
    ran.clear()
    Redactor(RedactionConfig(classes=("plate",), detect_every=1, text_full_every=1),
             detectors={"text": d}).detect(frames)
    assert len(ran) == 6  # text_full_every 1: every detected frame
    with pytest.raises(ValueError, match="full_from"):
        d.detect_given(frames[:3], [Boxes.empty()] * 3, full_from=[0, 2, 2])  # a source after the frame
