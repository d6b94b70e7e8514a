"""The redaction stage as composition: fail closed, temporal fill, zones, counts, no mutation.

Detectors are replaced by scripted fakes implementing the same ``Detector`` protocol, so
these tests say exactly which frame saw what; real-model behaviour is in test_detectors.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from operators.redactor import RedactionConfig, Redactor, _distinct_objects, text_full_sources
from operators.types import Boxes, ConfigError, Label
from operators.zones import parse_zones


class ScriptedDetector:
    """Returns ``script[frame_value]`` for a frame whose pixel (0, 0, 0) equals that value."""

    name = "scripted"

    def __init__(self, script: dict[int, Boxes] | None = None, fail: bool = False, wrong_len: bool = False):
        self.script = script or {}
        self.fail = fail
        self.wrong_len = wrong_len
        self.seen: list[int] = []

    def detect(self, frames: np.ndarray) -> list[Boxes]:
        if self.fail:
            raise RuntimeError("CUDA error: device lost")
        ids = [int(f[0, 0, 0]) for f in frames]
        self.seen.extend(ids)
        out = [self.script.get(i, Boxes.empty()) for i in ids]
        return out[:-1] if self.wrong_len else out


def frames_with_ids(n: int, h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(0)
    fr = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    fr[:, 0, 0, 0] = np.arange(n, dtype=np.uint8)  # the scripted detector keys on this pixel
    return fr


FACE = Boxes.of([[60, 40, 100, 90]], [0.9], Label.FACE)


def make(script=None, **cfg) -> tuple[Redactor, ScriptedDetector]:
    det = ScriptedDetector(script)
    config = RedactionConfig(**({"classes": ("face",), "style": "fill"} | cfg))
    return Redactor(config, detectors={"face": det}), det


def changed(a: np.ndarray, b: np.ndarray, box) -> float:
    x1, y1, x2, y2 = box
    return float((a[y1:y2, x1:x2] != b[y1:y2, x1:x2]).any(-1).mean())


def test_nothing_found_returns_copy_with_zero_counts():
    red, _ = make()
    fr = frames_with_ids(4)
    res = red.redact(fr)
    assert res.frames is not fr and np.array_equal(res.frames, fr)
    assert res.masks_per_class == {"face": 0}
    assert res.fail_closed_frames == [] and all(len(b) == 0 for b in res.boxes)


def test_face_seen_in_frame_9_also_masks_frames_7_and_8_not_6():
    red, _ = make({9: FACE}, temporal_window=2)
    fr = frames_with_ids(12)
    before = fr.copy()
    res = red.redact(fr)
    assert np.array_equal(fr, before), "input mutated"
    inner = (70, 50, 90, 80)
    for i in (7, 8, 9, 10, 11):
        assert changed(res.frames[i], fr[i], inner) == 1.0, f"frame {i} not masked"
    assert changed(res.frames[6], fr[6], inner) == 0.0
    assert res.masks_per_class["face"] == 5  # frames 7..11, one face each


def test_detect_every_runs_subset_and_carries_boxes_between():
    red, det = make({0: FACE, 4: FACE}, detect_every=4, temporal_window=0)
    fr = frames_with_ids(6)
    res = red.redact(fr)
    assert sorted(det.seen) == [0, 4, 5]  # every 4th plus the last frame
    for i in range(5):  # 1-3 were never looked at: carried from 0 and 4
        assert changed(res.frames[i], fr[i], (70, 50, 90, 80)) == 1.0, f"frame {i} not masked"


@pytest.mark.parametrize("kind", ["raises", "wrong_len"])
def test_detector_failure_masks_every_affected_frame_whole(kind):
    red, det = make()
    det.fail = kind == "raises"
    det.wrong_len = kind == "wrong_len"
    fr = frames_with_ids(5)
    res = red.redact(fr)
    assert res.fail_closed_frames == [0, 1, 2, 3, 4]
    assert res.errors and "face" in res.errors[0]
    # whole frame opaque: not one original pixel survives
    assert not (res.frames == fr).all(-1).any()


def test_failure_of_one_detector_fails_closed_even_if_another_succeeds():
    ok = ScriptedDetector({0: FACE})
    bad = ScriptedDetector(fail=True)
    red = Redactor(RedactionConfig(classes=("face", "plate"), style="fill"), detectors={"face": ok, "text": bad})
    res = red.redact(frames_with_ids(2))
    assert res.fail_closed_frames == [0, 1]


def test_failed_frames_in_detect_every_schedule_still_cover_unscheduled_frames():
    red, det = make(detect_every=3)
    det.fail = True
    fr = frames_with_ids(7)
    res = red.redact(fr)
    # frames 1, 2, 4, 5 were not scheduled; their neighbours failed, so they are masked whole
    assert not (res.frames == fr).all(-1).any()
    assert res.fail_closed_frames == list(range(7))


def test_unscheduled_frames_between_good_detections_are_not_failed():
    red, _ = make(detect_every=3)
    res = red.finish(frames_with_ids(7), [Boxes.empty(), None, None, None, None, None, Boxes.empty()], [0])
    # 1 and 2 sit after failed frame 0; 3 is scheduled-looking but None (no detection) and
    # its nearest checked neighbour before it is 0 as well
    assert res.fail_closed_frames == [0, 1, 2, 3, 4, 5]
    res = red.finish(frames_with_ids(7), [Boxes.empty(), None, None, Boxes.empty(), None, None, Boxes.empty()], [6])
    assert res.fail_closed_frames == [4, 5, 6]


def test_head_fallback_masks_person_without_face():
    person = Boxes.of([[40, 10, 100, 118]], [0.8], Label.PERSON)
    det = ScriptedDetector({0: person})
    red = Redactor(RedactionConfig(classes=("face",), style="fill"), detectors={"person": det})
    fr = frames_with_ids(1)
    res = red.redact(fr)
    assert res.masks_per_class["face"] == 1
    heads = res.boxes[0].select(res.boxes[0].label == Label.HEAD)
    assert len(heads) == 1
    x1, y1, x2, y2 = heads.xyxy[0]
    assert y1 <= 12 and x1 <= 52 and x2 >= 88  # top of the person box, its middle 60 % (HEAD_WIDTH_FRAC)
    # the person itself is not masked (person class not requested)
    assert changed(res.frames[0], fr[0], (45, 100, 95, 115)) == 0.0


def test_a_large_weak_face_box_is_dropped_and_its_person_gets_the_head_box():
    """face_large_px is measured at the face detector's input scale (face_max_side); the
    score floor applies only at and above it; the head fallback then covers the person."""
    # 1280x720 frame, face_max_side 640: scale 0.5, so a 60 px box is 30 px at the detector
    weak_big = Boxes.of([[600, 100, 660, 170]], [0.1], Label.FACE)
    weak_small = Boxes.of([[100, 100, 140, 140]], [0.1], Label.FACE)   # 20 px at the detector
    strong_big = Boxes.of([[900, 100, 960, 170]], [0.6], Label.FACE)
    person = Boxes.of([[580, 90, 680, 500]], [0.8], Label.PERSON)
    raw = Boxes.concat([weak_big, weak_small, strong_big, person])
    hw = (720, 1280)

    def faces(**cfg):
        red = Redactor(RedactionConfig(classes=("face",), **cfg), detectors={})
        b = red.plan_from([raw], [], hw)[0]
        return b.select(b.label == Label.FACE).xyxy.tolist(), b.select(b.label == Label.HEAD)

    kept, heads = faces(face_large_px=24, face_large_min_score=0.2)
    assert kept == [[100, 100, 140, 140], [900, 100, 960, 170]]
    assert len(heads) == 1 and heads.xyxy[0, 0] <= 600 and heads.xyxy[0, 2] >= 660
    kept, heads = faces(face_large_px=32, face_large_min_score=0.2)  # 30 px < 32: kept
    assert len(kept) == 3 and len(heads) == 0
    kept, _ = faces(face_large_px=24, face_large_min_score=0.05)   # scored above the floor
    assert len(kept) == 3
    kept, _ = faces(face_large_px=24, face_large_min_score=0.2, face_max_side=None)  # native: 60 and 40 px
    assert kept == [[900, 100, 960, 170]]
    kept, _ = faces(face_large_px=None)
    assert len(kept) == 3
    kept, _ = faces()  # the defaults: 64 px at the detector, 0.15 (docs/quality.md, face masks round 4)
    assert len(kept) == 3  # 30 px at the detector: kept
    kept, _ = faces(face_max_side=None)  # native: the 60 px box is still under 64 px
    assert len(kept) == 3
    red = Redactor(RedactionConfig(classes=("face",)), detectors={})
    big = Boxes.of([[0, 0, 140, 160]], [0.14], Label.FACE)   # 70 px at the detector
    assert len(red.plan_from([big], [], hw)[0]) == 0
    assert len(red.plan_from([Boxes(big.xyxy, np.array([0.15], np.float32), big.label)], [], hw)[0]) == 1


@pytest.mark.parametrize("plate_found,fallback,expected", [
    (False, True, 1),   # vehicle, no plate found: its lower part is masked
    (True, True, 0),    # the plate was found: only the plate
    (False, False, 0),  # fallback off
])
def test_plate_fallback_masks_lower_part_of_vehicle_without_plate(plate_found, fallback, expected):
    vehicle = Boxes.of([[20, 10, 140, 110]], [0.8], Label.VEHICLE)
    plate = Boxes.of([[60, 80, 100, 95]], [0.9], Label.PLATE)
    det = ScriptedDetector({0: Boxes.concat([vehicle, plate]) if plate_found else vehicle})
    red = Redactor(RedactionConfig(classes=("plate",), style="fill", plate_fallback=fallback),
                   detectors={"text": det})
    fr = frames_with_ids(1)
    res = red.redact(fr)
    regions = res.boxes[0].select(res.boxes[0].label == Label.PLATE_REGION)
    assert len(regions) == expected
    assert res.masks_per_class["plate"] == (1 if plate_found or fallback else 0)
    assert changed(res.frames[0], fr[0], (60, 80, 100, 95)) == (1.0 if plate_found or fallback else 0.0)
    assert changed(res.frames[0], fr[0], (40, 100, 120, 108)) == float(expected)  # the bumper beside the plate
    assert changed(res.frames[0], fr[0], (25, 15, 135, 38)) == 0.0  # the roof and windows stay visible
    # a face-only config never masks vehicles
    face_only = Redactor(RedactionConfig(classes=("face",), style="fill"), detectors={"text": det})
    assert not (face_only.redact(fr).boxes[0].label == Label.PLATE_REGION).any()


def test_tall_text_boxes_are_not_plates_but_stay_text():
    tall = Boxes.of([[20, 10, 60, 100], [80, 60, 140, 80]], [0.9, 0.9], Label.PLATE)  # 40x90 and 60x20
    det = ScriptedDetector({0: tall})
    hw = (120, 160)
    for classes, kept in ((("plate",), 1), (("plate", "text"), 2), (("text",), 2)):
        red = Redactor(RedactionConfig(classes=classes, style="fill", plate_fallback=False), detectors={"text": det})
        raw, failed, _, _ = red.detect(frames_with_ids(1))
        assert len(red.plan_from(raw, failed, hw)[0]) == kept, classes


def test_square_text_on_a_vehicle_is_kept_but_does_not_stand_for_its_plate():
    """A square box on a vehicle's lower part (a plate at an angle, a short or two-line plate)
    is masked; elsewhere it is dropped. It never counts as the vehicle's plate, so the
    fallback still masks the bumper (tail lights score as text too)."""
    vehicle = Boxes.of([[20, 10, 140, 110]], [0.8], Label.VEHICLE)
    on_car = Boxes.of([[30, 80, 50, 100]], [0.9], Label.PLATE)    # 20x20, lower part of the car
    off_car = Boxes.of([[145, 10, 158, 24]], [0.9], Label.PLATE)  # 13x14, beside it
    det = ScriptedDetector({0: Boxes.concat([vehicle, on_car, off_car])})
    for fallback in (False, True):
        red = Redactor(RedactionConfig(classes=("plate",), style="fill", plate_fallback=fallback),
                       detectors={"text": det})
        fr = frames_with_ids(1)
        res = red.redact(fr)
        assert changed(res.frames[0], fr[0], (30, 80, 50, 100)) == 1.0
        assert changed(res.frames[0], fr[0], (146, 11, 157, 23)) == 0.0
        regions = res.boxes[0].select(res.boxes[0].label == Label.PLATE_REGION)
        assert len(regions) == int(fallback)


def test_text_longer_than_any_plate_is_not_a_plate_unless_on_a_vehicle():
    """Round 3: a box longer than plate_max_aspect (5:1; the EU plate is 4.7:1) is a line of
    text (a banner in a crowd), not a plate: dropped when only plates are wanted, kept on a
    vehicle's lower part (a plate merged with the text beside it) and as text."""
    vehicle = Boxes.of([[20, 40, 100, 110]], [0.8], Label.VEHICLE)
    banner = Boxes.of([[10, 5, 150, 25]], [0.9], Label.PLATE)     # 140 x 20: 7:1, off the car
    bumper = Boxes.of([[30, 90, 90, 100]], [0.9], Label.PLATE)    # 60 x 10: 6:1, on the car
    plate = Boxes.of([[110, 60, 150, 70]], [0.9], Label.PLATE)    # 40 x 10: 4:1, off the car
    det = ScriptedDetector({0: Boxes.concat([vehicle, banner, bumper, plate])})
    fr = frames_with_ids(1)
    red = Redactor(RedactionConfig(classes=("plate",), style="fill", plate_fallback=False), detectors={"text": det})
    res = red.redact(fr)
    assert changed(res.frames[0], fr[0], (12, 7, 148, 23)) == 0.0
    assert changed(res.frames[0], fr[0], (30, 90, 90, 100)) == 1.0
    assert changed(res.frames[0], fr[0], (110, 60, 150, 70)) == 1.0
    for kw in ({"plate_max_aspect": None}, {"classes": ("plate", "text")}):
        red = Redactor(RedactionConfig(**{"classes": ("plate",), "style": "fill", "plate_fallback": False, **kw}),
                       detectors={"text": det})
        assert changed(red.redact(fr).frames[0], fr[0], (12, 7, 148, 23)) == 1.0, kw



def test_loose_text_taller_than_loose_text_max_height_of_the_frame_is_not_masked():
    """Loose text (no vehicle near) taller than loose_text_max_height of the frame height is
    a banner or a sign, not a plate whose car was missed (the tallest such plate in the shared
    sets is 0.32 of the frame): not masked. The same box near a vehicle stays a plate, and
    shorter loose text is still masked."""
    tall = Boxes.of([[10, 10, 130, 60]], [0.9], Label.PLATE)       # 50 px of 120: 0.42
    short = Boxes.of([[10, 70, 110, 110]], [0.9], Label.PLATE)     # 40 px: 0.33
    fr = frames_with_ids(1)

    def run(extra: Boxes | None = None, **kw):
        det = ScriptedDetector({0: Boxes.concat([tall, short] + ([extra] if extra is not None else []))})
        cfg = {"classes": ("plate",), "style": "fill", "plate_fallback": False, "plate_vehicle_reach": 25.0, **kw}
        res = Redactor(RedactionConfig(**cfg), detectors={"text": det}).redact(fr)
        return res, res.boxes[0]

    assert RedactionConfig().loose_text_max_height is None  # opt-in: docs/quality.md says why
    res, boxes = run(loose_text_max_height=0.4)
    assert [int(x) for x in boxes.label] == [int(Label.LOOSE_TEXT)]
    assert changed(res.frames[0], fr[0], (10, 10, 130, 60)) == 0.0
    assert changed(res.frames[0], fr[0], (10, 70, 110, 110)) == 1.0
    res, boxes = run(loose_text_max_height=None)
    assert int((boxes.label == Label.LOOSE_TEXT).sum()) == 2 and changed(res.frames[0], fr[0], (10, 10, 130, 60)) == 1.0
    res, boxes = run(loose_text_max_height=0.3)
    assert len(boxes) == 0 and changed(res.frames[0], fr[0], (10, 70, 110, 110)) == 0.0
    vehicle = Boxes.of([[5, 5, 150, 118]], [0.8], Label.VEHICLE)
    res, boxes = run(vehicle, loose_text_max_height=0.4)
    assert int((boxes.label == Label.PLATE).sum()) == 2 and changed(res.frames[0], fr[0], (10, 10, 130, 60)) == 1.0


def test_text_with_no_vehicle_near_is_loose_masked_tight_and_not_where_worn():
    """Over-masking round 3: plate-class text farther than plate_vehicle_reach of its heights
    from every vehicle is LOOSE_TEXT: masked without the plate's padding, and not at all when
    its centre is on a person (worn or held) unless loose_text_worn; text on or near a
    vehicle stays a plate with its padding. The text class masks all text as before."""
    vehicle = Boxes.of([[10, 60, 70, 115]], [0.8], Label.VEHICLE)
    plate = Boxes.of([[30, 95, 50, 103]], [0.9], Label.PLATE)      # on the car
    beside = Boxes.of([[71, 100, 81, 106]], [0.9], Label.PLATE)    # 6 px high, centre 6 px right of it: near at 1
    sign = Boxes.of([[100, 10, 140, 26]], [0.9], Label.PLATE)      # 16 px high, 40+ px away: loose
    person = Boxes.of([[100, 40, 150, 118]], [0.8], Label.PERSON)
    shirt = Boxes.of([[112, 60, 136, 70]], [0.9], Label.PLATE)     # on the person: worn
    det = ScriptedDetector({0: Boxes.concat([vehicle, plate, beside, sign, person, shirt])})
    fr = frames_with_ids(1)

    def run(**kw):
        cfg = {"classes": ("plate",), "style": "fill", "plate_fallback": False, "plate_padding": 0.25, **kw}
        res = Redactor(RedactionConfig(**cfg), detectors={"text": det}).redact(fr)
        return res, res.boxes[0]

    res, boxes = run(plate_vehicle_reach=1.0, loose_text_padding=0.0, loose_text_worn=False)
    labels = sorted(int(x) for x in boxes.label)
    assert labels == sorted([int(Label.PLATE), int(Label.PLATE), int(Label.LOOSE_TEXT)])
    assert changed(res.frames[0], fr[0], (26, 93, 54, 105)) == 1.0      # the plate, padded
    assert changed(res.frames[0], fr[0], (69, 99, 83, 107)) == 1.0      # near the car: padded too
    assert changed(res.frames[0], fr[0], (100, 10, 140, 26)) == 1.0     # the sign's glyphs
    assert changed(res.frames[0], fr[0], (92, 8, 98, 12)) == 0.0         # not the plate padding around it
    assert changed(res.frames[0], fr[0], (112, 60, 136, 70)) == 0.0     # the shirt is not masked
    assert res.masks_per_class == {"plate": 3}
    _, boxes = run(plate_vehicle_reach=1.0, loose_text_worn=True)
    assert int((boxes.label == Label.LOOSE_TEXT).sum()) == 2
    _, boxes = run(plate_vehicle_reach=0.0, loose_text_worn=True)
    assert int((boxes.label == Label.LOOSE_TEXT).sum()) == 3            # "beside" lies outside the car
    res, boxes = run(plate_vehicle_reach=None)
    assert int((boxes.label == Label.PLATE).sum()) == 4 and changed(res.frames[0], fr[0], (92, 8, 98, 12)) == 1.0
    res, boxes = run(plate_vehicle_reach=1.0, plate_crops=False)  # no vehicles searched: no loose text
    assert int((boxes.label == Label.PLATE).sum()) == 4 and changed(res.frames[0], fr[0], (92, 8, 98, 12)) == 1.0
    res, boxes = run(plate_vehicle_reach=1.0, classes=("plate", "text"))
    assert not (boxes.label == Label.LOOSE_TEXT).any() and changed(res.frames[0], fr[0], (112, 60, 136, 70)) == 1.0
    red = Redactor(RedactionConfig(classes=("plate",), plate_vehicle_reach=1.0), detectors={"text": det})
    parts = red.coverage_by_source((120, 160), boxes.select(boxes.label != Label.VEHICLE))
    assert "plate" in parts
    loose = Boxes.of([[100, 10, 140, 26]], [0.9], Label.LOOSE_TEXT)
    assert set(red.coverage_by_source((120, 160), loose)) == {"loose_text"}

def test_text_far_from_vehicles_keeps_plate_padding_in_a_dark_frame():
    """Plates round 3: YOLOX misses most vehicles in the dark, so there no vehicle near is no
    evidence: in a frame the lit-plate pass's gate calls dark, plate-class text far from every
    vehicle stays a plate (padded); the same boxes on a bright frame are loose text (unpadded).
    Text worn by a person is not masked in either. Decided from the frame's pixels, or from
    plan_from's ``dark`` (the eval cache's re-score)."""
    from operators.detectors.litplate import DARK_MEDIAN

    vehicle = Boxes.of([[10, 60, 70, 115]], [0.8], Label.VEHICLE)
    sign = Boxes.of([[100, 10, 140, 26]], [0.9], Label.PLATE)      # 16 px high, 40+ px from the car
    person = Boxes.of([[100, 40, 150, 118]], [0.8], Label.PERSON)
    shirt = Boxes.of([[112, 60, 136, 70]], [0.9], Label.PLATE)     # on the person: worn
    raw = Boxes.concat([vehicle, sign, person, shirt])
    rng = np.random.default_rng(1)
    dark = rng.integers(0, 2 * int(DARK_MEDIAN) - 20, size=(1, 120, 160, 3), dtype=np.uint8)  # median ~DARK_MEDIAN - 10
    bright = rng.integers(2 * int(DARK_MEDIAN) - 20, 256, size=(1, 120, 160, 3), dtype=np.uint8)
    for fr in (dark, bright):
        fr[0, 0, 0, 0] = 0
    cfg = RedactionConfig(classes=("plate",), style="fill", plate_fallback=False, plate_padding=0.25,
                          plate_vehicle_reach=1.0, loose_text_padding=0.0, loose_text_dark_padding=True)
    red = Redactor(cfg, detectors={"text": ScriptedDetector({0: raw})})

    res = red.redact(dark)
    texts = res.boxes[0].select(np.isin(res.boxes[0].label, [int(Label.PLATE), int(Label.LOOSE_TEXT)]))
    assert texts.label.tolist() == [int(Label.PLATE)] and texts.xyxy.tolist() == sign.xyxy.tolist()
    assert changed(res.frames[0], dark[0], (92, 8, 98, 12)) == 1.0      # the plate padding around it
    assert changed(res.frames[0], dark[0], (112, 60, 136, 70)) == 0.0   # worn: not masked

    res = red.redact(bright)
    texts = res.boxes[0].select(np.isin(res.boxes[0].label, [int(Label.PLATE), int(Label.LOOSE_TEXT)]))
    assert texts.label.tolist() == [int(Label.LOOSE_TEXT)]
    assert changed(res.frames[0], bright[0], (100, 10, 140, 26)) == 1.0
    assert changed(res.frames[0], bright[0], (92, 8, 98, 12)) == 0.0

    asked: list[int] = []

    def is_dark(i: int) -> bool:
        asked.append(i)
        return True

    assert red.plan_from([raw], [], (120, 160), dark=is_dark)[0].label.tolist().count(int(Label.PLATE)) == 1
    assert asked == [0]
    assert (red.plan_from([raw], [], (120, 160))[0].label == Label.LOOSE_TEXT).sum() == 1  # no pixels: not dark
    near = Boxes.concat([vehicle, Boxes.of([[30, 95, 50, 103]], [0.9], Label.PLATE)])  # no loose text: not asked
    red.plan_from([near], [], (120, 160), dark=is_dark)
    assert asked == [0]


def test_text_far_from_vehicles_is_loose_in_a_dark_frame_by_default():
    """Where the crowds' area goes (docs/quality.md): the dark-frame padding is off by default
    (round 3b's native-resolution pass finds the lit plates it was for): far text in a dark
    frame is loose text like anywhere, masked without the plate padding, and darkness is not
    even measured."""
    from operators.detectors.litplate import DARK_MEDIAN

    vehicle = Boxes.of([[10, 60, 70, 115]], [0.8], Label.VEHICLE)
    sign = Boxes.of([[100, 10, 140, 26]], [0.9], Label.PLATE)
    rng = np.random.default_rng(1)
    dark = rng.integers(0, 2 * int(DARK_MEDIAN) - 20, size=(1, 120, 160, 3), dtype=np.uint8)
    dark[0, 0, 0, 0] = 0  # the scripted detector's key
    red = Redactor(RedactionConfig(classes=("plate",), style="fill", plate_fallback=False, plate_padding=0.25,
                                   plate_vehicle_reach=1.0, loose_text_padding=0.0),
                   detectors={"text": ScriptedDetector({0: Boxes.concat([vehicle, sign])})})
    res = red.redact(dark)
    texts = res.boxes[0].select(np.isin(res.boxes[0].label, [int(Label.PLATE), int(Label.LOOSE_TEXT)]))
    assert texts.label.tolist() == [int(Label.LOOSE_TEXT)]
    assert changed(res.frames[0], dark[0], (100, 10, 140, 26)) == 1.0
    assert changed(res.frames[0], dark[0], (92, 8, 98, 12)) == 0.0     # no plate padding
    asked: list[int] = []
    red.plan_from([Boxes.concat([vehicle, sign])], [], (120, 160), dark=lambda i: bool(asked.append(i)) or True)
    assert asked == []


def test_zones_always_masked_for_their_camera():
    zones = parse_zones({"cameras": {"cam-1": [{"name": "window", "normalized": False,
                                                "polygon": [[0, 0], [40, 0], [40, 40], [0, 40]]}]}})
    red, _ = make()
    red.zones = zones
    fr = frames_with_ids(2)
    res = red.redact(fr, camera_id="cam-1")
    assert changed(res.frames[0], fr[0], (2, 2, 38, 38)) == 1.0
    other = red.redact(fr, camera_id="cam-2")
    assert changed(other.frames[0], fr[0], (2, 2, 38, 38)) == 0.0


def test_coverage_matches_applied_pixels():
    red, _ = make({0: FACE}, temporal_window=0)
    fr = frames_with_ids(1)
    res = red.redact(fr)
    cov = red.coverage(fr.shape[1:3], res.boxes[0])
    diff = (res.frames[0] != fr[0]).any(-1)
    assert not (diff & ~cov).any(), "pixels changed outside the reported coverage"
    assert diff[cov].mean() > 0.95


def test_coverage_by_source_splits_the_coverage_by_what_masked_it():
    zones = parse_zones({"cameras": {"cam-1": [{"name": "window", "normalized": False,
                                                "polygon": [[0, 0], [10, 0], [10, 10], [0, 10]]}]}})
    red, _ = make(temporal_window=0)
    red.zones = zones
    hw = (64, 64)
    boxes = Boxes.concat([Boxes.of([[20, 20, 30, 32]], [0.9], Label.FACE),
                          Boxes.of([[40, 40, 60, 50]], [0.9], Label.HEAD),
                          Boxes.of([[0, 50, 20, 60]], [0.9], Label.PLATE_REGION)])
    parts = red.coverage_by_source(hw, boxes, "cam-1")
    assert set(parts) == {"face", "head", "plate_region", "zone"}
    union = np.zeros(hw, bool)
    for m in parts.values():
        union |= m
    assert np.array_equal(union, red.coverage(hw, boxes, "cam-1"))
    assert parts["face"][26, 25] and not parts["face"][45, 50] and parts["head"][45, 50]
    assert red.coverage_by_source(hw, Boxes.empty(), "cam-2") == {}
    whole = red.coverage_by_source(hw, Boxes.of([[0, 0, 64, 64]], [1.0], Label.FRAME))
    assert whole["frame"].all()


def test_detect_many_batches_across_chunks_by_shape():
    red, det = make({1: FACE})
    a, b = frames_with_ids(2), frames_with_ids(3, 90, 100)
    out = red.detect_many([a, b])
    assert [len(o[0]) for o in out] == [2, 3]
    assert len(out[0][0][1]) == 1 and len(out[1][0][1]) == 1  # frame id 1 in both chunks


@pytest.mark.parametrize("bad", [
    {"classes": ("face", "car")},
    {"classes": ()},
    {"style": "pixelate"},
    {"detect_every": 0},
    {"face_shape": "star"},
    {"text_model": "tesseract"},
    {"plate_fallback_min_px": -1},
    {"plate_fallback_threshold": 1.5},
    {"head_shape": "star"},
    {"head_min_person_px": -4},
    {"head_top_cut": "no"},
    {"head_min_score": 2.0},
    {"plate_region_shrink": 1},
    {"plate_max_aspect": 0.5},
    {"plate_vehicle_reach": -1},
    {"loose_text_padding": 3},
    {"loose_text_worn": "no"},
    {"loose_text_max_height": 0},
    {"loose_text_max_height": 1.5},
    {"face_large_px": 0},
    {"face_large_min_score": 1.5},
    {"text_full_every": 0},
    {"text_full_every": 1.5},
    {"text_full_every": True},
])
def test_config_errors_name_the_key(bad):
    with pytest.raises(ConfigError) as ei:
        RedactionConfig(**bad).validate()
    assert next(iter(bad)) in str(ei.value)


@pytest.mark.parametrize("xyxy,expected", [
    ([], 0),
    ([[0, 0, 10, 10]], 1),
    ([[0, 0, 10, 10], [1, 1, 11, 11]], 1),            # carried copy of the same face
    ([[0, 0, 10, 10], [50, 50, 60, 60]], 2),          # two faces
    ([[0, 0, 10, 10], [8, 0, 18, 10], [16, 0, 26, 10]], 3),  # chained small overlaps stay apart
])
def test_distinct_objects(xyxy, expected):
    assert _distinct_objects(np.asarray(xyxy, np.float32).reshape(-1, 4)) == expected


def _components_by_union_find(xyxy: np.ndarray, overlap: float = 0.3) -> int:
    """The reference: union-find over every pair linked by overlap (the code before it was vectorised)."""
    n = len(xyxy)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            a, b = xyxy[i].astype(np.float64), xyxy[j].astype(np.float64)
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            small = max(1e-6, min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])))
            if iw * ih / small > overlap:
                parent[find(i)] = find(j)
    return len({find(i) for i in range(n)})


@pytest.mark.parametrize("seed", range(9))
def test_distinct_objects_are_the_connected_groups(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(4, 40, (n, 2))
    # long chains too: boxes strung along a line, each overlapping the next
    if seed % 2:
        xy[:, 1] = 50.0
        xy[:, 0] = np.sort(xy[:, 0]) * 0.3
    xyxy = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    if seed % 3 == 2:  # exact copies and boxes sharing a left edge (ties in the sweep)
        xyxy = np.concatenate([xyxy, xyxy[: n // 2]])
        xyxy[::5, 0] = xyxy[0, 0]
    assert _distinct_objects(xyxy) == _components_by_union_find(xyxy)


def test_rejects_bad_frames():
    red, _ = make()
    with pytest.raises(ValueError):
        red.redact(np.zeros((4, 4, 3), np.uint8))


def test_miss_on_a_scheduled_frame_is_covered_by_neighbouring_detections():
    # detect_every=3 schedules 0, 3, 6, 9; the detector misses the face on frame 6 only
    red, _ = make({0: FACE, 3: FACE, 9: FACE}, detect_every=3, temporal_window=2)
    fr = frames_with_ids(10)
    res = red.redact(fr)
    for i in range(10):
        assert changed(res.frames[i], fr[i], (70, 50, 90, 80)) == 1.0, f"frame {i} not masked"


def test_detections_are_read_with_the_configs_own_thresholds_and_text_class():
    """Detectors shared by several policies run at the lowest threshold and label text for
    one class; each policy's redactor keeps what its own config accepts."""
    import numpy as np

    from operators.redactor import RedactionConfig, Redactor
    from operators.types import Boxes, Label

    frames = np.full((1, 60, 80, 3), 128, np.uint8)
    raw = [Boxes.concat([Boxes.of([[0, 0, 10, 10]], [0.2], Label.FACE), Boxes.of([[20, 0, 30, 10]], [0.6], Label.FACE),
                         Boxes.of([[40, 40, 70, 50]], [0.7], Label.PLATE)])]
    strict = Redactor(RedactionConfig(classes=("face", "text"), face_threshold=0.5, temporal_window=0), detectors={})
    boxes = strict.plan_from(raw, [], (60, 80))[0]
    assert sorted(boxes.label.tolist()) == sorted([int(Label.FACE), int(Label.TEXT)])
    assert boxes.select(boxes.label == Label.FACE).score.tolist() == [np.float32(0.6)]
    loose = Redactor(RedactionConfig(classes=("face", "plate"), face_threshold=0.1, temporal_window=0), detectors={})
    assert len(loose.plan_from(raw, [], (60, 80))[0]) == 3
    assert strict.finish(frames, raw, []).masks_per_class == {"face": 1, "text": 1}


def test_in_place_masks_the_callers_chunk_and_a_read_only_one_is_copied():
    red, _ = make({0: FACE, 1: FACE})
    fr = frames_with_ids(2)
    raw = red.detect(fr)[0]
    mine = fr.copy()
    assert red.finish(mine, raw, [], in_place=True).frames is mine and changed(mine[0], fr[0], (60, 40, 100, 90)) > 0.5
    frozen = fr.copy()
    frozen.flags.writeable = False
    res = red.finish(frozen, raw, [], in_place=True)
    assert res.frames is not frozen and np.array_equal(res.frames, mine) and np.array_equal(frozen, fr)


@pytest.mark.parametrize("n,every,expected", [
    (0, 2, []),
    (1, 3, [0]),                        # a still image: always its own pass
    (2, 2, [0, 1]),                     # first and last
    (5, 1, [0, 1, 2, 3, 4]),
    (5, 2, [0, 0, 2, 2, 4]),
    (4, 2, [0, 0, 2, 3]),               # the last frame gets its own pass
    (7, 3, [0, 0, 0, 3, 3, 3, 6]),
    (9, 8, [0, 0, 0, 0, 0, 0, 0, 0, 8]),
])
def test_text_full_sources(n, every, expected):
    assert text_full_sources(n, every) == expected


@pytest.mark.parametrize("n,every", [(-1, 2), (3, 0), (3, True)])
def test_text_full_sources_rejects_bad_arguments(n, every):
    with pytest.raises(ValueError):
        text_full_sources(n, every)


class CadencedText:
    """A second-stage text detector that honours ``full_from``: frame id -> its plate box; it
    records which frames its full pass ran on."""

    name = "cadenced"
    full_cadence = True

    def __init__(self) -> None:
        self.full_ran: list[int] = []

    def detect(self, frames: np.ndarray) -> list[Boxes]:
        ids = [int(f[0, 0, 0]) for f in frames]
        self.full_ran.extend(ids)
        return [Boxes.of([[10 + 20 * i, 10, 30 + 20 * i, 20]], [0.9], Label.PLATE) for i in ids]

    def detect_given(self, frames: np.ndarray, priors: list[Boxes], full_from=None) -> list[Boxes]:
        src = list(range(len(frames))) if full_from is None else list(full_from)
        runs = sorted(set(src))
        ran = dict(zip(runs, self.detect(frames[runs])))
        return [ran[j] for j in src]


class PlainText(CadencedText):
    full_cadence = False

    def detect_given(self, frames: np.ndarray, priors: list[Boxes]) -> list[Boxes]:
        return self.detect(frames)


def test_text_full_every_counts_each_chunk_on_its_own_when_chunks_share_a_batch():
    """Two cameras' chunks of one size go through the detectors as one batch; each chunk's
    first and last detected frames get the full pass, its others every 2nd, and a skipped
    frame carries its own chunk's boxes (never the other camera's)."""
    text = CadencedText()
    cfg = RedactionConfig(classes=("plate",), detect_every=2, text_full_every=2, style="fill")
    red = Redactor(cfg, detectors={"text": text})
    a, b = frames_with_ids(9), frames_with_ids(5)
    b[:, 0, 0, 0] += 100
    (raw_a, _, _), (raw_b, _, _) = red.detect_many([a, b])
    # a: detected 0 2 4 6 8 -> full on 0 4 8; b: detected 100 102 104 -> full on 100 104
    assert text.full_ran == [0, 4, 8, 100, 104]
    assert [None if r is None else float(r.xyxy[0, 0]) for r in raw_a] == [
        10, None, 10, None, 90, None, 90, None, 170]
    assert float(raw_b[2].xyxy[0, 0]) == 10 + 20 * 100  # b's own first frame, not a's last
    out = red.redact(a).frames
    assert (out[2, 10:20, 10:30] != a[2, 10:20, 10:30]).any(axis=-1).all()  # carried box masked on frame 2
    # a detector that does not declare full_cadence runs its full pass on every detected frame
    plain = PlainText()
    Redactor(cfg, detectors={"text": plain}).detect_many([a])
    assert plain.full_ran == [0, 2, 4, 6, 8]
