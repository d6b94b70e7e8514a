"""Redact everyone except one data subject (a PIPA subject access request).

``redact_keep_subject(frames, box, frame)`` detects faces, plates and persons on every
frame, follows the subject with :class:`operators.tracker.SubjectTracker`, and masks
every box except the subject's own person box and the face/head inside its head region.
Fail closed: where the track is lost, ambiguous or coasting, or a face could belong to
someone else too, it is masked; a frame whose detection failed is masked whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .redactor import RedactionConfig, Redactor
from .tracker import XYXY, SubjectTracker, TrackResult, containment, iou
from .types import Boxes, Frames, Label

SUBJECT_CLASSES = ("face", "plate", "person")
PLAN_CHUNK = 32
"""Frames per detection / temporal-fill call (bounds memory; boxes are carried inside a chunk)."""
CONFIDENT_FACE_SCORE = 0.3
"""A face box scored at least this is a detected face (the face detectors' ordinary operating
points are 0.3-0.5). The redactor also masks candidates down to 0.05 to fail closed; only such
candidates (and head fallbacks) may give back the subject's own detected face pixels
(:func:`carve_subject_face`), never a detected face."""


def head_region(person: XYXY) -> XYXY:
    """Where a person's face can be: the top of the box, a little wider and higher. The top
    40 % of a standing person (height >= 2x width); down to 75 % for an upper body cut by
    the frame (a close-up, height ~ width), where the face sits lower in the box."""
    w, h = person[2] - person[0], person[3] - person[1]
    frac = float(np.clip(0.4 + (2.0 - h / max(float(w), 1.0)) * 0.35, 0.4, 0.75))
    return np.array([person[0] - 0.1 * w, person[1] - 0.1 * h, person[2] + 0.1 * w, person[1] + frac * h],
                    np.float32)


def subject_head(track_box: XYXY, kind: str) -> XYXY:
    """Where the tracked subject's face is: the face box itself, or for a person the top
    fifth of its box, the middle 70 % of its width."""
    if kind != "person":
        return track_box
    w, h = track_box[2] - track_box[0], track_box[3] - track_box[1]
    frac = float(np.clip(0.2 + (2.0 - h / max(float(w), 1.0)) * 0.3, 0.2, 0.5))  # as head_region
    return np.array([track_box[0] + 0.15 * w, track_box[1], track_box[2] - 0.15 * w, track_box[1] + frac * h],
                    np.float32)


def _center_in(b: XYXY, region: XYXY) -> bool:
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    return bool(region[0] <= cx <= region[2] and region[1] <= cy <= region[3])


def subject_exempt(boxes: Boxes, subject: XYXY, kind: str, others: np.ndarray) -> np.ndarray:
    """Which of a frame's mask boxes belong to the subject (bool ``(K,)``).

    Args:
        boxes: the boxes the redactor would mask on this frame.
        subject: the subject's tracked box (``kind``: person or face).
        others: ``(M, 4)`` other persons' boxes on this frame (detections not the subject).
    """
    keep = np.zeros(len(boxes), bool)
    for i in range(len(boxes)):
        b, lb = boxes.xyxy[i], int(boxes.label[i])
        if kind == "person":
            if lb == Label.PERSON:
                # the subject's own box, or a copy carried from a neighbouring frame (grown for
                # motion: it still holds the subject and fits no one else better)
                ov = float(iou(subject, b[None])[0])
                fits_other = len(others) and float(iou(b, others).max()) >= ov
                keep[i] = ov >= 0.5 or (ov >= 0.35 and float(containment(subject, b[None])[0]) >= 0.85
                                        and not fits_other)
            elif lb in (Label.FACE, Label.HEAD):
                sw = float(subject[2] - subject[0])
                # a face is narrower than its person; a head fallback box is about as wide
                fits = (b[2] - b[0]) <= (0.9 if lb == Label.FACE else 1.2) * sw
                # a face in another person's head region too stays masked unless it is
                # clearly nearer the subject's head (half the distance, relative to width)
                cx = (b[0] + b[2]) / 2
                ds = abs(cx - (subject[0] + subject[2]) / 2) / max(sw, 1.0)
                theirs = any(_center_in(b, head_region(o))
                             and ds >= 0.5 * abs(cx - (o[0] + o[2]) / 2) / max(float(o[2] - o[0]), 1.0)
                             for o in others)
                keep[i] = _center_in(b, head_region(subject)) and fits and not theirs
        else:  # close-up: the subject is a face
            if lb in (Label.FACE, Label.HEAD):
                keep[i] = float(iou(subject, b[None])[0]) >= 0.3
            elif lb == Label.PERSON:
                holders = [o for o in [b] if _center_in(subject, head_region(o))]
                keep[i] = bool(holders) and not any(_center_in(subject, head_region(o)) for o in others)
    return keep


def _intersects(a: XYXY, b: XYXY) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def carve_subject_face(boxes: Boxes, exempt: np.ndarray, faces_here: Boxes, others: np.ndarray,
                       confident: float = CONFIDENT_FACE_SCORE) -> tuple[np.ndarray, XYXY | None]:
    """Which other mask boxes give back the pixels of the subject's own detected face.

    Side by side, the low-score face candidates and carried boxes around two heads overlap
    both faces, so someone else's candidate can hide the subject's face. The subject's face
    box ``F`` is carved out of a box ``L`` (only ``F``'s pixels come back; everything else of
    ``L`` stays masked) when all of these hold, else nothing is carved (fail closed):

    * ``F`` is the one exempt face box detected on this very frame (not carried) with a
      score >= ``confident``; two such boxes are ambiguous;
    * no other detected face (score >= ``confident``, this frame) touches ``F``: a neighbour's
      detected face is never carved, and the neighbour's face is elsewhere;
    * every other person whose head region reaches ``F`` has a detected face elsewhere
      (a person whose face was not found could have it under ``F``);
    * ``L`` is not the subject's, touches ``F`` and is a face candidate below ``confident``,
      or a head fallback whose person (centre in its head region) is on this frame and has
      a detected face elsewhere. A detected face (own or carried) is never carved.

    Args:
        boxes: the frame's mask boxes; ``exempt``: :func:`subject_exempt` of them.
        faces_here: the face detections of this frame (before temporal fill).
        others: ``(M, 4)`` the other persons detected on this frame.

    Returns:
        ``(carve, F)``: bool ``(K,)`` over ``boxes`` and the face box to carve (``None``: none).
    """
    none = np.zeros(len(boxes), bool), None
    if not len(boxes) or not len(faces_here):
        return none
    here = faces_here.xyxy[faces_here.score >= confident]
    if not len(here):
        return none
    own = [k for k in range(len(boxes)) if exempt[k] and int(boxes.label[k]) == Label.FACE
           and float(boxes.score[k]) >= confident and float(iou(boxes.xyxy[k], here).max()) >= 0.9]
    if len(own) != 1:
        return none
    f = boxes.xyxy[own[0]]
    theirs = here[iou(f, here) < 0.9]
    if any(_intersects(g, f) for g in theirs):
        return none

    def face_elsewhere(o: XYXY) -> bool:
        return any(_center_in(g, head_region(o)) for g in theirs)

    for o in others:
        if _intersects(head_region(o), f) and not face_elsewhere(o):
            return none
    carve = np.zeros(len(boxes), bool)
    for k in range(len(boxes)):
        b, lb = boxes.xyxy[k], int(boxes.label[k])
        if exempt[k] or not _intersects(b, f):
            continue
        if lb == Label.FACE:
            carve[k] = float(boxes.score[k]) < confident
        elif lb == Label.HEAD:
            owners = [o for o in others if _center_in(b, head_region(o))]
            carve[k] = bool(owners) and all(face_elsewhere(o) for o in owners)
    return carve, (f if carve.any() else None)


def _strict(boxes: Boxes) -> np.ndarray:
    """Boxes the subject's restored head never shows through: other faces and heads, zones,
    whole-frame masks (not person bodies, nor plates/text: a plate cannot sit on a face)."""
    return ~np.isin(boxes.label, [int(Label.PERSON), int(Label.PLATE), int(Label.TEXT), int(Label.LOOSE_TEXT)])


def _blocked(redactor: Redactor, hw: tuple[int, ...], boxes: Boxes, carve: np.ndarray | None,
             face: XYXY | None) -> np.ndarray:
    """Pixels the subject's restored face and head do not show through."""
    size = (int(hw[0]), int(hw[1]))
    strict = _strict(boxes)
    if carve is None or face is None or not carve.any():
        return np.asarray(redactor.coverage(size, boxes.select(strict)), bool)
    blocked = np.asarray(redactor.coverage(size, boxes.select(strict & ~carve)), bool)
    carved = np.asarray(redactor.coverage(size, boxes.select(strict & carve)), bool) & ~_box_mask(size, [face])
    return np.asarray(blocked | carved, bool)


@dataclass
class SubjectResult:
    frames: Frames
    track: TrackResult
    masks_per_class: dict[str, int]
    fail_closed_frames: list[int]
    subject_visible: list[bool]
    boxes: list[Boxes] = field(default_factory=list)
    restored: list[list[XYXY]] = field(default_factory=list)
    carved: list[tuple[np.ndarray, XYXY] | None] = field(default_factory=list)
    """Per frame: (which of :attr:`boxes` gave back the subject's face, that face box), or None."""

    def coverage(self, redactor: Redactor, i: int) -> np.ndarray:
        """``(H, W)`` bool: exactly the pixels of frame ``i`` that are masked in :attr:`frames`."""
        hw = self.frames.shape[1:3]
        cov = redactor.coverage(hw, self.boxes[i])
        if self.restored and self.restored[i]:
            c = self.carved[i] if self.carved else None
            carve, face = (c[0], c[1]) if c is not None else (None, None)
            cov &= ~(_box_mask(hw, self.restored[i]) & ~_blocked(redactor, hw, self.boxes[i], carve, face))
        return cov

    def report(self) -> dict[str, Any]:
        n = len(self.subject_visible)
        masked = [i for i, v in enumerate(self.subject_visible) if not v]
        return {
            "frames": n,
            # tracked and its head region less than half masked in the output
            "subject_visible_frames": int(sum(self.subject_visible)),
            "subject_masked_frames": len(masked),
            "subject_masked_ranges": _ranges(masked),
            "track_kind": self.track.kind,
            "track_start_frame": self.track.start,
            "track_lost_from_frame": self.track.lost_forward_from,
            "track_lost_before_frame": self.track.lost_backward_before,
            "track_loss_reasons": {str(k): v for k, v in self.track.reasons.items()},
            "masks_per_class": self.masks_per_class,
            "fail_closed_frames": self.fail_closed_frames,
            "subject_face_carved_frames": sum(1 for c in self.carved if c is not None),
        }


def _box_mask(hw: tuple[int, ...], boxes: Sequence[XYXY]) -> np.ndarray:
    m = np.zeros(hw[:2], bool)
    for x1, y1, x2, y2 in boxes:
        m[max(0, int(y1)):max(0, int(np.ceil(y2))), max(0, int(x1)):max(0, int(np.ceil(x2)))] = True
    return m


def _ranges(idx: Sequence[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in idx:
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def subject_redactor(style: str = "mosaic", **kw: Any) -> Redactor:
    """Detectors on every frame (tracking needs them), faces + plates + persons."""
    return Redactor(RedactionConfig(classes=SUBJECT_CLASSES, style=style, detect_every=1, **kw))


def redact_keep_subject(frames: Frames, box_xyxy: Sequence[float], start: int, *, redactor: Redactor | None = None,
                        style: str = "mosaic", tracker: SubjectTracker | None = None,
                        detections: tuple[list[Boxes | None], list[int]] | None = None,
                        progress: Callable[[float], None] | None = None) -> SubjectResult:
    """Mask every face, plate and person in ``frames`` except the subject's.

    Args:
        frames: ``(N, H, W, 3)`` uint8 BGR, not mutated.
        box_xyxy: the subject's box on frame ``start`` (pixels).
        redactor: must mask faces, plates and persons (default :func:`subject_redactor`).
        detections: ``(raw, failed)`` from ``redactor.detect`` on these frames, if already run.
        progress: called with the fraction done (detection ~70 %, tracking, masking), growing.

    Raises:
        InputError: the box matches no single person or face on its frame.
    """
    red = redactor or subject_redactor(style)
    n = len(frames)
    hw = frames.shape[1:3]
    raw: list[Boxes | None] = []
    failed: list[int] = []
    if detections is not None:  # computed earlier (an evaluation re-running the tracker)
        raw, failed = list(detections[0]), list(detections[1])
    def report(f: float) -> None:
        if progress is not None:
            progress(f)

    for s in range(0, n if detections is None else 0, PLAN_CHUNK):
        part, f, _e, _ms = red.detect(frames[s:s + PLAN_CHUNK])
        raw.extend(part)
        failed.extend(s + i for i in f)
        report(0.7 * min(n, s + PLAN_CHUNK) / max(n, 1))
    track = (tracker or SubjectTracker()).follow(frames, raw, start, np.asarray(box_xyxy, np.float32))
    report(0.75)
    plans: list[Boxes] = []
    for s in range(0, n, PLAN_CHUNK):
        plans.extend(red.plan_from(raw[s:s + PLAN_CHUNK], [i - s for i in failed if s <= i < s + PLAN_CHUNK], hw))
    out = np.empty_like(frames)
    masked_boxes: list[Boxes] = []
    restored: list[list[XYXY]] = []
    carved: list[tuple[np.ndarray, XYXY] | None] = []
    visible: list[bool] = []
    fail_set = set(failed)
    for i in range(n):
        boxes = plans[i]
        sb = track.boxes[i]
        carve: np.ndarray | None = None
        face: XYXY | None = None
        if sb is not None and i not in fail_set and not (boxes.label == Label.FRAME).any():
            det = raw[i]
            others = np.zeros((0, 4), np.float32)
            if det is not None:
                persons = det.xyxy[det.label == Label.PERSON]
                if track.kind == "person":
                    others = persons[iou(sb, persons) < 0.5] if len(persons) else persons
                else:
                    others = persons[containment(sb, persons) < 0.5] if len(persons) else persons
            exempt = subject_exempt(boxes, sb, track.kind, others)
            own = [*boxes.select(exempt & np.isin(boxes.label, [int(Label.FACE)])).xyxy, subject_head(sb, track.kind)]
            if det is not None:
                carve, face = carve_subject_face(boxes, exempt, det.select(det.label == Label.FACE), others)
                carve = carve[~exempt]
            boxes = boxes.select(~exempt)
            visible.append(True)
        else:
            own = []
            visible.append(False)
        masked_boxes.append(boxes)
        out[i] = red.apply(frames[i:i + 1], [boxes])[0]
        if own:
            # The subject's head is not hidden by another person's body mask (carried from
            # neighbouring frames for motion) nor by a "plate" on it (the text detector firing
            # on clothes): a plate cannot sit on a face. Other faces and heads, zones and
            # whole-frame (fail-closed) masks still win over it.
            # Someone else's face candidate or carried head fallback gives back only the pixels of
            # the subject's own detected face, and only under carve_subject_face's conditions.
            blocked = _blocked(red, hw, boxes, carve, face)
            show = _box_mask(hw, own) & ~blocked
            out[i][show] = frames[i][show]
            head = _box_mask(hw, [own[-1]])
            if head.any() and float((red.coverage(hw, boxes)[head] & ~show[head]).mean()) >= 0.5:
                visible[-1] = False  # tracked, but its head stayed masked (someone else's face/head there)
        restored.append(own)
        carved.append((carve, face) if carve is not None and face is not None else None)
        if i % PLAN_CHUNK == PLAN_CHUNK - 1 or i == n - 1:
            report(0.75 + 0.25 * (i + 1) / n)
    return SubjectResult(out, track, red.count(masked_boxes), sorted(fail_set), visible, masked_boxes, restored,
                         carved)
