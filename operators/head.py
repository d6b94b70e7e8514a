"""Fail-closed head fallback: a person with no detected face still gets the head masked.

Face detectors miss back-of-head, profile, small and blurred faces; person detectors are
far more robust. For each person box with no face box in its upper part we emit a
``Label.HEAD`` box over where the head must be.

Proportions (initial values from human-figure ratios, to be re-measured on COCO
val2017 keypoints: nose/eyes/ears vs person boxes):

* A standing adult's head is about 1/7.5 of body height (0.13 h) and the person box's
  top is usually the top of the head. ``HEAD_HEIGHT_FRAC = 0.28`` covers twice that, so
  it also covers sitting people (head about 0.2-0.25 h), bent poses and boxes whose top
  is a raised hand.
* Head width is about 0.8 x head height, and standing boxes are 0.3-0.5 h wide, so the
  head is 0.2-0.35 of the box width. ``HEAD_WIDTH_FRAC = 0.6`` (and at least
  ``HEAD_MIN_ASPECT`` x the head height) leaves room for an off-centre head when an arm
  or a bag widens the box on one side.
* A person cut off at the bottom of the frame is upper body only: the box height says
  little about the head, so head size also comes from the box width (shoulders are
  about 2-2.5 head widths): at least ``TRUNCATED_HEAD_HEIGHT_FROM_WIDTH = 0.6`` of the
  box width high (the larger of the two estimates).
"""

from __future__ import annotations

import numpy as np

from .types import Boxes, Label

FACE_ZONE_FRAC = 0.4
"""A face whose centre lies in the person's upper 40% or in the predicted head box (and
inside the head box widened by ``FACE_OWN_SLACK``) counts as this person's face. The head
box matters for a person cut off at the bottom (a close-up, a car's driver): the head then
fills more than the upper 40 % of the visible box, and a face found on it once did not
count, so the head fallback masked three quarters of a 176x144 in-car clip around a face
the detector had found at 0.93."""
FACE_OWN_SLACK = 0.1
"""In a crowd a neighbour's face often lies inside another person's box; a face only
suppresses this person's head box when its centre is within the predicted head box
widened by this fraction of the head width on each side."""
EDGE_TOUCH_PX = 2.0
"""A person box within this many pixels of the left/right frame edge is cut off there:
its centre says little about where the head is, so the head box reaches to that edge."""
HEAD_HEIGHT_FRAC = 0.28
"""Head box height as a fraction of the person box height (whole person visible)."""
HEAD_WIDTH_FRAC = 0.6
"""Head box width as a fraction of the person box width."""
HEAD_MIN_ASPECT = 0.9
"""Head box width is at least this times the head box height."""
HEAD_TOP_SLACK_FRAC = 0.1
"""The head box starts this fraction of its height above the person box top (hair,
detector boxes that start at the forehead)."""
TRUNCATED_HEAD_HEIGHT_FROM_WIDTH = 0.6
"""Head height as a fraction of the person box width when the person is cut off at the
frame bottom: shoulders 2-2.5 head widths, a head 1.2-1.3 times as tall as wide, so 0.5-0.65.
Was 0.75; 0.6 was chosen on a sweep over whole sets (docs/quality.md "Face masks that follow
faces"): faces_wider_hard -0.2 points for no leak, every other set unchanged (0.5: one face
more, 0.4: two)."""
BOTTOM_TOUCH_PX = 2.0
"""A person box whose bottom is within this many pixels of the frame bottom is cut off."""
BOTTOM_NEAR_FRAC = 0.02
"""A person box ending within this fraction of the frame height above the bottom may be cut
off: YOLOX's box of a person cut by the frame ends a few pixels short of the edge at low
resolution (141.6 of 144 px on the demo's in-car clip, where the 2 px rule read the driver as
whole and did not count his detected face as his). For such a person a face also counts as
theirs inside the head box the cut-off rule would give. (Sizing their head box by that rule
too: faces_wider_hard 82 -> 79 leaks for +0.7 points of area, coco_val2017 +0.5: not done.)"""
TOP_TOUCH_PX = 2.0
"""A person box whose top is within this many pixels of the frame top is cut off there."""
GROUP_FACES = 2
"""Default of ``group_faces`` (:func:`head_regions`; ``RedactionConfig.head_group_faces``): a
person box holding the centres of this many face boxes gets no head box. In a crowd YOLOX-nano
returns boxes over groups and over people packed behind one another; the face detectors find
faces on them, and the head the fallback predicts (the top centre of the box) is not any one
person's head but a patch between the faces already masked: on faces_wider_hard such head
boxes were 1.9 of the head fallback's 2.4 points of frame area. A person box that shows two
detected faces is one the face detectors are working on; a person whose own face was missed
there is among people whose faces were found, which is what the face masks and the temporal
fill cover. Chosen on the even-indexed faces_wider_hard images (docs/quality.md "Where the
crowds' area goes"): 2, 3 and 4 faces cost the same 1-2 faces there, 2 frees the most area."""
GROUP_CONFIDENT_SCORE = 0.15
"""A person box is a group (``group_faces``) only if at least one of the face boxes it holds
scores this much: the line below which the redactor calls a face box weak
(``RedactionConfig.face_large_min_score``). The CenterFace+YuNet union keeps CenterFace boxes
from 0.05, and such weak boxes are masked, but they are no evidence that the detectors are
working on a box: they sit in clusters on a crowd's backdrop and on a player's shirt. Counted
alone, they took the head box off a lone player on faces_wider_hard's ``35_Basketball_664``
whose own face no detector finds on any frame (2 to 11 boxes scored 0.05-0.10 inside his
box), and in video the head boxes of the detected frames are what covers his face on the
frames between: 0 -> 21 leaked face-frames at every 8th frame detected (8 clips, 11 -> 24 at
every 4th). With one confident face required: the video as before the group rule (11 and 0),
stills 88 -> 86/5097 leaked (>= 20 px 26 -> 25) at 19.8 -> 20.0 % masked (21.2 % with no
group rule): docs/quality.md "Where the crowds' area goes"."""
FACE_MIN_WIDTH_OF_HEAD = 0.25
"""A face box narrower than this fraction of the head box is not this person's face: a
low-threshold detector (the CenterFace+YuNet union keeps CenterFace boxes from 0.05) puts
tiny spurious boxes on hair and collars, and one of them once suppressed the head box of a
person whose real face nobody detected (found by the fault suite: bikes.mp4 frame 43)."""


def head_regions(persons: Boxes, faces: Boxes, frame_hw: tuple[int, int], *,
                 min_person_px: float = 0.0, top_cut: bool = True, min_score: float = 0.0,
                 group_faces: int | None = None) -> Boxes:
    """Head boxes for persons without a face box in their upper part whose head is
    plausibly visible.

    Args:
        persons: person boxes (labels are not checked), pixel xyxy.
        faces: face boxes on the same frame, pixel xyxy.
        frame_hw: ``(H, W)`` of the frame; results are clipped to it.
        min_person_px: persons whose box is less tall than this (px) get no head box; a
            person cut off at the frame bottom counts as tall as the head size its width
            implies (``TRUNCATED_HEAD_HEIGHT_FROM_WIDTH``) needs.
        top_cut: also emit head boxes for persons whose box top touches the frame top
            (within ``TOP_TOUCH_PX``); ``False``: their head is above the frame.
        min_score: persons scored below this get no head box.
        group_faces: persons whose box holds the centres of at least this many face boxes,
            one of them scored at least :data:`GROUP_CONFIDENT_SCORE`, get no head box (a
            group or a person among others whose faces the detectors find:
            :data:`GROUP_FACES`); ``None``: any number.

    Returns:
        ``Label.HEAD`` boxes with the person's score, at most one per person, in person
        order. Persons with non-finite coordinates are skipped. Inputs are not mutated.
    """
    if not len(persons):
        return Boxes.empty()
    h_img, w_img = float(frame_hw[0]), float(frame_hw[1])
    p = persons.xyxy.astype(np.float64)
    finite = np.isfinite(p).all(axis=1)
    x1, y1 = np.minimum(p[:, 0], p[:, 2]), np.minimum(p[:, 1], p[:, 3])
    x2, y2 = np.maximum(p[:, 0], p[:, 2]), np.maximum(p[:, 1], p[:, 3])
    pw, ph = x2 - x1, y2 - y1

    truncated = y2 >= h_img - BOTTOM_TOUCH_PX
    head_h = np.where(truncated,
                      np.maximum(HEAD_HEIGHT_FRAC * ph, TRUNCATED_HEAD_HEIGHT_FROM_WIDTH * pw),
                      HEAD_HEIGHT_FRAC * ph)
    head_w = np.maximum(HEAD_WIDTH_FRAC * pw, HEAD_MIN_ASPECT * head_h)
    cx = (x1 + x2) / 2.0
    top = y1 - HEAD_TOP_SLACK_FRAC * head_h
    hx1, hx2 = cx - head_w / 2.0, cx + head_w / 2.0
    # Partly out of frame at a side: the visible box is off-centre on the body, the head
    # may be anywhere up to the edge (profile, leaning, walking in or out of view).
    hx1 = np.where(x1 <= EDGE_TOUCH_PX, np.minimum(hx1, 0.0), hx1)
    hx2 = np.where(x2 >= w_img - EDGE_TOUCH_PX, np.maximum(hx2, w_img), hx2)

    has_face = np.zeros(len(persons), bool)
    in_group = np.zeros(len(persons), bool)
    if len(faces):
        f = faces.xyxy.astype(np.float64)
        fcx, fcy = (f[:, 0] + f[:, 2]) / 2.0, (f[:, 1] + f[:, 3]) / 2.0
        slack = FACE_OWN_SLACK * head_w
        fw = np.abs(f[:, 2] - f[:, 0])
        near_bottom = y2 >= h_img - max(BOTTOM_TOUCH_PX, BOTTOM_NEAR_FRAC * h_img)
        cut_head_h = np.maximum(HEAD_HEIGHT_FRAC * ph, TRUNCATED_HEAD_HEIGHT_FROM_WIDTH * pw)
        zone_bottom = np.maximum(y1 + FACE_ZONE_FRAC * ph, top + np.where(near_bottom, cut_head_h, head_h))
        inside = ((fcx[None, :] >= np.maximum(x1, hx1 - slack)[:, None])
                  & (fcx[None, :] <= np.minimum(x2, hx2 + slack)[:, None])
                  & (fcy[None, :] >= y1[:, None])
                  & (fcy[None, :] <= zone_bottom[:, None])
                  & (fw[None, :] >= FACE_MIN_WIDTH_OF_HEAD * head_w[:, None]))
        has_face = np.asarray(inside.any(axis=1), bool)
        if group_faces is not None:
            held = ((fcx[None, :] >= x1[:, None]) & (fcx[None, :] <= x2[:, None])
                    & (fcy[None, :] >= y1[:, None]) & (fcy[None, :] <= y2[:, None]))
            confident = faces.score >= GROUP_CONFIDENT_SCORE
            in_group = np.asarray((held.sum(axis=1) >= int(group_faces)) & (held & confident[None, :]).any(axis=1),
                                  bool)

    xyxy = np.stack([hx1, top, hx2, top + head_h], axis=1)
    xyxy = np.clip(xyxy, 0.0, [w_img, h_img, w_img, h_img])

    keep = finite & ~has_face & ~in_group
    if min_person_px > 0:
        keep &= (head_h / HEAD_HEIGHT_FRAC) >= min_person_px
    if not top_cut:
        keep &= y1 > TOP_TOUCH_PX
    if min_score > 0:
        keep &= persons.score >= min_score
    return Boxes(xyxy[keep].astype(np.float32), persons.score[keep].astype(np.float32),
                 np.full((int(keep.sum()),), Label.HEAD, np.int16))
