import numpy as np
import pytest

from operators.head import HEAD_HEIGHT_FRAC, head_regions
from operators.types import Boxes, Label

HW = (720, 1280)
STANDING = [600, 100, 700, 400]  # 100 x 300


def test_no_persons_no_heads():
    assert len(head_regions(Boxes.empty(), Boxes.empty(), HW)) == 0
    assert len(head_regions(Boxes.empty(), Boxes.of([[0, 0, 5, 5]]), HW)) == 0


def test_person_without_face_gets_head_box():
    persons = Boxes.of([STANDING], [0.7], Label.PERSON)
    heads = head_regions(persons, Boxes.empty(), HW)
    assert len(heads) == 1 and heads.label[0] == Label.HEAD and heads.score[0] == pytest.approx(0.7)
    x1, y1, x2, y2 = heads.xyxy[0]
    assert (x1 + x2) / 2 == pytest.approx(650)  # centred on the person
    assert y1 <= 100 and y2 - y1 == pytest.approx(HEAD_HEIGHT_FRAC * 300)
    assert x2 - x1 >= 0.6 * 100
    # an adult head (about 1/7.5 of height, 0.8 as wide) at the top centre is inside
    hh = 300 / 7.5
    assert x1 <= 650 - 0.4 * hh and x2 >= 650 + 0.4 * hh and y2 >= 100 + hh


def test_face_in_upper_part_suppresses_head_box():
    persons = Boxes.of([STANDING], label=Label.PERSON)
    face = Boxes.of([[635, 110, 665, 150]], label=Label.FACE)
    assert len(head_regions(persons, face, HW)) == 0


@pytest.mark.parametrize(
    "face",
    [
        [635, 300, 665, 340],  # centre in the lower part (a face on a T-shirt, another person)
        [710, 110, 740, 150],  # horizontally outside
    ],
)
def test_faces_elsewhere_do_not_count(face):
    persons = Boxes.of([STANDING], label=Label.PERSON)
    assert len(head_regions(persons, Boxes.of([face], label=Label.FACE), HW)) == 1


def test_person_cut_off_at_frame_bottom_uses_width():
    persons = Boxes.of([[400, 500, 700, 720]], label=Label.PERSON)  # 300 x 220, upper body
    heads = head_regions(persons, Boxes.empty(), HW)
    x1, y1, x2, y2 = heads.xyxy[0]
    assert y2 - y1 > HEAD_HEIGHT_FRAC * 220 * 2  # much taller than the height rule
    assert x2 - x1 >= 0.6 * 300


def test_head_box_clipped_to_frame():
    persons = Boxes.of([[-40, -20, 60, 300], [1250, 0, 1290, 100]], label=Label.PERSON)
    heads = head_regions(persons, Boxes.empty(), HW)
    assert len(heads) == 2
    assert (heads.xyxy[:, [0, 2]] >= 0).all() and (heads.xyxy[:, [0, 2]] <= 1280).all()
    assert (heads.xyxy[:, [1, 3]] >= 0).all() and (heads.xyxy[:, [1, 3]] <= 720).all()


def test_only_persons_without_faces_and_finite_boxes():
    persons = Boxes.of([STANDING, [100, 100, 200, 400], [np.nan, 0, 10, 10]], [0.5, 0.6, 0.7], Label.PERSON)
    face = Boxes.of([[640, 120, 660, 140]], label=Label.FACE)
    heads = head_regions(persons, face, HW)
    assert heads.score.tolist() == pytest.approx([0.6])
    assert heads.xyxy.dtype == np.float32 and heads.label.dtype == np.int16


def test_a_tiny_spurious_face_does_not_suppress_the_head_box() -> None:
    # issue 12 fault suite: a 15 px "face" (score 0.07) on a person's hair suppressed the
    # head box of a person whose real 50 px face no detector found: the face leaked
    from operators.head import head_regions
    from operators.types import Boxes, Label

    persons = Boxes.of([[510, 0, 640, 272]], [0.8], Label.PERSON)
    tiny = Boxes.of([[623, 19, 638, 64]], [0.07], Label.FACE)
    real = Boxes.of([[560, 10, 620, 80]], [0.9], Label.FACE)
    assert len(head_regions(persons, tiny, (272, 640))) == 1
    assert len(head_regions(persons, real, (272, 640))) == 0


def test_face_on_a_close_up_cut_off_at_the_bottom_counts_as_its_own():
    # the demo's in-car clip (176x144): driver 150 x 130, cut at the bottom and the right;
    # his face (found at 0.93) is centred below the upper 40 % of the box but inside the head
    # box the width implies: it is his face, no head box
    hw = (144, 176)
    driver = Boxes.of([[27, 12, 176, 143]], [0.89], Label.PERSON)
    face = Boxes.of([[65, 35, 113, 97]], [0.93], Label.FACE)
    assert len(head_regions(driver, face, hw)) == 0
    assert len(head_regions(driver, Boxes.empty(), hw)) == 1  # without it, still masked


def test_head_fallback_gates_top_cut_short_and_unsure_persons():
    persons = Boxes.of([STANDING, [100, 0, 200, 300], [300, 300, 320, 340], [900, 100, 1000, 400]],
                       [0.8, 0.8, 0.8, 0.2], Label.PERSON)
    assert len(head_regions(persons, Boxes.empty(), HW)) == 4  # defaults: every person
    cut = head_regions(persons, Boxes.empty(), HW, top_cut=False)
    assert len(cut) == 3 and 150.0 not in ((cut.xyxy[:, 0] + cut.xyxy[:, 2]) / 2).tolist()
    short = head_regions(persons, Boxes.empty(), HW, min_person_px=48)
    assert len(short) == 3 and not ((short.xyxy[:, 0] < 320) & (short.xyxy[:, 2] > 300)).any()
    assert len(head_regions(persons, Boxes.empty(), HW, min_score=0.35)) == 3
    # a person cut at the bottom counts as tall as its width implies
    upper_body = Boxes.of([[400, 690, 460, 720]], [0.8], Label.PERSON)  # 60 x 30
    assert len(head_regions(upper_body, Boxes.empty(), HW, min_person_px=96)) == 1


def test_face_counts_for_a_person_whose_box_ends_just_short_of_the_bottom():
    # the in-car clip again, a frame where YOLOX's box ends at 141.6 of 144 px: not "cut off"
    # by the 2 px rule, but within 2 % of the frame: his face in the cut-off head box is his
    hw = (144, 176)
    driver = Boxes.of([[17.0, 16.0, 176.0, 141.6]], [0.86], Label.PERSON)
    face = Boxes.of([[54, 37, 101, 100]], [0.94], Label.FACE)
    assert len(head_regions(driver, face, hw)) == 0
    # far from the bottom, the same face below the upper 40 % is not counted
    standing = Boxes.of([[17.0, 16.0, 176.0, 141.6]], [0.86], Label.PERSON)
    assert len(head_regions(standing, face, (400, 176))) == 1


def test_a_person_box_holding_faces_of_others_gets_no_head_box_with_group_faces():
    # where the crowds' area goes (docs/quality.md): YOLOX's box over a group, faces found
    # on it below its top centre (not in the head zone, so none counts as the box's own face)
    group = Boxes.of([[100, 100, 400, 400]], [0.6], Label.PERSON)
    two = Boxes.of([[130, 230, 160, 270], [330, 240, 360, 280]], [0.9, 0.4], Label.FACE)
    outside = Boxes.of([[500, 230, 530, 270], [600, 240, 630, 280]], [0.9, 0.9], Label.FACE)
    assert len(head_regions(group, two, HW)) == 1                       # off: the head box as before
    assert len(head_regions(group, two, HW, group_faces=2)) == 0
    assert len(head_regions(group, two, HW, group_faces=3)) == 1
    assert len(head_regions(group, two.select(np.array([True, False])), HW, group_faces=2)) == 1  # one face
    assert len(head_regions(group, outside, HW, group_faces=2)) == 1    # faces of people beside it
    # the defaults the redactor passes: a lone person without a face keeps the head box
    from operators.head import GROUP_FACES
    from operators.redactor import RedactionConfig
    assert RedactionConfig().head_group_faces == GROUP_FACES == 2
    lone = Boxes.of([STANDING], [0.7], Label.PERSON)
    assert len(head_regions(lone, outside, HW, group_faces=GROUP_FACES)) == 1


def test_the_redactor_drops_the_head_box_of_a_group_by_default():
    from operators.redactor import RedactionConfig, Redactor

    raw = Boxes.concat([Boxes.of([[100, 100, 400, 400]], [0.6], Label.PERSON),
                        Boxes.of([[130, 230, 160, 270], [330, 240, 360, 280]], [0.9, 0.4], Label.FACE)])
    planned = Redactor(RedactionConfig(classes=("face",)), detectors={}).plan_from([raw], [], HW)[0]
    assert not (planned.label == Label.HEAD).any()
    before = Redactor(RedactionConfig(classes=("face",), head_group_faces=None), detectors={}).plan_from([raw], [], HW)[0]
    assert int((before.label == Label.HEAD).sum()) == 1
    with pytest.raises(Exception, match="head_group_faces"):
        RedactionConfig(head_group_faces=0).validate()


# faces_wider_hard 35_Basketball_664 as a moving-camera clip (operators/evalvideo.py), frame 0:
# YOLOX's box of a lone player whose own face no detector finds, and the CenterFace boxes
# (scores 0.05-0.10, the union keeps them from 0.05) whose centres it holds: duplicates on
# his shirt and on spectators behind him
PLAYER = [634.0, 279.0, 750.0, 532.0]
PLAYER_HW = (576, 1024)
WEAK_ON_PLAYER = Boxes.of([[648, 296, 664, 312], [642, 331, 658, 353], [688, 359, 702, 377], [648, 284, 664, 300],
                           [693, 353, 709, 371], [654, 301, 670, 318], [642, 320, 658, 340], [654, 289, 669, 306],
                           [643, 301, 658, 318], [648, 308, 663, 326], [700, 359, 714, 376]],
                          [0.10, 0.09, 0.08, 0.07, 0.06, 0.06, 0.06, 0.06, 0.05, 0.05, 0.05], Label.FACE)


def test_weak_face_boxes_alone_do_not_make_a_person_box_a_group():
    from operators.head import GROUP_CONFIDENT_SCORE, GROUP_FACES
    from operators.redactor import RedactionConfig

    player = Boxes.of([PLAYER], [0.72], Label.PERSON)
    # 11 face boxes held, none of them the player's own (too small for his head box)
    assert len(head_regions(player, WEAK_ON_PLAYER, PLAYER_HW)) == 1
    assert len(head_regions(player, WEAK_ON_PLAYER, PLAYER_HW, group_faces=GROUP_FACES)) == 1
    # one confident face among them: the detectors are working on this box, a group
    one_sure = Boxes(WEAK_ON_PLAYER.xyxy, np.where(np.arange(len(WEAK_ON_PLAYER)) == 3, np.float32(GROUP_CONFIDENT_SCORE),
                                                      WEAK_ON_PLAYER.score).astype(np.float32), WEAK_ON_PLAYER.label)
    assert len(head_regions(player, one_sure, PLAYER_HW, group_faces=GROUP_FACES)) == 0
    # the line is the redactor's own line between weak and trusted face boxes
    assert GROUP_CONFIDENT_SCORE == RedactionConfig().face_large_min_score


def test_in_video_the_head_box_of_a_player_among_weak_faces_covers_the_frames_between():
    # detected frames 0 and 8 (--detect-every 8): the head boxes of both are what masks his
    # face on frames 1-7 (no detector finds it on any frame); the group rule took them off
    from operators.redactor import RedactionConfig, Redactor

    raw_0 = Boxes.concat([Boxes.of([PLAYER], [0.72], Label.PERSON), WEAK_ON_PLAYER])
    shifted = Boxes(raw_0.xyxy + np.float32([8, 2, 8, 2]), raw_0.score, raw_0.label)
    raw: list[Boxes | None] = [raw_0, *([None] * 7), shifted]
    red = Redactor(RedactionConfig(classes=("face",), detect_every=8), detectors={})
    planned = red.plan_from(raw, [], PLAYER_HW)
    face_between = (slice(300, 330), slice(678, 706))  # rows, cols: the top centre of his box
    for i in range(9):
        assert (planned[i].label == Label.HEAD).any(), i
        assert red.coverage(PLAYER_HW, planned[i])[face_between].all(), i


def test_the_redactor_head_fallback_defaults_chosen_on_the_session_9_curve():
    """Session 9 (docs/quality.md "Session 9: the per-class curve"): the redactor draws the head
    box for persons scored >= 0.5 (0.2 before) and pads it by 0.05 of its size (0.1 before); the
    old values stay settable."""
    import math
    from dataclasses import replace

    from operators.redactor import RedactionConfig, Redactor

    cfg = RedactionConfig(classes=("face",))
    assert (cfg.head_min_score, cfg.head_padding) == (0.5, 0.05)
    red, old = Redactor(cfg, detectors={}), Redactor(replace(cfg, head_min_score=0.2, head_padding=0.1), detectors={})
    unsure = Boxes.of([STANDING], [0.35], Label.PERSON)
    assert not (red.plan_from([unsure], [], HW)[0].label == Label.HEAD).any()
    assert int((old.plan_from([unsure], [], HW)[0].label == Label.HEAD).sum()) == 1
    sure = Boxes.of([STANDING], [0.6], Label.PERSON)
    for r, pad in ((red, 0.05), (old, 0.1)):
        planned = r.plan_from([sure], [], HW)[0]
        (x1, _, x2, _), = planned.xyxy[planned.label == Label.HEAD]
        cols = np.flatnonzero(r.coverage(HW, planned).any(axis=0))
        w = float(x2 - x1)
        assert (int(cols[0]), int(cols[-1]) + 1) == (math.floor(x1 - pad * w), math.ceil(x2 + pad * w)), pad
