"""The subject tracker on synthetic detections: follows, fails closed on ambiguity and loss."""

from __future__ import annotations

import numpy as np
import pytest

from operators.subject import subject_exempt
from operators.tracker import SubjectTracker
from operators.types import Boxes, InputError, Label


def _frames(n: int) -> np.ndarray:
    return np.zeros((n, 120, 200, 3), np.uint8)


def _persons(*xyxy: list[float]) -> Boxes:
    return Boxes.of([list(b) for b in xyxy], None, Label.PERSON) if xyxy else Boxes.empty()


def test_empty_clip_frame_is_refused() -> None:
    with pytest.raises(InputError, match="outside the clip"):
        SubjectTracker().follow(_frames(0), [], 0, (0, 0, 10, 10))


def test_a_box_matching_nobody_is_refused() -> None:
    with pytest.raises(InputError, match="matches no single detected person"):
        SubjectTracker().follow(_frames(1), [_persons([100, 10, 130, 90])], 0, (0, 0, 20, 20))


def test_follows_forward_and_backward_through_a_short_miss() -> None:
    dets: list[Boxes | None] = [_persons([10 + 4 * i, 10, 40 + 4 * i, 90], [150, 10, 180, 90]) for i in range(12)]
    dets[6] = _persons([150, 10, 180, 90])  # the detector missed the subject once
    tr = SubjectTracker().follow(_frames(12), dets, 5, (30, 10, 60, 90))
    assert tr.kind == "person" and tr.lost_forward_from is None and tr.lost_backward_before is None
    assert [b is not None for b in tr.boxes] == [True] * 6 + [False] + [True] * 5  # the missed frame is masked
    assert all(b[0] < 100 for b in tr.boxes if b is not None)  # never the other person


def test_two_equal_candidates_lose_the_track_from_there() -> None:
    dets = [_persons([10 + 5 * i, 10, 40 + 5 * i, 90]) for i in range(5)]
    dets += [_persons([35, 10, 65, 90], [37, 10, 67, 90]) for _ in range(3)]  # someone walks into the subject
    tr = SubjectTracker().follow(_frames(8), dets, 0, (10, 10, 40, 90))
    assert tr.lost_forward_from == 5 and all(b is None for b in tr.boxes[5:])
    assert tr.reasons[5] == "ambiguous"


def test_exempts_only_the_subjects_person_and_face() -> None:
    boxes = Boxes.concat([Boxes.of([[10, 10, 50, 110]], None, Label.PERSON),   # subject
                          Boxes.of([[22, 12, 38, 30]], None, Label.FACE),      # subject's face
                          Boxes.of([[60, 10, 100, 110]], None, Label.PERSON),  # someone else
                          Boxes.of([[72, 12, 88, 30]], None, Label.FACE),      # their face
                          Boxes.of([[20, 80, 40, 90]], None, Label.PLATE)])    # a plate held by the subject
    keep = subject_exempt(boxes, np.array([10, 10, 50, 110], np.float32), "person",
                          np.array([[60, 10, 100, 110]], np.float32))
    assert keep.tolist() == [True, True, False, False, False]
