"""Issue 8: the new eval sets, their leak rules, the cached sweep, the video clips, the
vehicle-guided plate search and the face union, plus loose regression guards on small
fixed subsets of the hard sets (the full sets run under `make eval`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from operators import evalcache
from operators.evaldata import load_faces_wider, load_plates_traffic
from operators.evaluation import Scorer, central_region, evaluate, subset, width_bucket
from operators.evalvideo import clip_from_image
from operators.head import head_regions
from operators.redactor import RedactionConfig, Redactor
from operators.types import Boxes, Label
from tests.shared import EVAL, MODELS

ROOT = Path(__file__).resolve().parents[2]
EVAL_DIR = EVAL
MODEL_DIR = MODELS


def test_new_sets_load_with_their_published_counts():
    traffic = load_plates_traffic(EVAL_DIR / "plates_traffic")
    assert len(traffic) == 324 and sum(len(i.plate_boxes) for i in traffic) == 398
    assert {i.tags["subset"] for i in traffic} == {"ro", "kg"}
    assert sum(len(i.plate_boxes) for i in traffic if i.tags["subset"] == "ro") == 223
    wider = load_faces_wider(EVAL_DIR / "faces_wider_hard")
    assert len(wider) == 240 and sum(len(i.face_boxes) for i in wider) == 5097
    assert all(i.image_path.is_file() for i in wider[:5] + traffic[:5])


def test_width_buckets_follow_the_readme():
    assert [width_bucket(w) for w in (10, 19.9, 20, 39, 40, 79.9, 80, 300)] == [
        "w0_20", "w0_20", "w20_40", "w20_40", "w40_80", "w40_80", "w80_up", "w80_up"]


class _Item:
    def __init__(self, **kw):
        self.image_path = Path("x.jpg")
        self.face_boxes = np.zeros((0, 4), np.float32)
        self.plate_boxes = np.zeros((0, 4), np.float32)
        self.ignore_boxes = np.zeros((0, 4), np.float32)
        self.tags = {"subset": "ro", "night": "0"}
        self.__dict__.update(kw)


def test_wider_face_needs_80_percent_of_its_central_region():
    face = [100, 100, 150, 150]  # 50 px wide; central region 30 x 30 at (110..140)
    item = _Item(face_boxes=np.array([face, [300, 300, 312, 312]], np.float32),
                 ignore_boxes=np.array([[0, 0, 8, 8]], np.float32))
    cov = np.zeros((400, 400), bool)
    x1, y1, x2, y2 = (int(v) for v in central_region(face))
    assert (x1, y1, x2, y2) == (110, 110, 140, 140)
    cov[y1:y2, x1:x1 + 25] = True  # 25/30 of the central region: protected, the rim needs nothing
    s = Scorer("faces_wider_hard")
    s.add(item, cov)
    rep = {c.cls: c for c in s.report().classes}
    assert (rep["face"].targets, rep["face"].leaked) == (2, 1)  # the 12 px face leaks; ignore box not counted
    assert (rep["face_lt20"].leaked, rep["face_ge20"].leaked) == (1, 0)
    assert rep["face_w40_80"].targets == 1 and rep["face_w0_20"].targets == 1
    cov[:] = False
    cov[y1:y2, x1:x1 + 23] = True  # 23/30 < 0.8: leaks
    s2 = Scorer("faces_wider_hard")
    s2.add(_Item(face_boxes=np.array([face], np.float32)), cov)
    assert s2.report().classes[0].leaked == 1


def test_plates_traffic_needs_80_percent_of_the_box():
    item = _Item(plate_boxes=np.array([[10, 10, 110, 30]], np.float32), tags={"subset": "kg", "night": "1"})
    cov = np.zeros((100, 200), bool)
    cov[10:30, 10:91] = True  # 81 %
    s = Scorer("plates_traffic")
    s.add(item, cov)
    rep = {c.cls: c for c in s.report().classes}
    assert rep["plate"].leaked == 0 and rep["plate_kg"].targets == 1 and rep["plate_night"].targets == 1
    cov[10:30, 85:91] = False  # 75 %
    s = Scorer("plates_traffic")
    s.add(item, cov)
    assert s.report().classes[0].leaked == 1


def test_masked_area_is_reported_per_mask_source():
    from operators.evaluation import report_json, report_table

    item = _Item(face_boxes=np.array([[10, 10, 30, 30]], np.float32))
    face = np.zeros((100, 100), bool)
    face[10:30, 10:30] = True  # 4 %
    head = np.zeros((100, 100), bool)
    head[20:40, 0:50] = True  # 10 %, overlapping the face
    s = Scorer("faces_dlib")
    s.add(item, face | head, sources={"head": head, "face": face})
    s.add(item, face, sources={"face": face})
    rep = s.report()
    assert rep.masked_area_by_source == pytest.approx({"face": 0.04, "head": 0.05})
    assert list(rep.masked_area_by_source) == ["face", "head"]  # report order, not insertion order
    assert rep.masked_area_share == pytest.approx((0.04 + 0.1 - 0.02 + 0.04) / 2)  # union, once
    doc = report_json([rep], {})
    assert doc["datasets"][0]["masked_area_by_source"] == {"face": 0.04, "head": 0.05}
    assert "masked area by source: face 4.0%, head 5.0%" in report_table([rep])
    # what each source alone masks (the overlap, 2 % of the first frame, is neither's own)
    assert rep.masked_area_only_by_source == pytest.approx({"face": (0.02 + 0.04) / 2, "head": 0.08 / 2})
    assert sum(rep.masked_area_only_by_source.values()) + 0.02 / 2 == pytest.approx(rep.masked_area_share)
    assert doc["datasets"][0]["masked_area_only_by_source"] == {"face": 0.03, "head": 0.04}
    assert "masked by that source alone: face 3.0%, head 4.0%" in report_table([rep])


def test_subset_is_spread_and_deterministic():
    items = list(range(100))
    assert subset(items, 5) == [0, 25, 50, 74, 99] and subset(items, None) == items


def test_clip_affine_maps_labels_onto_the_moving_frames():
    img = np.zeros((240, 320, 3), np.uint8)
    img[100:140, 200:240] = 255  # a white square labelled [200, 100, 240, 140]
    frames, affines = clip_from_image(img, n=9)
    assert frames.shape == (9, 240, 320, 3) and affines[0] == (1.0, 0.0, 0.0)
    for f, (s, tx, ty) in zip(frames, affines):
        x1, y1, x2, y2 = (s * 200 + tx, s * 100 + ty, s * 240 + tx, s * 140 + ty)
        inner = f[int(y1) + 2:int(y2) - 2, int(x1) + 2:int(x2) - 2]
        assert inner.size and inner.min() > 200  # the mapped label still sits on the square


def test_head_box_not_suppressed_by_a_neighbours_face_and_reaches_a_cut_edge():
    hw = (720, 1280)
    persons = Boxes.of([[600, 100, 800, 500]], label=Label.PERSON)
    neighbour = Boxes.of([[770, 110, 800, 140]], label=Label.FACE)  # at the box edge, outside its head
    assert len(head_regions(persons, neighbour, hw)) == 1
    own = Boxes.of([[685, 110, 715, 150]], label=Label.FACE)
    assert len(head_regions(persons, own, hw)) == 0
    cut = head_regions(Boxes.of([[0, 200, 60, 600]], label=Label.PERSON), Boxes.empty(), hw)
    assert cut.xyxy[0, 0] == 0.0  # cut off at the left: the head box reaches the edge


def test_face_mask_is_the_ellipse_circumscribing_the_detection_inside_the_padded_box():
    """Round 3: a face mask covers every pixel of its detection box (the ellipse through its
    corners, ELLIPSE_MIN_PADDING) and stays inside the box padded by face_padding (0.2 <
    0.2071: the floor wins), so it is at most pi/2 = 1.57x the detection's area."""
    from operators.anonymize import ELLIPSE_MIN_PADDING

    red = Redactor(RedactionConfig(classes=("face",), style="fill"), detectors={})
    hw = (200, 200)
    x1, y1, x2, y2 = 60.0, 50.0, 100.0, 110.0  # 40 x 60
    face = red.coverage_by_source(hw, Boxes.of([[x1, y1, x2, y2]], [0.9], Label.FACE))["face"]
    assert face[int(y1):int(y2), int(x1):int(x2)].all()  # the whole detection box
    p = max(red.config.face_padding, ELLIPSE_MIN_PADDING)
    padded = np.zeros(hw, bool)
    padded[int(y1 - p * 60):int(np.ceil(y2 + p * 60)), int(x1 - p * 40):int(np.ceil(x2 + p * 40))] = True
    assert not (face & ~padded).any()
    assert not face[int(y1 - p * 60), int(x1 - p * 40)]  # the padded box's corners are not masked
    assert face.sum() <= 1.05 * np.pi / 2 * 40 * 60


def test_head_fallback_does_not_fire_on_a_person_cut_by_the_top_edge_by_default():
    red = Redactor(RedactionConfig(classes=("face",), style="fill", temporal_window=0), detectors={})
    hw = (480, 640)
    cut = Boxes.of([[100, 0, 200, 300]], [0.9], Label.PERSON)  # head above the frame
    whole = Boxes.of([[300, 40, 400, 340]], [0.9], Label.PERSON)
    boxes = red.plan_from([Boxes.concat([cut, whole])], [], hw)[0]
    heads = boxes.select(boxes.label == Label.HEAD)
    assert len(heads) == 1 and 300 <= heads.xyxy[0, 0] and heads.xyxy[0, 2] <= 400 + 1
    keep_cut = Redactor(RedactionConfig(classes=("face",), head_top_cut=True, temporal_window=0), detectors={})
    assert len(keep_cut.plan_from([cut], [], hw)[0]) == 1


class _Stage1:
    name = "stage1"
    labels = (Label.VEHICLE,)

    def detect(self, frames):
        return [Boxes.of([[10, 10, 50, 50]], [0.9], Label.VEHICLE) for _ in frames]


class _Stage2:
    name = "stage2"
    labels = (Label.PLATE,)

    def __init__(self, fail=False):
        self.priors = None
        self.fail = fail

    def detect(self, frames):
        return [Boxes.empty() for _ in frames]

    def detect_given(self, frames, priors):
        if self.fail:
            raise RuntimeError("boom")
        self.priors = priors
        return [Boxes.of(p.xyxy[:, :4] + [5, 25, -5, -5], [0.8], Label.PLATE) for p in priors]


def test_second_stage_detector_gets_first_stage_boxes_and_fails_closed():
    s2 = _Stage2()
    red = Redactor(RedactionConfig(classes=("plate",), style="fill", temporal_window=0),
                   detectors={"text": s2, "person": _Stage1()})
    res = red.redact(np.zeros((2, 64, 64, 3), np.uint8))
    assert len(s2.priors) == 2 and int(s2.priors[0].label[0]) == Label.VEHICLE
    assert res.masks_per_class == {"plate": 2} and not res.fail_closed_frames
    assert all(set(b.label.tolist()) == {int(Label.PLATE)} for b in res.boxes)  # vehicles never masked
    bad = Redactor(RedactionConfig(classes=("plate",), style="fill"),
                   detectors={"text": _Stage2(fail=True), "person": _Stage1()})
    res = bad.redact(np.full((2, 64, 64, 3), 200, np.uint8))
    assert res.fail_closed_frames == [0, 1] and (res.frames == 0).all()


def test_cache_threshold_equals_detector_threshold(tmp_path):
    """Filtering cached floor-threshold boxes gives what the detector returns at that threshold."""
    from operators.detectors import CenterFaceDetector
    from operators.video import read_image

    items = subset(load_faces_wider(EVAL_DIR / "faces_wider_hard"), 2)
    cfg = RedactionConfig(classes=("face",), face_model="centerface")
    comps = {"centerface": evalcache.components(cfg)["centerface"]}
    cache = evalcache.DetectionCache(tmp_path, "faces_wider_hard", items)
    cached = cache.get(comps)
    again = evalcache.DetectionCache(tmp_path, "faces_wider_hard", items).get(comps)  # from disk
    det = CenterFaceDetector(threshold=0.2, max_side=cfg.face_max_side)
    for i, item in enumerate(items):
        want = det.detect(read_image(item.image_path)[None])[0]
        got = evalcache.combine(again, {"centerface": 0.2}, i)
        assert len(got) == len(want) and np.allclose(np.sort(got.score), np.sort(want.score), atol=1e-5)
        assert len(cached["centerface"].per_image[i]) >= len(want)
@pytest.fixture(scope="module")
def default_redactor():
    return Redactor(RedactionConfig(model_dir=str(MODEL_DIR)))


def _cov(red):
    def f(img):
        boxes, *_ = red.plan(img[None])
        return red.coverage_by_source(img.shape[:2], boxes[0])  # scored as their union
    return f


def test_regression_guard_plates_traffic_subset(default_redactor):
    """Loose guard: 12 frames spread over plates_traffic (ro and kg, day and night).
    Baseline (before issue 8) leaked 58 % of plates on the full set."""
    rep = evaluate("plates_traffic", EVAL_DIR, _cov(default_redactor), limit=12)
    plate = rep.classes[0]
    assert plate.targets >= 12
    assert plate.leak_rate <= 0.22, rep.leaks  # 2 of 14 today (kg web photos, 9 and 26 px wide); 3-4 before the vehicle fallback, about 8 before issue 8
    # round 3: what it costs, loosely (10.2 % today: plate fallback 5.6, plate boxes 3.6, faces 1.6,
    # loose text 0.1; 10.3 % without the loose-text rule)
    assert rep.masked_area_share <= 0.12, rep.masked_area_by_source


def test_regression_guard_faces_wider_subset(default_redactor):
    """Loose guard: 6 WIDER photos spread over the set; faces >= 20 px. Baseline leaked 3.9 %
    of faces >= 20 px and 13 % under 20 px on the full set."""
    rep = evaluate("faces_wider_hard", EVAL_DIR, _cov(default_redactor), limit=6)
    c = {x.cls: x for x in rep.classes}
    assert c["face_ge20"].targets >= 20
    assert c["face_ge20"].leak_rate <= 0.06 and c["face_lt20"].leak_rate <= 0.15, rep.leaks
    # round 3: masked area, loosely (15.0 % today: faces 12.3, loose text 2.2, head fallback
    # 1.0, plate boxes 0.05; 21.6 % before loose text, when plate-class text was 11.9); the head
    # fallback fired on persons with a face found before; 14.3 % at session 9's defaults
    assert rep.masked_area_share <= 0.16, rep.masked_area_by_source
    assert rep.masked_area_by_source.get("head", 0.0) <= 0.02, rep.masked_area_by_source
    assert rep.masked_area_by_source.get("loose_text", 0.0) + rep.masked_area_by_source.get("plate", 0.0) <= 0.04, \
        rep.masked_area_by_source


@pytest.mark.parametrize("h,w", [(720, 1280), (1080, 1920), (2160, 3840), (300, 400)])
def test_tiles_cover_the_frame_within_the_tile_size(h, w):
    from operators.detectors.text import plan_tiles

    tiles = plan_tiles(h, w, 1280, 64)
    covered = np.zeros((h, w), bool)
    for y0, x0, y1, x1 in tiles:
        assert 0 < y1 - y0 <= 1280 and 0 < x1 - x0 <= 1280
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert (len(tiles) == 1) == (max(h, w) <= 1280)


def test_eval_entry_builds_the_config_and_checks_its_arguments():
    """``veilstream eval``'s entry (operators.evalrun): detection options and ``--set``
    overrides make the measured RedactionConfig; bad names are one clear error."""
    from argparse import Namespace

    from operators.evalrun import dataset_names, eval_config
    from operators.types import InputError

    args = Namespace(classes=["face"], style="blur", providers=None, model_dir=None,
                     overrides=["face_padding=0.3", "text_min_side=none", "plate_crops=false"])
    cfg = eval_config(args)
    assert (cfg.classes, cfg.style, cfg.detect_every) == (("face",), "blur", 1)
    assert (cfg.face_padding, cfg.text_min_side, cfg.plate_crops) == (0.3, None, False)
    with pytest.raises(InputError, match="--set 'bogus=1'"):
        eval_config(Namespace(**{**vars(args), "overrides": ["bogus=1"]}))
    assert dataset_names("plates_eu,faces_dlib") == ("plates_eu", "faces_dlib")
    assert len(dataset_names("all")) == 5
    with pytest.raises(InputError, match="unknown data set 'nope'"):
        dataset_names("faces_dlib,nope")


def test_regression_guard_coco_subset(default_redactor):
    """Loose guard: 20 COCO photos spread over the set, faces + plates at the defaults. Face
    masks round 4 (large weak CenterFace boxes dropped, docs/quality.md "Face masks that follow
    faces"): 7.8 % masked, face masks 2.7 % (10.3 and 5.2 % before), no face leaked. Session 9
    (head fallback from person score 0.5, padding 0.05; docs/quality.md "Session 9: the per-class
    curve"): 6.6 % masked, head 0.02 %."""
    rep = evaluate("coco_val2017", EVAL_DIR, _cov(default_redactor), limit=20)
    face = next(c for c in rep.classes if c.cls == "face")
    assert face.targets >= 3 and face.leaked == 0, rep.leaks
    assert rep.masked_area_share <= 0.075, rep.masked_area_by_source
    assert rep.masked_area_by_source.get("face", 0.0) <= 0.04, rep.masked_area_by_source
    assert rep.masked_area_by_source.get("head", 0.0) <= 0.002, rep.masked_area_by_source
