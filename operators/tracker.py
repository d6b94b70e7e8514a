"""Follow one data subject through a clip, forward and backward, failing closed.

The subject is given as a box on one frame. It is associated with a detected person (or,
for a close-up, a face) on that frame, then followed frame by frame in both directions:

* motion: the box predicted by constant velocity from the last two tracked frames;
* overlap: candidates of the same kind with IoU >= ``min_iou`` against the prediction;
* appearance, when two candidates overlap about equally: a hue/saturation histogram of
  the box against the subject's template (cheap; updated slowly while tracked).

Duplicates first: the face detectors run as a union (CenterFace and YuNet,
:class:`operators.detectors.faces.FaceUnionDetector`), so one face often comes back twice,
in two framings, and a box drawn around it overlaps both: two candidates, refused as
ambiguous. :func:`merge_duplicate_faces` folds such pairs into one candidate for
association and tracking only (masking still uses every box).

Where no candidate is found for more than ``max_coast`` frames, or candidates stay
ambiguous after the appearance check, the track is **lost** from that frame on (in that
direction): a caller masks the subject from there, never guessing who it is. Frames
coasted over (a detector miss of up to ``max_coast`` frames) have no subject box either:
they are masked too, and the track may continue after them only with a confident match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from .types import Boxes, Frames, InputError, Label

XYXY = npt.NDArray[np.float32]


def iou(a: XYXY, b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """IoU of one box ``(4,)`` against ``(K, 4)`` boxes -> ``(K,)``."""
    b = np.asarray(b, np.float32).reshape(-1, 4)
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    area_a = max(float((a[2] - a[0]) * (a[3] - a[1])), 1e-6)
    area_b = np.clip((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6, None)
    out: npt.NDArray[np.float32] = (inter / (area_a + area_b - inter)).astype(np.float32)
    return out


DUPLICATE_FACE_IOU = 0.3
"""Two face boxes overlapping this much (IoU) are one face. It is the NMS IoU of each face
detector of the union (CenterFace's and YuNet's ``nms_iou``, OpenCV's default): each
detector alone keeps no two boxes this close, so the union is held to the rule its
members' outputs already obey. It is also the tracker's ``min_iou`` and the overlap at
which :func:`operators.subject.subject_exempt` takes a face box as the subject's: merging
at it adds no face to those a subject's face already exempts. Measured on
faces_wider_hard (240 images), CenterFace-YuNet pairs at IoU >= 0.3 were the same
labelled face 5285 times and two labelled faces 47 times (adjacent tiny faces): what the
guard of :func:`merge_duplicate_faces` is for."""


def merge_duplicate_faces(dets: Boxes, min_iou: float = DUPLICATE_FACE_IOU, confident: float = 0.3) -> Boxes:
    """``dets`` with duplicate face boxes folded: for association and tracking only.

    Cross-detector NMS with a guard: faces by descending score, each kept box absorbs
    (drops) the lower-scored faces overlapping it by ``min_iou`` or more: the same face
    from the other detector, or a low-score candidate on it. The kept box is a real
    detection (coordinates are not averaged), so what a track box exempts downstream
    (:func:`operators.subject.subject_exempt`: faces at IoU >= 0.3 to it) is what it always
    was. Guard: a box that would absorb two faces scored >= ``confident`` that are not
    duplicates of each other (IoU below ``min_iou``) spans two people's faces: it absorbs
    nothing, and a request overlapping them all stays ambiguous (refused). Other labels
    are untouched.

    Args:
        dets: one frame's detections; not mutated.
        confident: a detected face, not a candidate (``operators.subject.CONFIDENT_FACE_SCORE``).

    Returns:
        A :class:`Boxes` (the same object when nothing merges).
    """
    idx = np.flatnonzero(dets.label == Label.FACE)
    if len(idx) < 2:
        return dets
    xy, score = dets.xyxy[idx], dets.score[idx]
    ov = np.stack([iou(b, xy) for b in xy])
    np.fill_diagonal(ov, 0.0)
    order = sorted(range(len(idx)), key=lambda k: (-float(score[k]), k))
    rank = {k: r for r, k in enumerate(order)}
    alive = np.ones(len(idx), bool)
    for k in order:
        if not alive[k]:
            continue
        absorbed = [j for j in range(len(idx)) if alive[j] and rank[j] > rank[k] and ov[k, j] >= min_iou]
        sure = [j for j in absorbed if float(score[j]) >= confident]
        if any(ov[a, b] < min_iou for n, a in enumerate(sure) for b in sure[n + 1:]):
            continue  # k spans two detected faces: merge nothing here
        alive[absorbed] = False
    if alive.all():
        return dets
    keep = np.ones(len(dets), bool)
    keep[idx[~alive]] = False
    return dets.select(keep)


def containment(inner: XYXY, outer: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Share of ``inner``'s area inside each of ``outer`` ``(K, 4)``."""
    outer = np.asarray(outer, np.float32).reshape(-1, 4)
    iw = np.clip(np.minimum(inner[2], outer[:, 2]) - np.maximum(inner[0], outer[:, 0]), 0, None)
    ih = np.clip(np.minimum(inner[3], outer[:, 3]) - np.maximum(inner[1], outer[:, 1]), 0, None)
    area = max(float((inner[2] - inner[0]) * (inner[3] - inner[1])), 1e-6)
    out: npt.NDArray[np.float32] = (iw * ih / area).astype(np.float32)
    return out


def colour_hist(frame: npt.NDArray[np.uint8], box: XYXY) -> npt.NDArray[np.float32]:
    """Normalised 16x16 hue/saturation histogram of a box (clipped to the frame)."""
    h, w = frame.shape[:2]
    # the middle of the box: clothes, not the background around a person
    bw, bh = box[2] - box[0], box[3] - box[1]
    x1, y1 = int(max(0, box[0] + 0.2 * bw)), int(max(0, box[1] + 0.1 * bh))
    x2, y2 = int(min(w, box[2] - 0.2 * bw)), int(min(h, box[3] - 0.1 * bh))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return np.zeros((16, 16), np.float32)
    hsv = cv2.cvtColor(np.ascontiguousarray(frame[y1:y2, x1:x2]), cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 16], [0, 180, 0, 256]).astype(np.float32)
    s = float(hist.sum())
    return hist / s if s > 0 else hist


def hist_distance(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


@dataclass
class TrackResult:
    """Per frame, the subject's box (``(4,)`` xyxy of ``kind``) or ``None`` where it is not
    known (coasted, lost, or before/after the track)."""

    boxes: list[XYXY | None]
    kind: str  # person | face
    start: int
    lost_forward_from: int | None = None
    lost_backward_before: int | None = None
    reasons: dict[int, str] = field(default_factory=dict)

    @property
    def tracked_frames(self) -> int:
        return sum(b is not None for b in self.boxes)


class SubjectTracker:
    """See the module doc. Pure: frames and detections in, a :class:`TrackResult` out."""

    def __init__(self, min_iou: float = 0.3, ambiguity_ratio: float = 0.7, hist_margin: float = 0.08,
                 max_coast: int = 3, template_rate: float = 0.1) -> None:
        self.min_iou = min_iou
        self.ambiguity_ratio = ambiguity_ratio
        self.hist_margin = hist_margin
        self.max_coast = max_coast
        self.template_rate = template_rate

    def associate(self, dets: Boxes, box: XYXY) -> tuple[str, XYXY]:
        """The detection the given subject box means: a person (best IoU, or the one that
        contains a face-sized box), else a face. ``InputError`` when nothing or several match."""
        persons = dets.xyxy[dets.label == Label.PERSON]
        faces = dets.xyxy[dets.label == Label.FACE]
        if len(persons):
            ov = iou(box, persons)
            if ov.max() >= 0.4:
                best = int(ov.argmax())
                second = float(np.sort(ov)[-2]) if len(ov) > 1 else 0.0
                if second < self.ambiguity_ratio * float(ov[best]):
                    return "person", persons[best]
            inside = containment(box, persons) >= 0.7
            if inside.sum() == 1:
                return "person", persons[int(np.flatnonzero(inside)[0])]
        if len(faces):
            ov = iou(box, faces)
            if ov.max() >= self.min_iou and (ov >= self.min_iou).sum() == 1:
                return "face", faces[int(ov.argmax())]
        raise InputError("the subject box matches no single detected person or face on its frame: draw it "
                         "around the whole person (or their face) at a moment they are clearly visible")

    def follow(self, frames: Frames, detections: list[Boxes | None], start: int, box: tuple[float, ...] | XYXY
               ) -> TrackResult:
        """Track from ``start`` (``detections[start]`` must have run) in both directions.

        Args:
            frames: ``(N, H, W, 3)`` uint8 BGR (appearance only; not mutated).
            detections: per frame, the raw detections (``None`` where detection did not
                run: those frames are coasted over).
            start: frame index of the subject box.
            box: ``x1, y1, x2, y2`` pixels.
        """
        n = len(detections)
        if not 0 <= start < n:
            raise InputError(f"subject frame {start} is outside the clip (0..{n - 1})")
        # one candidate per face, not one per face detector (see merge_duplicate_faces)
        detections = [None if d is None else merge_duplicate_faces(d) for d in detections]
        d0 = detections[start]
        if d0 is None:
            raise InputError(f"no detections on the subject's frame {start}")
        kind, b0 = self.associate(d0, np.asarray(box, np.float32))
        label = Label.PERSON if kind == "person" else Label.FACE
        res = TrackResult([None] * n, kind, start)
        res.boxes[start] = b0.astype(np.float32)
        template = colour_hist(frames[start], b0)
        for step in (1, -1):
            self._run(frames, detections, start, step, b0, template.copy(), label, res)
        return res

    def _run(self, frames: Frames, detections: list[Boxes | None], start: int, step: int, b0: XYXY,
             template: npt.NDArray[np.float32], label: Label, res: TrackResult) -> None:
        n = len(detections)
        prev, prev2 = b0.astype(np.float32), None
        coast = 0
        t = start + step
        while 0 <= t < n:
            vel = (prev - prev2) if prev2 is not None else np.zeros(4, np.float32)
            pred = prev + vel * (coast + 1)
            d = detections[t]
            chosen: XYXY | None = None
            reason = ""
            if d is not None:
                cands = d.xyxy[d.label == label]
                ov = iou(pred, cands) if len(cands) else np.zeros(0, np.float32)
                ok = np.flatnonzero(ov >= self.min_iou)
                if len(ok) == 1:
                    chosen = cands[ok[0]]
                elif len(ok) > 1:
                    order = ok[np.argsort(-ov[ok])]
                    a, b = order[0], order[1]
                    if ov[b] < self.ambiguity_ratio * ov[a]:
                        chosen = cands[a]
                    else:  # two candidates overlap about equally: ask appearance
                        da = hist_distance(template, colour_hist(frames[t], cands[a]))
                        db = hist_distance(template, colour_hist(frames[t], cands[b]))
                        if abs(da - db) >= self.hist_margin:
                            chosen = cands[a] if da < db else cands[b]
                        else:
                            reason = "ambiguous"
                else:
                    reason = "no match"
            if chosen is not None and coast and float(iou(pred, chosen[None])[0]) < 0.5:
                chosen, reason = None, "uncertain re-acquisition"  # after a gap, only a confident match
            if reason == "ambiguous":
                self._lose(res, t, step, reason)
                return
            if chosen is None:
                coast += 1
                if coast > self.max_coast:
                    self._lose(res, t - step * (coast - 1), step, reason or "no detection")
                    return
                t += step
                continue
            coast = 0
            res.boxes[t] = chosen.astype(np.float32)
            template = (1 - self.template_rate) * template + self.template_rate * colour_hist(frames[t], chosen)
            prev2, prev = prev, chosen.astype(np.float32)
            t += step

    @staticmethod
    def _lose(res: TrackResult, t: int, step: int, reason: str) -> None:
        n = len(res.boxes)
        if step > 0:
            res.lost_forward_from = t
            for i in range(t, n):
                res.boxes[i] = None
        else:
            res.lost_backward_before = t + 1
            for i in range(0, t + 1):
                res.boxes[i] = None
        res.reasons[t] = reason
