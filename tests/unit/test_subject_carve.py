"""The subject's own detected face is given back from other people's face candidates and carried
head fallbacks only when nobody else's face can be under it (operators.subject.carve_subject_face)."""

from __future__ import annotations

import numpy as np

from operators.subject import _blocked, carve_subject_face, head_region
from operators.types import Boxes, Label

# two people shoulder to shoulder: the subject on the left, a neighbour on the right
SUBJECT_PERSON = [600.0, 240.0, 640.0, 340.0]
NEIGHBOUR = np.array([[634.0, 240.0, 670.0, 340.0]], np.float32)
F = [622.0, 246.0, 630.0, 256.0]  # the subject's detected face
G = [646.0, 246.0, 654.0, 256.0]  # the neighbour's detected face, elsewhere
L = [627.0, 247.0, 637.0, 258.0]  # a low-score candidate between the two heads, over F


def boxes(*rows: tuple[list[float], float, Label]) -> Boxes:
    return Boxes(np.array([r[0] for r in rows], np.float32), np.array([r[1] for r in rows], np.float32),
                 np.array([int(r[2]) for r in rows], np.int16))


def frame(*extra: tuple[list[float], float, Label], faces: list[tuple[list[float], float]] | None = None,
          exempt_f: bool = True) -> tuple[Boxes, np.ndarray, Boxes]:
    """(mask boxes, exempt flags, this frame's face detections): F exempt, the rest not."""
    rows = [(F, 0.6, Label.FACE), (G, 0.5, Label.FACE), (SUBJECT_PERSON, 0.9, Label.PERSON), *extra]
    b = boxes(*rows)
    exempt = np.zeros(len(b), bool)
    exempt[0], exempt[2] = exempt_f, True
    det = faces if faces is not None else [(F, 0.6), (G, 0.5), *[(r[0], r[1]) for r in extra if r[2] == Label.FACE]]
    return b, exempt, boxes(*[(x, s, Label.FACE) for x, s in det])


def test_a_low_score_candidate_over_the_subjects_face_gives_back_that_face_only():
    b, exempt, here = frame((L, 0.1, Label.FACE))
    carve, face = carve_subject_face(b, exempt, here, NEIGHBOUR)
    assert carve.tolist() == [False, False, False, True] and face is not None and np.allclose(face, F)


def test_a_detected_face_is_never_carved():
    # a confident box over F that is not the subject's (a carried detection of the neighbour)
    b, exempt, here = frame((L, 0.5, Label.FACE), faces=[(F, 0.6), (G, 0.5)])
    carve, face = carve_subject_face(b, exempt, here, NEIGHBOUR)
    assert not carve[3] and face is None
    # another detected face on this frame touching F: nothing at all is carved
    b, exempt, here = frame((L, 0.1, Label.FACE), ([629.0, 248.0, 637.0, 258.0], 0.4, Label.FACE))
    assert not carve_subject_face(b, exempt, here, NEIGHBOUR)[0].any()


def test_a_neighbour_without_a_detected_face_keeps_everything_masked():
    close = np.array([[628.0, 240.0, 664.0, 340.0]], np.float32)
    assert head_region(close[0])[0] < F[2]  # its head region reaches F
    b, exempt, here = frame((L, 0.1, Label.FACE))
    assert carve_subject_face(b, exempt, here, close)[0].any()  # its face G found elsewhere: carved
    b, exempt, here = frame((L, 0.1, Label.FACE), faces=[(F, 0.6), (L, 0.1)])  # its face not found
    carve, face = carve_subject_face(b, exempt, here, close)
    assert not carve.any() and face is None
    # a neighbour whose head region does not reach F cannot have its face under F's pixels
    assert head_region(NEIGHBOUR[0])[0] >= F[2] and carve_subject_face(b, exempt, here, NEIGHBOUR)[0].any()


def test_the_subjects_face_must_be_one_confident_detection_of_this_frame():
    # carried (not detected on this frame), low-score, or two of them (ambiguous): nothing carved
    b, exempt, here = frame((L, 0.1, Label.FACE), faces=[(G, 0.5), (L, 0.1)])
    assert not carve_subject_face(b, exempt, here, NEIGHBOUR)[0].any()
    b = boxes((F, 0.2, Label.FACE), (G, 0.5, Label.FACE), (L, 0.1, Label.FACE))
    assert not carve_subject_face(b, np.array([True, False, False]), boxes((F, 0.2, Label.FACE), (G, 0.5, Label.FACE)),
                                  NEIGHBOUR)[0].any()
    b = boxes((F, 0.6, Label.FACE), ([610.0, 246.0, 618.0, 256.0], 0.6, Label.FACE), (L, 0.1, Label.FACE),
              (G, 0.5, Label.FACE))
    here = boxes((F, 0.6, Label.FACE), ([610.0, 246.0, 618.0, 256.0], 0.6, Label.FACE), (G, 0.5, Label.FACE))
    assert not carve_subject_face(b, np.array([True, True, False, False]), here, NEIGHBOUR)[0].any()


def test_a_head_fallback_is_carved_only_when_its_person_is_here_with_a_face_elsewhere():
    head = ([626.0, 236.0, 660.0, 262.0], 0.8, Label.HEAD)  # the neighbour's head box carried from a frame without G
    b, exempt, here = frame(head)
    carve, face = carve_subject_face(b, exempt, here, NEIGHBOUR)
    assert carve[3] and face is not None
    # its person is not detected on this frame: no owner to account for, it stays whole
    b, exempt, here = frame(head)
    assert not carve_subject_face(b, exempt, here, np.zeros((0, 4), np.float32))[0].any()


def test_blocked_gives_back_exactly_the_face_pixels_of_carved_boxes():
    class Cov:
        def coverage(self, hw, bx):
            m = np.zeros(hw[:2], bool)
            for x1, y1, x2, y2 in bx.xyxy.astype(int):
                m[y1:y2, x1:x2] = True
            return m

    hw = (300, 700)
    b, exempt, here = frame((L, 0.1, Label.FACE))
    carve, face = carve_subject_face(b, exempt, here, NEIGHBOUR)
    others = b.select(~exempt)
    blocked = _blocked(Cov(), hw, others, carve[~exempt], face)
    assert not blocked[246:256, 622:630].any()  # F's pixels come back
    assert blocked[247:258, 630:637].all()  # the rest of the candidate stays masked
    assert blocked[246:256, 646:654].all()  # the neighbour's detected face stays masked
    assert _blocked(Cov(), hw, others, None, None)[247:256, 627:630].all()  # without carving: hidden
