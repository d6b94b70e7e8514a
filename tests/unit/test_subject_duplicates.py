"""A box drawn around one face is one candidate, not one per face detector: the union of
CenterFace and YuNet often returns the same face twice, and the subject tracker used to
refuse such a request as ambiguous ("matches no single detected person or face").
:func:`operators.tracker.merge_duplicate_faces` folds duplicates for association and
tracking only; masking still covers every box of the union."""

from __future__ import annotations

import inspect
from typing import Any

import cv2
import numpy as np
import pytest

from operators.redactor import RedactionConfig, Redactor
from operators.subject import CONFIDENT_FACE_SCORE, redact_keep_subject
from operators.tracker import (
    DUPLICATE_FACE_IOU,
    SubjectTracker,
    containment,
    iou,
    merge_duplicate_faces,
)
from operators.types import Boxes, InputError, Label
from tests.shared import EVAL, MODELS


def faces(*rows: tuple[list[float], float]) -> Boxes:
    return Boxes.of([r[0] for r in rows], [r[1] for r in rows], Label.FACE) if rows else Boxes.empty()


def coords(b: Boxes) -> list[list[float]]:
    return sorted(b.xyxy.tolist())


# ---------------------------------------------------------------- the rule, on synthetic boxes
def test_nothing_to_merge_is_returned_as_is() -> None:
    for b in (Boxes.empty(), faces(([0, 0, 10, 10], 0.9)),
              faces(([0, 0, 10, 10], 0.9), ([20, 0, 30, 10], 0.8))):  # two separate faces
        assert merge_duplicate_faces(b) is b


def test_one_face_from_two_detectors_becomes_its_better_scored_box() -> None:
    cf, yn = ([100, 100, 140, 150], 0.6), ([104, 96, 140, 142], 0.9)  # IoU ~0.6: one face, two framings
    persons = Boxes.of([[80, 80, 170, 300]], [0.8], Label.PERSON)
    b = Boxes.concat([faces(cf, yn), persons])
    before = b.xyxy.copy()
    out = merge_duplicate_faces(b)
    assert coords(out.select(out.label == Label.FACE)) == [yn[0]]
    assert coords(out.select(out.label == Label.PERSON)) == [[80, 80, 170, 300]]  # other labels untouched
    np.testing.assert_array_equal(b.xyxy, before)  # not mutated


def test_low_score_candidates_on_a_face_are_folded_into_it() -> None:
    b = faces(([100, 100, 140, 150], 0.8), ([98, 104, 136, 150], 0.07), ([104, 96, 140, 142], 0.9))
    assert coords(merge_duplicate_faces(b)) == [[104, 96, 140, 142]]


def test_a_box_spanning_two_detected_faces_merges_nothing() -> None:
    # a wide box across two neighbours' faces, scored highest: dropping them would leave one
    # candidate where there are two people
    left, right = ([100, 100, 130, 140], 0.8), ([128, 100, 158, 140], 0.7)
    wide = ([100, 98, 158, 142], 0.95)
    b = faces(wide, left, right)
    assert iou(np.float32(wide[0]), np.float32([left[0], right[0]])).min() >= DUPLICATE_FACE_IOU
    assert merge_duplicate_faces(b) is b
    with pytest.raises(InputError, match="matches no single detected person or face"):
        SubjectTracker().associate(b, np.float32([98, 96, 160, 144]))
    # the same boxes with the wide one scored lowest: it is folded into the better face
    b = faces((wide[0], 0.5), left, right)
    assert coords(merge_duplicate_faces(b)) == sorted([left[0], right[0]])


def test_the_threshold_is_the_face_detectors_nms_and_the_trackers() -> None:
    from operators.detectors.centerface import CenterFaceDetector
    from operators.detectors.yunet import YuNetDetector

    for cls in (CenterFaceDetector, YuNetDetector):
        assert inspect.signature(cls.__init__).parameters["nms_iou"].default == DUPLICATE_FACE_IOU
    assert SubjectTracker().min_iou == DUPLICATE_FACE_IOU
    assert inspect.signature(merge_duplicate_faces).parameters["confident"].default == CONFIDENT_FACE_SCORE


# ---------------------------------------------------------------- the real union on a crowded frame
IMAGE = "0_Parade_Parade_0_490.jpg"  # a parade crowd: 45 persons detected, faces side by side


@pytest.fixture(scope="module")
def crowd() -> tuple[Redactor, np.ndarray, Boxes, Boxes, Boxes]:
    img = cv2.imread(str(EVAL / "faces_wider_hard" / "images" / IMAGE))
    assert img is not None, f"missing {IMAGE} in {EVAL}/faces_wider_hard"
    red = Redactor(RedactionConfig(classes=("face", "plate", "person"), detect_every=1, model_dir=str(MODELS)))
    union: Any = red.detectors["face"]
    cf, yn = union.centerface.detect(img[None])[0], union.yunet.detect(img[None])[0]
    raw = red.detect(img[None])[0][0]
    assert raw is not None
    return red, img, raw, cf, yn


def _requests(raw: Boxes, cf: Boxes, yn: Boxes) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Boxes a privacy officer draws around one face that both detectors found (the hull of the
    two), which the old association refused: two union faces at IoU >= 0.3, no single person."""
    all_faces = raw.xyxy[raw.label == Label.FACE]
    persons = raw.xyxy[raw.label == Label.PERSON]
    out = []
    for i in np.flatnonzero(cf.score >= CONFIDENT_FACE_SCORE):
        ov = iou(cf.xyxy[i], yn.xyxy)
        (m,) = np.nonzero(ov >= DUPLICATE_FACE_IOU)
        if len(m) != 1 or yn.score[m[0]] < CONFIDENT_FACE_SCORE:
            continue
        a, b = cf.xyxy[i], yn.xyxy[m[0]]
        req = np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])]).astype(np.float32)
        if req[2] - req[0] < 24:  # big enough to draw around
            continue
        if (iou(req, all_faces) >= DUPLICATE_FACE_IOU).sum() < 2:
            continue
        if len(persons) and (iou(req, persons).max() >= 0.4 or (containment(req, persons) >= 0.7).sum() == 1):
            continue  # would be taken as a person: not this case
        out.append((req, a, b))
    return out


def test_a_box_around_one_face_in_a_crowd_is_accepted_and_tracked(crowd: Any) -> None:
    red, img, raw, cf, yn = crowd
    requests = _requests(raw, cf, yn)
    assert len(requests) >= 3, "expected faces found by both detectors in this crowd"
    merged = merge_duplicate_faces(raw)
    merged_faces = merged.xyxy[merged.label == Label.FACE]
    accepted = []
    for req, a, b in requests:
        try:
            SubjectTracker().associate(raw, req)
        except InputError:
            pass
        else:
            pytest.fail("precondition: the union's own output is ambiguous for this request")
        try:
            kind, box = SubjectTracker().associate(merged, req)
        except InputError:  # still refused: only for a second face there that is no duplicate of this one
            near = merged_faces[iou(req, merged_faces) >= DUPLICATE_FACE_IOU]
            assert len(near) >= 2 and float(iou(near[0], near[1:]).min()) < DUPLICATE_FACE_IOU
            continue
        assert kind == "face" and float(iou(box, np.stack([a, b])).min()) >= DUPLICATE_FACE_IOU
        accepted.append((req, a, b))
    # measured: 21 of 22 (the other has a 0.15 candidate beside the face, not on it)
    assert len(accepted) >= 0.9 * len(requests), (len(accepted), len(requests))

    # end to end on a short clip: tracked on every frame, the subject's face shown, every other
    # face of the union still masked (masking keeps all boxes: no duplicate dropped there)
    req, a, b = accepted[0]
    n = 3
    frames = np.repeat(img[None], n, axis=0)
    res = redact_keep_subject(frames, req, 1, redactor=red, detections=([raw] * n, []))
    assert res.track.kind == "face" and res.track.tracked_frames == n and all(res.subject_visible)
    subject = res.track.boxes[1]
    assert subject is not None
    cx, cy = int((a[0] + a[2] + b[0] + b[2]) / 4), int((a[1] + a[3] + b[1] + b[3]) / 4)
    assert (res.frames[:, cy, cx] == img[cy, cx]).all()  # the subject's face centre is shown
    others = raw.select((raw.label == Label.FACE) & (iou(subject, raw.xyxy) < DUPLICATE_FACE_IOU))
    assert len(others) > 10
    for i in range(n):
        masked = {tuple(x) for x in res.boxes[i].xyxy.round(2).tolist()}
        assert {tuple(x) for x in others.xyxy.round(2).tolist()} <= masked
