"""The redaction stage as plain composition: detect -> head fallback -> temporal fill -> mask.

``Redactor.redact(frames)`` is what the CLI, the evaluation and the Ray detector actors
all call. It is fail closed: a detector that raises masks the affected frames whole
(label ``FRAME``) and reports them; it never returns an unmasked frame it could not check.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .anonymize import MaskSpec, anonymize_together, make_anonymizer
from .head import head_regions
from .plate_region import near_vehicles, on_vehicles, plate_regions
from .quantize import DEFAULT_PRECISION, PRECISIONS
from .temporal import detection_schedule, fill_gaps
from .types import CLASS_NAMES, Boxes, ConfigError, Detector, Frames, Label
from .zones import ZoneSet

logger = logging.getLogger(__name__)

STYLES = ("mosaic", "blur", "fill")
FACE_MODELS = ("centerface", "yunet", "centerface+yunet")
MAX_MOSAIC_BLOCKS = 12.0
"""A policy's strength never asks for more mosaic blocks than this across a box."""
MIN_BLUR_KERNEL = 0.25
"""... nor a blur kernel smaller than this fraction of the box."""

# Which labels each user-facing class masks. The face class includes the head-region
# fallback (a person with no face inside still gets the head masked: fail closed).
PLATE_MAX_HEIGHT_RATIO = 0.8
"""Plate boxes taller than this times their width are dropped (when no text class is wanted)
unless they sit on a vehicle's lower part: the squarest common plate is the EU motorcycle
plate, 1.27:1, but a plate seen at an angle, a two-line plate or the glyphs of a short one
("16M") give squarer boxes. Such boxes are masked yet never stand for the vehicle's plate in
the fallback (a tail light scores as text too). Checked on every set (cached): dropping every
square box, plates_traffic 21 of 398 (1.0: 20; 0.6: 32), coco_val2017 area 13.4 -> 11.3 %,
faces_wider_hard 82 -> 84 leaks (faces a tall text box covered by accident), area 28.1 ->
26.7 %; keeping those on vehicles, plates_traffic 18 (area 10.4 -> 10.7 %), plates_eu 0/108
(13.4 -> 13.7 %), coco_val2017 and faces_wider_hard unchanged."""

TEXT_MODELS = ("ppocr_det_v5", "ppocr_det")
"""Registry names the text detector may use (``RedactionConfig.text_model``)."""

MASK_SOURCES: dict[Label, str] = {Label.FACE: "face", Label.HEAD: "head", Label.PLATE: "plate",
                                  Label.PLATE_REGION: "plate_region", Label.TEXT: "text", Label.PERSON: "person",
                                  Label.LOOSE_TEXT: "loose_text"}
"""Masked box label -> the name its pixels go under in :meth:`Redactor.coverage_by_source`."""

CLASS_LABELS: dict[str, tuple[Label, ...]] = {
    "face": (Label.FACE, Label.HEAD),
    "plate": (Label.PLATE, Label.PLATE_REGION, Label.LOOSE_TEXT),
    "person": (Label.PERSON,),
    "text": (Label.TEXT,),
}


@dataclass(frozen=True)
class RedactionConfig:
    """Everything that decides what gets masked and how.

    Attributes:
        classes: subset of ``face, plate, person, text``.
        style: ``mosaic`` | ``blur`` | ``fill``.
        detect_every: run detectors on every N-th frame of a chunk (plus the last one);
            boxes are carried to the frames between (never used to remove detections).
        temporal_window: detections also mask this many frames before and after.
        face_threshold / person_threshold / text_threshold: detector score thresholds.
        face_max_side / person_input / text_max_side: detector input resolutions.
        providers: onnxruntime execution providers (``None`` = auto: CUDA/TensorRT if
            present, else CPU).
        model_dir: directory to look for model files in (else registry defaults).
        face_padding / plate_padding / person_padding: box padding, fraction of box size.
        face_shape: ``ellipse`` or ``rect`` for face masks (an ellipse always covers the
            whole detection box: :data:`operators.anonymize.ELLIPSE_MIN_PADDING`).
        plate_region_shrink: a plate fallback region on which plate boxes were found that do
            not stand for the vehicle's plate (square ones) shrinks to a band around them
            (``near`` in :func:`operators.plate_region.plate_regions`).
        plate_max_aspect: plate boxes longer than this times their height are not plates
            (dropped when no policy wants the text class) unless they sit on a vehicle's
            lower part; the longest common plate is the EU one, 4.7:1. ``None``: kept.
        plate_vehicle_reach: plate-class text whose centre lies farther than this many of its
            own heights from every vehicle box is *loose text* (``Label.LOOSE_TEXT``): scene
            text (banners, signs, shirts) or a plate on a vehicle the detector missed. It
            is still masked (a plate policy cannot tell the two apart), but tighter
            (``loose_text_padding``), and not at all where it is worn (``loose_text_worn``).
            ``None``: every plate-class box is masked as a plate (round 3 and before); so it
            is without ``plate_crops``, where no vehicles are searched. With
            ``loose_text_dark_padding``, in a dark frame (the lit-plate pass's gate,
            :func:`operators.detectors.litplate.is_dark`) such text keeps the plate's padding
            (YOLOX misses most vehicles there; worn text is still not masked; docs/quality.md
            "Plates round 3").
            Chosen on a sweep over whole sets (docs/quality.md "Over-masking round 3"): from
            0 to 50 faces_wider_hard's area moves 0.2 points; below 25 plates_traffic loses a
            plate whose own car was missed (the padding covered it), at 25 none.
        loose_text_padding: mask padding of loose text (``plate_padding`` for plates): the
            glyphs are masked, not the margin a plate's frame and border need.
        loose_text_max_height: loose text taller than this share of the frame height is not
            masked (``None``: all is). A plate with no vehicle found near it is a plate
            whose car YOLOX missed, and a missed car is rarely one that fills the frame: the
            tallest loose-text box on a labelled plate in the shared sets is 0.32 of the frame
            (plates_eu ``eu4.jpg``, a 505 px plate in a 711x450 close-up; plates_traffic's
            reach 0.18). Taller text with no vehicle near is a banner or a sign. Opt-in, not a
            default: at 0.4 it drops one box of faces_wider_hard (a banner; 20.04 -> 19.94 %
            masked, no leak moved, the held-out odd half unchanged), which is one image's
            worth of evidence against a real risk (a close-up plate whose car YOLOX misses
            would go unmasked) (docs/quality.md "Where the crowds' area goes").
        loose_text_worn: ``False``: loose text whose centre lies inside a person box is
            worn or held (a shirt, a bib, a placard) and is not masked; ``True``: masked
            like other loose text. Only with the plate class (the text class masks all text).
        face_large_px / face_large_min_score: a face box at least ``face_large_px`` wide in
            the face detector's input pixels (the frame scaled to ``face_max_side``) is masked
            only when scored at least ``face_large_min_score`` (``None``: every box the
            thresholds keep). CenterFace's boxes scored 0.05-0.2 are kept for the small faces
            of crowds; large ones are rarely faces (faces_wider_hard: 54 of 473 such boxes at
            >= 4 % of the frame side lie on a labelled face), since a face that large scores
            high. A person whose face box is dropped gets the head fallback. 64 px and 0.15
            were chosen on a sweep over whole sets (docs/quality.md "Face masks that follow
            faces"): alone, coco_val2017's masked area 9.4 -> 7.7 %, faces_wider_hard -0.4
            points and one WIDER face (>= 20 px) lost, which the union's YuNet threshold
            (0.35, :data:`operators.detectors.faces.YUNET_THRESHOLD`) wins back with 8 more.
        head_min_person_px / head_top_cut / head_min_score / head_group_faces: when the head
            fallback fires (:func:`operators.head.head_regions`): persons less tall than this
            (px), cut off at the frame top (``False``: no head box for them), scored below
            this, or whose box holds the centres of at least ``head_group_faces`` face boxes,
            one of them scored at least :data:`operators.head.GROUP_CONFIDENT_SCORE` (a group or
            a crowd the face detectors are working on, not a lone person with weak duplicate
            boxes on the shirt: :data:`operators.head.GROUP_FACES`; ``None``: any number) get no
            head box. ``head_min_score`` 0.5 and ``head_padding`` 0.05 (0.2 and 0.1 before session
            9) were chosen on the per-class curve (``veilstream eval --sweep --sweep-family curve``,
            docs/quality.md "Session 9: the per-class curve"): the least masked area on the
            even-indexed faces_wider_hard images whose leaks (all and >= 20 px) did not rise, with
            no other set leaking more, and no more leaked face-frames in the paired video check at
            every 8th frame (``python -m operators.evalsweep video``); no smaller face mask
            qualified. Padding 0 (the curve's first pick) leaked one face-frame of 4069 in video
            (the ``35_Basketball_664`` clip).
        loose_text_dark_padding: in a dark frame, loose text keeps the plate's padding (added in
            "Plates round 3" for a lit plate on a vehicle YOLOX missed); off since the dark
            frames' full-frame pass at native resolution (round 3b) finds those plates: with it
            off no plate moves on any set, and faces_wider_hard's dark crowd photos lose 0.4
            points of padded scene text (docs/quality.md "Where the crowds' area goes").
        yunet_threshold / yunet_max_side / yunet_min_side: YuNet's score threshold and
            input size bounds when ``face_model`` is ``centerface+yunet`` (YuNet is the
            small-face pass: it runs at a higher resolution than CenterFace).
        text_min_side / text_tile: the text detector upscales frames whose longer side is
            below ``text_min_side`` and cuts frames larger than ``text_tile`` into tiles.
        text_max_upscale: ... but by at most this factor (``None``: up to ``text_min_side``
            whatever the frame). 2.5: the 960 px of ``text_min_side`` were set for ~400 px
            photos (plates_traffic ``kg_*``), whose 4-8 px plate characters become 10-19 px
            at 2.4x, where the DB net finds them; a plate whose characters are under 4 px in
            the camera's own pixels is not legible, and interpolation past that adds pixels,
            not detail (every vehicle YOLOX finds is also searched in a crop zoomed up to 6x).
            Before, a 176x144 camera frame ran the full-frame pass at 960x800 (x3 the pixels
            of a 720p frame's 640x384 pass); now at 448x384 (its 440x360 padded to the
            stride). 640x272 (1.5x) and every eval image of 384 px and more are unchanged.
        text_full_min_side: frames whose longer side is below this get no full-frame text pass
            when the plate search runs on vehicle crops (``plate`` class with ``plate_crops``):
            only their vehicles' crops are searched (``None``: every frame gets both passes).
            A policy choice for tiny cameras (see docs/performance.md, "Plate carry and tiny
            frames"); the ``text`` class without plate crops always gets the full-frame pass.
        small_frame_side: frames whose longer side is at most this are detected at the size the
            camera sends them, so that detection costs what the camera's pixels cost: YOLOX and
            the full-frame text pass run at native size padded to the stride
            (``person_max_upscale`` and ``text_max_upscale`` apply to larger frames only);
            CenterFace and YuNet never upscale; the vehicle-crop pass zooms crops as on every
            frame. ``None``: the upscaling rules apply to every frame. 320: QVGA (320x240,
            320x180) and QCIF (176x144) snapshot cameras; before, a 320x180 frame ran YOLOX at
            640x384 and the text pass at 800x480 (0.16 CPU-s per frame on the load source, what
            a 720p frame costs; now 0.04). No eval image is this small (the smallest is 326
            px), so ``veilstream eval`` cannot see it: its quality cost on eval images
            downscaled to 320 px is measured by ``load_tests/small_frames.py`` (docs/performance.md,
            "Small cameras: detection at the camera's own size"), and so is skipping the
            full-frame pass there too (``text_full_min_side`` 321: a further x0.5 of detection
            for more leaked plates).
        small_frame_centerface_precision: ``bf16``: on frames of at most ``small_frame_side``
            px, the union's CenterFace infers in bfloat16 (a second CenterFace session, OpenVINO
            on a CPU with native bf16; elsewhere, and when ``precision`` is bf16 already, a
            no-op); YuNet and larger frames as ``precision`` says. Session 12 (issue 19,
            ``load_tests/small_faces.py``, docs/quality.md "Small cameras: which face detectors
            earn their CPU"): on every eval set downscaled to 320 px, no set leaks more faces of
            >= 8 px than fp32 (faces_wider_hard 31 -> 29 of 1883, 586 -> 576 of 5097 in all; the
            others the same), for x0.64-0.66 of CenterFace's CPU on a 320x180 frame (x0.88-0.94 of
            that frame's detection). Each detector alone leaks faces of >= 8 px the other finds, so
            both stay. ``None`` / ``fp32``: as ``precision`` says. No eval image is that small,
            so ``veilstream eval`` cannot see it (its cache runs CenterFace as ``precision``
            says on every image).
        text_full_every: the full-frame text pass (with its lit-plate search) runs on every
            N-th detected frame of a chunk, on its first detected frame and on its last; the
            detected frames between take the text boxes of the latest full pass before them,
            masked where they were (fail closed), and the vehicle-crop plate search still runs
            on every detected frame. The first frame: nothing before it in the call to carry
            from. The last: every skipped frame then lies between two full passes of its own
            chunk (temporal fill brings the later one's boxes back to it), and the next chunk
            starts from boxes no older than its own first frame. Counted per chunk, also when
            the detector actor batches several cameras' chunks into one call. Carried boxes
            follow the camera motion where it is estimated (``TextDetector.full_carry_motion``).
            2 (1 = every detected frame, before): on the moving-camera video eval (every 4th
            and 8th frame, 8 clips a set) the same leaks as 1 on every set and masked area
            -2.9 to +0.7 points, for x0.70-0.91 of detection per detected frame
            (docs/performance.md "Full-frame text pass cadence").
        plate_crops: also search plates in upscaled crops of the lower part of each vehicle
            YOLOX finds (vehicle score >= ``vehicle_threshold``).
        text_crop_budget: a frame's zoomed vehicle crops cover at most this multiple of its
            own pixels (each crop zoomed down by one factor, never below its own size; every
            vehicle still searched); ``None``: no budget, each crop zoomed up to 6x to fit
            640x352. A measured opt-in: docs/performance.md "Vehicle-crop pixel budget".
        plate_lit_pass: in dark frames, also search bright plate-shaped patches the
            full-frame text pass did not cover, at native resolution
            (:mod:`operators.detectors.litplate`; docs/quality.md "Plates round 3"): the
            plates >= 40 px that still leaked were lit plates in night and red-lit frames,
            mostly on vehicles YOLOX does not return, that the 640 px pass sees too small.
            With it, a frame darker than median grey 85 also gets the full-frame text pass at
            up to 1280 px instead of 640 (``litplate.NATIVE_SIDE`` / ``NATIVE_MEDIAN``; "round
            3b": the last 4 plates >= 40 px): x1.5-1.9 detection CPU on dusk and night frames,
            none on daylight ones. ``false`` turns both off.
        text_full_precision: ``bf16``: the text detector's full-frame pass infers in bfloat16
            (OpenVINO on a CPU with native bf16: AMX / AVX-512 BF16; elsewhere fp32), its
            vehicle-crop and lit-plate passes stay fp32 (bf16 for every pass, YOLOX included,
            leaked 7 more plates_traffic plates: docs/performance.md "bf16"). x2.2 less CPU for
            the pass that every detected frame pays (720p at 640x384: ~98 -> ~45 ms on this
            AMX Xeon). ``None`` / ``fp32``: as ``precision`` says (fp32 for PP-OCRv5). A dark
            frame's native-resolution pass stays fp32 (``text_dark_precision``). ``bf16`` is the
            default since session 9 (docs/performance.md "Session 9: detection per 720p
            frame"): with the dark pass in fp32, every leak of ``veilstream eval all`` and of the
            moving-camera video eval at every 8th frame is what fp32 leaks, masked area within
            0.05 / 0.2 points; a no-op where it cannot run (fp32 there).
        text_dark_precision: ``bf16``: a dark frame's full-frame pass at up to native
            resolution (``plate_lit_pass``, round 3b) infers in bfloat16 as well (where
            ``text_full_precision`` bf16 is in effect): x0.43 of that pass's CPU, the largest
            cost of dark crowded footage, but one more faces_wider_hard face leaked (a face a
            text box covered by chance). ``None`` / ``fp32``: fp32 (the default).
        text_model: the text/plate detector's registry name: ``ppocr_det_v5`` (PP-OCRv5
            mobile) or ``ppocr_det`` (PP-OCRv4, the default before: measured against in
            README "Measured quality").
        plate_fallback: mask the lower part of every vehicle (score >=
            ``plate_fallback_threshold``, at least ``plate_fallback_min_px`` wide) on which
            no plate was found (:mod:`operators.plate_region`); needs ``plate_crops`` (the
            vehicles come from the same YOLOX pass). Measured (README "Measured quality"):
            plates_traffic 37 -> 22 leaks of 398 for +2.9 points of masked area there,
            +0.4 on coco_val2017.
        person_max_side: YOLOX's input side (persons for the head fallback and vehicles for
            the plate search come from the same inference).
        person_max_upscale: YOLOX's input is the frame scaled by at most this factor (and to
            ``person_max_side`` at most), padded to the stride (32) on each side (``None``:
            the square letterbox of ``person_max_side`` whatever the frame, as before: a
            176x144 frame upscaled 3.6x to 640x640). 2.0: 176x144 runs at 352x288 (x0.25 the
            pixels), 320x180 at 640x384 (was 640x640), 1280x720 at 640x384; every eval image
            keeps the scale it had (the smallest, 326 px, was upscaled 1.96x), only the
            letterbox is no longer square. 1.0 (never upscaled) was measured first: the ~400 px
            web photos of plates_traffic ``kg_*`` then leaked 8 of 175 plates (7 before, 5 at
            2.0: YOLOX-nano finds their vehicles, whose crops are searched, less well at
            native size) and plates_eu's masked area grew 13.7 -> 14.6 %.
        strength: a policy's mask strength in (0, 1] (``None`` = each style's default):
            mosaic takes ``3 / strength`` blocks across a box (0.5 -> the default 6,
            1 -> 3), capped at 12 so a weak setting still leaves no readable face; blur
            takes ``strength`` as its kernel fraction, at least 0.25; fill ignores it.
        precision: ``int8`` (default) runs a model on CPU on an int8 copy derived from its
            fp32 weights where that copy holds quality (today PP-OCRv4, ``text_model:
            ppocr_det``; PP-OCRv5, the face and person detectors and GPU providers stay fp32:
            :mod:`operators.quantize`); ``fp32`` never quantizes.
    """

    classes: tuple[str, ...] = ("face", "plate")
    style: str = "mosaic"
    detect_every: int = 1
    temporal_window: int = 2
    face_threshold: float | None = None
    person_threshold: float | None = None
    text_threshold: float | None = None
    # Frames larger than these are downscaled for detection (CPU cost grows with pixels:
    # CenterFace is ~70 ms at 640x360, ~130 ms at 960x540, ~420 ms at 1280x720). At 640 a
    # 720p face must be ~20 px wide to be found as reliably as a 10 px face in a 640 px
    # photo: `make bench` measures exactly that on COCO upscaled 2x. GPU deployments set
    # face_max_side 1280. plates_eu leaks the same 1/108 with text at 640 as at 960.
    face_max_side: int | None = 640
    text_max_side: int | None = 640
    providers: tuple[str, ...] | None = None
    model_dir: str | None = None
    face_padding: float = 0.2
    head_padding: float = 0.05
    plate_padding: float = 0.25
    person_padding: float = 0.05
    face_shape: str = "ellipse"
    threads: int | None = None
    face_model: str = "centerface+yunet"
    strength: float | None = None
    # Added for hard footage (issue 8); every default below is a point on the measured
    # leak / masked-area curves of `veilstream eval --sweep` (README "Measured quality").
    yunet_threshold: float | None = None
    yunet_max_side: int | None = 1280
    yunet_min_side: int | None = None
    text_min_side: int | None = 960
    text_max_upscale: float | None = 2.5
    text_full_min_side: int | None = None
    text_full_every: int = 2
    small_frame_side: int | None = 320
    small_frame_centerface_precision: str | None = "bf16"
    text_tile: int | None = None
    plate_crops: bool = True
    text_crop_budget: float | None = None
    plate_lit_pass: bool = True
    vehicle_threshold: float | None = None
    person_max_side: int = 640
    person_max_upscale: float | None = 2.0
    precision: str = DEFAULT_PRECISION
    text_model: str = "ppocr_det_v5"
    text_full_precision: str | None = "bf16"
    text_dark_precision: str | None = None
    plate_fallback: bool = True
    plate_fallback_min_px: int = 40
    plate_fallback_threshold: float = 0.5
    # Privacy round 3: the head fallback fires only where the head is plausibly visible
    # (docs/quality.md "Mask geometry and the head fallback").
    head_shape: str = "rect"
    head_min_person_px: int = 0
    head_top_cut: bool = False
    head_min_score: float = 0.5
    head_group_faces: int | None = 2
    plate_region_shrink: bool = False
    plate_max_aspect: float | None = 5.0
    # Over-masking round 3 (docs/quality.md): text with no vehicle near it.
    plate_vehicle_reach: float | None = 25.0
    loose_text_padding: float = 0.0
    loose_text_worn: bool = False
    loose_text_dark_padding: bool = False
    loose_text_max_height: float | None = None
    # Face masks round 4 (docs/quality.md "Face masks that follow faces"): large weak face boxes.
    face_large_px: float | None = 64.0
    face_large_min_score: float = 0.15

    def mask_strength(self) -> float | None:
        """The style-specific ``MaskSpec.strength`` for :attr:`strength` (see above)."""
        if self.strength is None or self.style == "fill":
            return None
        if self.style == "mosaic":
            return min(MAX_MOSAIC_BLOCKS, max(1.0, 3.0 / self.strength))
        return max(MIN_BLUR_KERNEL, min(1.0, self.strength))

    def validate(self) -> RedactionConfig:
        problems: list[str] = []
        bad = [c for c in self.classes if c not in CLASS_NAMES]
        if bad:
            problems.append(f"classes: unknown {', '.join(map(repr, bad))}; expected some of {', '.join(CLASS_NAMES)}")
        if not self.classes:
            problems.append(f"classes: expected at least one of {', '.join(CLASS_NAMES)}")
        if self.style not in STYLES:
            problems.append(f"style: expected one of {', '.join(STYLES)}, got {self.style!r}")
        if not isinstance(self.detect_every, int) or self.detect_every < 1:
            problems.append(f"detect_every: expected an integer >= 1, got {self.detect_every!r}")
        if self.temporal_window < 0:
            problems.append(f"temporal_window: expected >= 0, got {self.temporal_window!r}")
        if self.face_model not in FACE_MODELS:
            problems.append(f"face_model: expected one of {', '.join(FACE_MODELS)}, got {self.face_model!r}")
        if self.face_shape not in ("ellipse", "rect"):
            problems.append(f"face_shape: expected ellipse or rect, got {self.face_shape!r}")
        if self.head_shape not in ("ellipse", "rect"):
            problems.append(f"head_shape: expected ellipse or rect, got {self.head_shape!r}")
        hp: Any = self.head_min_person_px
        if isinstance(hp, bool) or not isinstance(hp, int) or hp < 0:
            problems.append(f"head_min_person_px: expected an integer >= 0, got {hp!r}")
        if not isinstance(self.plate_region_shrink, bool):
            problems.append(f"plate_region_shrink: expected true or false, got {self.plate_region_shrink!r}")
        pa: Any = self.plate_max_aspect
        if pa is not None and (isinstance(pa, bool) or not isinstance(pa, (int, float)) or not pa >= 1.0):
            problems.append(f"plate_max_aspect: expected a number >= 1 (or None), got {pa!r}")
        vr: Any = self.plate_vehicle_reach
        if vr is not None and (isinstance(vr, bool) or not isinstance(vr, (int, float)) or not vr >= 0.0):
            problems.append(f"plate_vehicle_reach: expected a number >= 0 (or None), got {vr!r}")
        lp: Any = self.loose_text_padding
        if isinstance(lp, bool) or not isinstance(lp, (int, float)) or not 0.0 <= float(lp) <= 2.0:
            problems.append(f"loose_text_padding: expected a number in [0, 2], got {lp!r}")
        if not isinstance(self.loose_text_worn, bool):
            problems.append(f"loose_text_worn: expected true or false, got {self.loose_text_worn!r}")
        if not isinstance(self.loose_text_dark_padding, bool):
            problems.append(f"loose_text_dark_padding: expected true or false, got {self.loose_text_dark_padding!r}")
        mh: Any = self.loose_text_max_height
        if mh is not None and (isinstance(mh, bool) or not isinstance(mh, (int, float)) or not 0.0 < float(mh) <= 1.0):
            problems.append(f"loose_text_max_height: expected a number in (0, 1] (or None), got {mh!r}")
        hg: Any = self.head_group_faces
        if hg is not None and (isinstance(hg, bool) or not isinstance(hg, int) or hg < 1):
            problems.append(f"head_group_faces: expected an integer >= 1 (or None), got {hg!r}")
        if not isinstance(self.head_top_cut, bool):
            problems.append(f"head_top_cut: expected true or false, got {self.head_top_cut!r}")
        fl: Any = self.face_large_px
        if fl is not None and (isinstance(fl, bool) or not isinstance(fl, (int, float)) or not fl > 0):
            problems.append(f"face_large_px: expected a number > 0 (or None), got {fl!r}")
        fs: Any = self.face_large_min_score
        if isinstance(fs, bool) or not isinstance(fs, (int, float)) or not 0.0 <= float(fs) <= 1.0:
            problems.append(f"face_large_min_score: expected a number in [0, 1], got {fs!r}")
        hs: Any = self.head_min_score
        if isinstance(hs, bool) or not isinstance(hs, (int, float)) or not 0.0 <= float(hs) <= 1.0:
            problems.append(f"head_min_score: expected a number in [0, 1], got {hs!r}")
        if self.strength is not None and not (isinstance(self.strength, (int, float))
                                              and 0.0 < float(self.strength) <= 1.0):
            problems.append(f"strength: expected a number in (0, 1], got {self.strength!r}")
        for name in ("face_max_side", "text_max_side"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 64):
                # a negative side once made detection run on garbage-sized frames and leak faces
                problems.append(f"{name}: expected an integer >= 64 (or 0/None = native size), got {v!r}")
        v = self.text_full_min_side
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            problems.append(f"text_full_min_side: expected an integer >= 1 (or None), got {v!r}")
        v = self.text_full_every
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            problems.append(f"text_full_every: expected an integer >= 1 (1 = every detected frame), got {v!r}")
        v = self.small_frame_side
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            problems.append(f"small_frame_side: expected an integer >= 1 (or None), got {v!r}")
        if self.small_frame_centerface_precision not in (None, "fp32", "bf16"):
            problems.append("small_frame_centerface_precision: expected fp32 or bf16 (or None), got "
                            f"{self.small_frame_centerface_precision!r}")
        v = self.text_crop_budget
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
            problems.append(f"text_crop_budget: expected a number > 0 (or None = no budget), got {v!r}")
        for name in ("text_max_upscale", "person_max_upscale"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 1.0):
                problems.append(f"{name}: expected a number >= 1 (or None = no cap), got {v!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("text_full_precision", "text_dark_precision"):
            if getattr(self, name) not in (None, "fp32", "bf16"):
                problems.append(f"{name}: expected fp32 or bf16 (or None), got {getattr(self, name)!r}")
        if self.text_model not in TEXT_MODELS:
            problems.append(f"text_model: expected one of {', '.join(TEXT_MODELS)}, got {self.text_model!r}")
        v = self.plate_fallback_min_px
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            problems.append(f"plate_fallback_min_px: expected an integer >= 0, got {v!r}")
        v = self.plate_fallback_threshold
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            problems.append(f"plate_fallback_threshold: expected a number in [0, 1], got {v!r}")
        if problems:
            raise ConfigError("; ".join(problems))
        return self


@dataclass
class RedactionResult:
    """Output of one :meth:`Redactor.redact` call.

    Attributes:
        frames: new ``(N, H, W, 3)`` uint8 frames, masked.
        boxes: per frame, every box that was masked (after temporal fill).
        masks_per_class: class name -> number of masked boxes summed over frames.
        fail_closed_frames: indices of frames masked whole because detection failed.
        detect_ms: wall time spent in detectors.
    """

    frames: Frames
    boxes: list[Boxes]
    masks_per_class: dict[str, int]
    fail_closed_frames: list[int] = field(default_factory=list)
    detect_ms: float = 0.0
    errors: list[str] = field(default_factory=list)


DetectorFactory = Callable[..., Detector]


class Redactor:
    """Builds the detectors and maskers a :class:`RedactionConfig` asks for (once) and
    applies them to chunks of frames."""

    def __init__(self, config: RedactionConfig, zones: ZoneSet | None = None,
                 detectors: dict[str, Detector] | None = None, *, parallel: bool = False) -> None:
        """``parallel``: :meth:`run_detectors` runs the detectors that do not wait for each
        other at once, on two threads; the same boxes in the same order.
        For a process that owns the machine's cores (``veilstream redact``); off where several
        detector actors share a node's cores by their ``num_cpus``."""
        self.config = config.validate()
        self.zones = zones
        self.detectors = detectors if detectors is not None else build_detectors(config)
        self.parallel = parallel
        self._side: ThreadPoolExecutor | None = None  # run_detectors' second thread, made on first use
        cfg = self.config
        s = cfg.mask_strength()
        self._maskers = {
            Label.FACE: make_anonymizer(MaskSpec(style=cfg.style, shape=cfg.face_shape, padding=cfg.face_padding,
                                                 strength=s)),
            Label.HEAD: make_anonymizer(MaskSpec(style=cfg.style, shape=cfg.head_shape, padding=cfg.head_padding,
                                                 strength=s)),
            Label.PLATE: make_anonymizer(MaskSpec(style=cfg.style, shape="rect", padding=cfg.plate_padding,
                                                  strength=s)),
            Label.TEXT: make_anonymizer(MaskSpec(style=cfg.style, shape="rect", padding=cfg.plate_padding, strength=s)),
            Label.PLATE_REGION: make_anonymizer(MaskSpec(style=cfg.style, shape="rect", padding=0.0, strength=s)),
            Label.LOOSE_TEXT: make_anonymizer(MaskSpec(style=cfg.style, shape="rect", padding=cfg.loose_text_padding,
                                                       strength=s)),
            Label.PERSON: make_anonymizer(MaskSpec(style=cfg.style, shape="rect", padding=cfg.person_padding,
                                                   strength=s)),
        }
        # Whole-frame and zone masks always use an opaque style: a mosaic of a whole frame
        # still shows silhouettes, which is what fail closed must not leak.
        self._region_masker = make_anonymizer(MaskSpec(style="fill", shape="rect", padding=0.0))
        self.wanted_labels = {lb for c in cfg.classes for lb in CLASS_LABELS[c]}
        self._plates_only_text = Label.PLATE in self.wanted_labels and Label.TEXT not in self.wanted_labels
        self._plate_fallback = cfg.plate_fallback and cfg.plate_crops and Label.PLATE in self.wanted_labels
        # Loose text is text far from every vehicle: only where vehicles are searched at all
        # (without plate_crops YOLOX returns none, and every plate would read as loose).
        self._loose_text = cfg.plate_vehicle_reach is not None and cfg.plate_crops
        # Detections may come from detectors built for several policies at once (the lowest
        # threshold of any): keep only what this config's own thresholds accept.
        self._min_score: dict[int, float] = {}
        for labels, th in (((Label.FACE,), cfg.face_threshold), ((Label.PERSON,), cfg.person_threshold),
                           ((Label.PLATE, Label.TEXT), cfg.text_threshold)):
            if th is not None:
                self._min_score.update({int(lb): float(th) for lb in labels})
        # One text model finds plates and other text; it labels its boxes for the classes it
        # was built for, which may be another policy's: read them as the class wanted here.
        self._text_as: int | None = None
        if Label.PLATE in self.wanted_labels:
            self._text_as = int(Label.PLATE)
        elif Label.TEXT in self.wanted_labels:
            self._text_as = int(Label.TEXT)

    @property
    def model_ids(self) -> list[dict[str, str]]:
        """The models that produce the masks, stamped on every redacted chunk and its segment's
        manifest: id, version (sha256 of the graph), and the precision each really infers in
        (``precision``; the text detector also ``full_precision`` / ``dark_precision`` for its
        full-frame passes, bf16 by default since session 9), so an audit can tell which run
        produced a segment."""
        out = []
        for d in self.detectors.values():
            for part in (getattr(d, "components", None) or {"": d}).values():
                entry = {"id": part.name,
                         "version": str(getattr(part, "model_sha256", "") or getattr(part, "version", ""))}
                for attr in ("precision", "full_precision", "dark_precision"):
                    value = getattr(part, attr, None)
                    if isinstance(value, str) and value:
                        entry[attr] = value
                out.append(entry)
        return out

    def detect(self, frames: Frames) -> tuple[list[Boxes | None], list[int], list[str], float]:
        """Run the detectors on the scheduled frames of one chunk.

        Returns per-frame boxes (``None`` where detection did not run), the indices of
        frames whose detection failed, error strings, and detector milliseconds.
        """
        t0 = time.perf_counter()
        raw, failed, errors = self.detect_many([frames])[0]
        return raw, failed, errors, (time.perf_counter() - t0) * 1000.0

    def detect_many(self, chunks: Sequence[Frames]
                    ) -> list[tuple[list[Boxes | None], list[int], list[str]]]:
        """Detect on several chunks at once (e.g. of different cameras).

        The scheduled frames of all chunks that share a frame size go through each
        detector as one batch: that is what keeps a GPU busy. A detector that raises fails
        closed for exactly the frames it was given.
        """
        every = self.config.detect_every
        jobs: list[tuple[int, int]] = []  # (chunk index, frame index) of scheduled frames
        # scheduled frame -> the scheduled frame of its own chunk whose full-frame text pass it takes
        full_src: dict[tuple[int, int], tuple[int, int]] = {}
        for ci, frames in enumerate(chunks):
            _check_frames(frames)
            sched = [fi for fi, s in enumerate(detection_schedule(len(frames), every)) if s]
            jobs.extend((ci, fi) for fi in sched)
            for fi, p in zip(sched, text_full_sources(len(sched), self.config.text_full_every)):
                full_src[(ci, fi)] = (ci, sched[p])
        per_frame: dict[tuple[int, int], list[Boxes]] = {j: [] for j in jobs}
        failed: list[set[int]] = [set() for _ in chunks]
        errors: list[list[str]] = [[] for _ in chunks]
        groups: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        for ci, fi in jobs:
            groups.setdefault(tuple(chunks[ci].shape[1:]), []).append((ci, fi))
        for members in groups.values():
            batch = np.stack([chunks[ci][fi] for ci, fi in members])
            pos = {m: k for k, m in enumerate(members)}  # a chunk's frames share its shape: one group
            full_from = [pos[full_src[m]] for m in members]
            for key, found_or_exc in self.run_detectors(batch, full_from=full_from).items():
                if isinstance(found_or_exc, Exception):
                    logger.error("detector failed detector=%s frames=%d error=%s", key, len(members), found_or_exc)
                    for ci, fi in members:
                        failed[ci].add(fi)
                        msg = f"{key}: {found_or_exc}"
                        if msg not in errors[ci]:
                            errors[ci].append(msg)
                    continue
                for m, b in zip(members, found_or_exc):
                    per_frame[m].append(b)
        out = []
        for ci, frames in enumerate(chunks):
            raw: list[Boxes | None] = [None] * len(frames)
            for (cj, fi), parts in per_frame.items():
                if cj == ci:
                    raw[fi] = Boxes.concat(parts)
            out.append((raw, sorted(failed[ci]), errors[ci]))
        return out

    def run_detectors(self, batch: Frames, *, full_from: Sequence[int] | None = None
                      ) -> dict[str, list[Boxes] | Exception]:
        """Every detector on one batch of same-size frames: per detector key, one
        :class:`Boxes` per frame, or the exception it raised (the caller fails closed).

        Detectors with a ``detect_given(frames, priors)`` method (the vehicle-guided plate
        search) run second and get the boxes the others found (e.g. YOLOX's vehicles).

        ``full_from``: per frame of ``batch``, the index of the frame whose full-frame text
        pass it takes (``text_full_every``; :meth:`detect_many` counts it per chunk); ``None``:
        the batch is one chunk's detected frames, in order. A second-stage detector that does
        not declare ``full_cadence`` gets every frame (it runs its full pass everywhere).
        """
        if full_from is None:
            full_from = text_full_sources(len(batch), self.config.text_full_every)
        elif len(full_from) != len(batch):
            raise ValueError(f"full_from: {len(full_from)} entries for {len(batch)} frames")
        cadence = any(j != i for i, j in enumerate(full_from))
        results: dict[str, list[Boxes] | Exception] = {}
        first = [(k, d) for k, d in self.detectors.items() if not hasattr(d, "detect_given")]
        second = [(k, d) for k, d in self.detectors.items() if hasattr(d, "detect_given")]

        def run(stage: int, key: str, det: Detector, priors: list[Boxes]) -> list[Boxes] | Exception:
            try:
                if not stage:
                    found = det.detect(batch)
                elif cadence and getattr(det, "full_cadence", False):
                    found = det.detect_given(batch, priors, full_from=full_from)  # type: ignore[attr-defined]
                else:
                    found = det.detect_given(batch, priors)  # type: ignore[attr-defined]
                if len(found) != len(batch):
                    raise RuntimeError(f"returned {len(found)} results for {len(batch)} frames")
                return list(found)
            except Exception as exc:  # noqa: BLE001 - any detector failure fails closed
                return exc

        def priors_of(keys: Sequence[str]) -> list[Boxes]:
            done = [v for k in keys if not isinstance(v := results[k], Exception)]
            return [Boxes.concat([r[i] for r in done]) for i in range(len(batch))]

        side = self._side_detectors(first, second) if self.parallel else []
        if not side:
            for stage, dets in enumerate((first, second)):
                priors = priors_of(list(results)) if stage and dets else []
                for key, det in dets:
                    results[key] = run(stage, key, det, priors)
            return results
        # Two threads: the first-stage detectors no second-stage one reads (the faces) on the
        # side thread, the rest and then the second stage (YOLOX's vehicles -> the plate search)
        # on this one, with priors from the detectors that emit what it reads. Each detector
        # runs as it would alone (same sessions, same threads of its own): the same boxes, in
        # the same order.
        if self._side is None:
            self._side = ThreadPoolExecutor(1, thread_name_prefix="veil-detect")
        pending = self._side.submit(lambda: {k: run(0, k, d, []) for k, d in side})
        try:
            for key, det in first:
                if all(key != k for k, _ in side):
                    results[key] = run(0, key, det, [])
            priors = priors_of(list(results)) if second else []
            for key, det in second:
                results[key] = run(1, key, det, priors)
        finally:
            results.update(pending.result())  # joined before returning or raising
        return {k: results[k] for k, _ in [*first, *second]}  # the order of the one-thread path

    @staticmethod
    def _side_detectors(first: Sequence[tuple[str, Detector]], second: Sequence[tuple[str, Detector]]
                        ) -> list[tuple[str, Detector]]:
        """The first-stage detectors :meth:`run_detectors` may run beside the rest: those whose
        labels no second-stage detector reads (its ``prior_labels``; one that declares none reads
        every first-stage box); without a second stage, the first detector. Empty when nothing
        can run beside the rest: one thread then."""
        if not second:  # the first one (the faces) beside the others
            return list(first[:1]) if len(first) > 1 else []
        read: set[int] = set()
        for _, det in second:
            labels = getattr(det, "prior_labels", None)
            if labels is None:
                return []
            read.update(int(lb) for lb in labels)
        side = [(k, d) for k, d in first
                if not read.intersection(int(lb) for lb in getattr(d, "labels", ()) or ())
                and getattr(d, "labels", None)]
        return side

    def plan(self, frames: Frames) -> tuple[list[Boxes], list[int], list[str], float]:
        """Decide every box to mask on every frame (detection + fallback + temporal fill)."""
        _check_frames(frames)
        raw, failed, errors, detect_ms = self.detect(frames)
        return self.plan_from(raw, failed, frames.shape[1:3], frames=frames), failed, errors, detect_ms

    def plan_from(self, raw: Sequence[Boxes | None], failed: Sequence[int], hw: tuple[int, int], *,
                  frames: Frames | None = None, dark: Callable[[int], bool] | None = None) -> list[Boxes]:
        """Turn raw detections (``None`` where detection did not run) into the boxes to mask:
        head and plate fallbacks, class filter, temporal fill, whole-frame masks for failed frames.
        ``frames``: the chunk, so temporal fill follows the camera's motion (without them,
        boxes are carried in place). ``dark``: whether frame ``i`` is dark (loose text keeps
        the plate's padding there), asked only of a frame with loose-text candidates; by default measured on
        ``frames`` (``litplate.is_dark``), and without either no frame is dark."""
        if dark is None and frames is not None:
            dark = functools.partial(_frame_is_dark, frames)
        with_heads: list[Boxes | None] = []
        wanted = [int(x) for x in self.wanted_labels]
        for i, b in enumerate(raw):
            if b is None:
                with_heads.append(None)
                continue
            b = self._own(b, None if dark is None else functools.partial(dark, i), hw)
            b = self._drop_weak_large_faces(b, hw)
            if Label.HEAD in self.wanted_labels:
                persons = b.select(b.label == Label.PERSON)
                faces = b.select(b.label == Label.FACE)
                b = Boxes.concat([b, head_regions(persons, faces, hw, min_person_px=self.config.head_min_person_px,
                                                  top_cut=self.config.head_top_cut,
                                                  min_score=self.config.head_min_score,
                                                  group_faces=self.config.head_group_faces)])
            if self._plate_fallback:
                plates = b.select((b.label == Label.PLATE) & ~self._square_plates(b))
                near = b.select(b.label == Label.PLATE) if self.config.plate_region_shrink else None
                b = Boxes.concat([b, plate_regions(b.select(b.label == Label.VEHICLE), plates,
                                                   hw, min_px=self.config.plate_fallback_min_px,
                                                   min_score=self.config.plate_fallback_threshold, near=near)])
            with_heads.append(b.select(np.isin(b.label, wanted)))
        # A scheduled frame where the detector missed must still get the boxes of the
        # scheduled frames on either side: the window reaches at least one schedule step.
        window = max(self.config.temporal_window, self.config.detect_every)
        # follow_velocity: a face walking into or out of the picture between two scheduled
        # frames is detected on one side of the gap only (no pair to interpolate); carried
        # still, it walks out of its box (bikes.mp4 at every 4th frame: 2 faces leaked,
        # tests/unit/test_walker_fill.py)
        filled = fill_gaps(with_heads, window=window, frames=frames, follow_velocity=True)
        h, w = hw
        whole = Boxes.of([[0, 0, w, h]], [1.0], Label.FRAME)
        for i in _fail_closed_frames(raw, failed):
            filled[i] = Boxes.concat([filled[i], whole])
        return filled

    def _drop_weak_large_faces(self, b: Boxes, hw: tuple[int, int]) -> Boxes:
        """Face boxes at least ``face_large_px`` wide at the face detector's input scale and
        scored below ``face_large_min_score`` are dropped (before the head fallback, which
        then masks the head of a person whose only face box was one of them)."""
        big = self.config.face_large_px
        if big is None or not len(b):
            return b
        side = self.config.face_max_side
        scale = min(1.0, side / max(hw)) if side else 1.0
        width = (b.xyxy[:, 2] - b.xyxy[:, 0]) * scale
        weak = (b.label == Label.FACE) & (width >= float(big)) & (b.score < self.config.face_large_min_score)
        return b.select(~weak) if weak.any() else b

    @staticmethod
    def _square_plates(b: Boxes) -> npt.NDArray[np.bool_]:
        """Plate boxes squarer than any plate (``PLATE_MAX_HEIGHT_RATIO``)."""
        wh = b.xyxy[:, 2:] - b.xyxy[:, :2]
        square: npt.NDArray[np.bool_] = (b.label == Label.PLATE) & (wh[:, 1] > PLATE_MAX_HEIGHT_RATIO * wh[:, 0])
        return square

    def _own(self, b: Boxes, dark: Callable[[], bool] | None = None, hw: tuple[int, int] | None = None) -> Boxes:
        """Boxes as this config reads them: its thresholds, text boxes under its text class."""
        if self._min_score and len(b):
            floor = np.array([self._min_score.get(int(lb), -np.inf) for lb in b.label], np.float32)
            b = b.select(b.score >= floor)
        if self._text_as is not None and len(b):
            is_text = np.isin(b.label, [int(Label.PLATE), int(Label.TEXT)])
            if is_text.any() and not (b.label[is_text] == self._text_as).all():
                label = np.where(is_text, self._text_as, b.label).astype(b.label.dtype)
                b = Boxes(b.xyxy, b.score, label)
        if self._plates_only_text and len(b):
            # A plate is wider than it is tall (EU 4.7:1, US 2:1, EU motorcycle 1.27:1); a
            # squarer "text" box is another thing the text net scored (PP-OCRv5 puts one over
            # a whole face in a 176x144 frame upscaled for it). Only when no policy here
            # wants other text, which may run vertically. A vehicle whose plate box is dropped
            # still gets the plate fallback.
            # On a vehicle's lower part a square box is kept: a plate seen at an angle, a
            # two-line plate, the glyphs of a short one (it does not stand for the vehicle's
            # plate in the fallback, see plan_from: tail lights score as text too).
            square = self._square_plates(b)
            if square.any():
                on_vehicle = on_vehicles(b.select(square), b.select(b.label == Label.VEHICLE)).any(axis=1)
                square[np.flatnonzero(square)[on_vehicle]] = False
                b = b.select(~square)
            # Round 3: nor is a box longer than any plate (a banner's line of text in a crowd:
            # faces_wider_hard's plate-class masks were 9.3 % of the frame), unless it sits on
            # a vehicle's lower part (a plate merged with the text beside it).
            cap = self.config.plate_max_aspect
            if cap is not None and len(b):
                wh = b.xyxy[:, 2:] - b.xyxy[:, :2]
                long = (b.label == Label.PLATE) & (wh[:, 0] > float(cap) * wh[:, 1])
                if long.any():
                    on_vehicle = on_vehicles(b.select(long), b.select(b.label == Label.VEHICLE)).any(axis=1)
                    long[np.flatnonzero(long)[on_vehicle]] = False
                    b = b.select(~long)
            if self._loose_text and len(b):
                b = self._mark_loose_text(b, dark, hw)
        return b

    def _mark_loose_text(self, b: Boxes, dark: Callable[[], bool] | None = None,
                         hw: tuple[int, int] | None = None) -> Boxes:
        """Plate boxes with no vehicle within ``plate_vehicle_reach`` of their heights become
        ``Label.LOOSE_TEXT`` (masked with ``loose_text_padding``); with ``loose_text_worn``
        off, those whose centre lies inside a person box are dropped. With
        ``loose_text_dark_padding``, in a frame ``dark()`` says is dark they stay plates
        (padded; worn ones still dropped): YOLOX misses most vehicles there."""
        cfg = self.config
        is_plate = b.label == Label.PLATE
        if not is_plate.any():
            return b
        idx = np.flatnonzero(is_plate)
        assert cfg.plate_vehicle_reach is not None
        plates, vehicles = b.select(is_plate), b.select(b.label == Label.VEHICLE)
        # A box the plate fallback reads as a vehicle's own plate (just under its box) is near.
        near = near_vehicles(plates, vehicles, float(cfg.plate_vehicle_reach)) | on_vehicles(plates, vehicles).any(axis=1)
        loose = idx[~near]
        if not len(loose):
            return b
        keep = np.ones(len(b), bool)
        if not cfg.loose_text_worn:
            persons = b.xyxy[b.label == Label.PERSON].astype(np.float64)
            if len(persons):
                p = b.xyxy[loose].astype(np.float64)
                cx, cy = (p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2
                worn = ((cx[:, None] > persons[None, :, 0]) & (cx[:, None] < persons[None, :, 2])
                        & (cy[:, None] > persons[None, :, 1]) & (cy[:, None] < persons[None, :, 3])).any(axis=1)
                keep[loose[worn]] = False
        if cfg.loose_text_max_height is not None and hw is not None:
            tall = (b.xyxy[loose, 3] - b.xyxy[loose, 1]) > float(cfg.loose_text_max_height) * hw[0]
            keep[loose[tall]] = False
        label = b.label.copy()
        if dark is None or not cfg.loose_text_dark_padding or not dark():
            label[loose] = int(Label.LOOSE_TEXT)
        return Boxes(b.xyxy, b.score, label).select(keep)

    def redact(self, frames: Frames, camera_id: str | None = None, *, in_place: bool = False) -> RedactionResult:
        """Mask a chunk of frames. ``frames`` is ``(N, H, W, 3)`` uint8 BGR, not mutated unless
        ``in_place`` (a caller that owns the decoded chunk: see :meth:`apply`)."""
        _check_frames(frames)
        raw, failed, errors, detect_ms = self.detect(frames)
        res = self.finish(frames, raw, failed, camera_id, in_place=in_place)
        res.errors, res.detect_ms = errors, detect_ms
        return res

    def finish(self, frames: Frames, raw: Sequence[Boxes | None], failed: Sequence[int],
               camera_id: str | None = None, *, in_place: bool = False) -> RedactionResult:
        """Second half of :meth:`redact` for detections computed elsewhere (a detector
        actor batching across cameras): fallback, temporal fill, masking, counts.
        ``in_place``: mask ``frames`` itself (see :meth:`apply`)."""
        _check_frames(frames)
        if len(raw) != len(frames):
            raise ValueError(f"{len(raw)} detection results for {len(frames)} frames")
        boxes = self.plan_from(raw, failed, frames.shape[1:3], frames=frames)
        out = self.apply(frames, boxes, camera_id, in_place=in_place)
        return RedactionResult(out, boxes, self.count(boxes), _fail_closed_frames(raw, failed))

    def count(self, boxes: Sequence[Boxes]) -> dict[str, int]:
        """Masked objects per class, summed over frames.

        Temporal fill unions a frame's detections with boxes carried from its neighbours,
        so one face can be several overlapping boxes on a frame; overlapping boxes of one
        class count once (what an operator means by "faces masked").
        """
        counts = {c: 0 for c in self.config.classes}
        for b in boxes:
            for name in counts:
                sel = b.select(np.isin(b.label, [int(x) for x in CLASS_LABELS[name]]))
                counts[name] += _distinct_objects(sel.xyxy)
        return counts

    def apply(self, frames: Frames, boxes: Sequence[Boxes], camera_id: str | None = None, *,
              in_place: bool = False) -> Frames:
        """Mask the given boxes (and zones, and whole frames for FRAME boxes) on a copy of
        ``frames``, or (``in_place``: a caller that owns the decoded chunk) on ``frames`` itself."""
        # one copy of the chunk (made by the first masker), masked in place after that. The
        # labels' maskers differ only in shape and padding: overlapping boxes of several labels
        # (a face and its person's head box, a plate and its vehicle's plate region) are
        # rendered once (anonymize_together; the pixels masked are each masker's own).
        out: Frames | None = frames if in_place and frames.flags.writeable else None
        parts: list[tuple[Any, list[Boxes]]] = []
        for label, masker in self._maskers.items():
            sel = [b.select(b.label == label) for b in boxes]
            if any(len(s) for s in sel):
                parts.append((masker, sel))
        if parts:
            out = anonymize_together(frames if out is None else out, parts, into=out)
        regions = self._region_masks(frames.shape[1:3], boxes, camera_id)
        if regions is not None:
            out = self._region_masker.anonymize(frames if out is None else out, [Boxes.empty() for _ in boxes],
                                                regions, into=out)
        if out is None:
            out = frames.copy()  # callers own the result; never alias the input
        return out

    def coverage(self, frame_hw: tuple[int, int], boxes: Boxes, camera_id: str | None = None) -> np.ndarray:
        """``(H, W)`` bool: exactly the pixels :meth:`apply` masks for one frame's boxes."""
        cov = np.zeros(frame_hw, bool)
        for part in self.coverage_by_source(frame_hw, boxes, camera_id).values():
            cov |= part
        return cov

    def coverage_by_source(self, frame_hw: tuple[int, int], boxes: Boxes,
                           camera_id: str | None = None) -> dict[str, np.ndarray]:
        """Where the masked pixels of one frame come from: mask source name (``face``,
        ``head`` (the head fallback), ``plate``, ``plate_region`` (the vehicle fallback),
        ``text``, ``person``, ``zone``, ``frame`` (fail closed)) -> ``(H, W)`` bool, only the
        sources present. Sources overlap; their union is :meth:`coverage`. Lets the eval
        show what each class costs the analysts."""
        out: dict[str, np.ndarray] = {}
        for label, masker in self._maskers.items():
            sel = boxes.select(boxes.label == label)
            if len(sel):
                out[MASK_SOURCES[label]] = masker.coverage_mask(frame_hw, sel)
        if len(boxes) and bool((boxes.label == Label.FRAME).any()):
            out["frame"] = np.ones(frame_hw, bool)
        elif self.zones is not None:
            regions = self._region_masks(frame_hw, [boxes], camera_id)
            if regions is not None and regions[0] is not None:
                out["zone"] = regions[0]
        return out

    def _region_masks(self, hw: tuple[int, int], boxes: Sequence[Boxes], camera_id: str | None
                      ) -> list[np.ndarray | None] | None:
        zone = None
        if self.zones is not None:
            zs = self.zones.for_camera(camera_id) if camera_id is not None else self.zones
            m = zs.mask(*hw)
            zone = m if m.any() else None
        masks: list[np.ndarray | None] = []
        any_mask = zone is not None
        for b in boxes:
            if (b.label == Label.FRAME).any():
                masks.append(np.ones(hw, bool))
                any_mask = True
            else:
                masks.append(zone)
        return masks if any_mask else None


def text_full_sources(n_detected: int, every: int) -> list[int]:
    """Per detected frame of one chunk (``n_detected`` of them, in order), the position of the
    detected frame whose full-frame text pass it takes: its own on the first, every
    ``every``-th and the last (the pass runs there), else the latest of those before it
    (``RedactionConfig.text_full_every``).

    Raises:
        ValueError: ``n_detected < 0`` or ``every < 1``.
    """
    if n_detected < 0:
        raise ValueError(f"n_detected: expected >= 0, got {n_detected}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every: expected an integer >= 1, got {every!r}")
    out: list[int] = []
    last = 0
    for p in range(n_detected):
        if p % every == 0 or p == n_detected - 1:
            last = p
        out.append(last)
    return out


def _check_frames(frames: Frames) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {shape} {getattr(frames, 'dtype', None)}")


def _frame_is_dark(frames: Frames, i: int) -> bool:
    """Frame ``i`` is dark by the lit-plate pass's gate (imported here: the detectors package
    loads the runtimes)."""
    from .detectors.litplate import is_dark

    return is_dark(frames[i])


def _fail_closed_frames(raw: Sequence[Boxes | None], failed: Sequence[int]) -> list[int]:
    """Frames to mask whole: those whose detection failed, and the frames that were not
    scheduled for detection whose nearest scheduled frame before or after failed (their
    coverage would have been carried from a frame nobody looked at)."""
    bad = set(failed)
    if not bad:
        return []
    out = set(bad)
    n = len(raw)
    prev = None
    nearest_prev: list[int | None] = []
    for i in range(n):
        nearest_prev.append(prev)
        if raw[i] is not None or i in bad:
            prev = i
    nxt = None
    for i in range(n - 1, -1, -1):
        if raw[i] is None and i not in bad and (nxt in bad or nearest_prev[i] in bad):
            out.add(i)
        if raw[i] is not None or i in bad:
            nxt = i
    return sorted(out)


def _distinct_objects(xyxy: np.ndarray, overlap: float = 0.3) -> int:
    """Number of groups of boxes connected by overlap (intersection over the smaller box
    area above ``overlap``): carried copies of one object count once.

    Only pairs whose x-ranges overlap are compared (a sweep over the boxes sorted by left edge),
    and the groups are joined by vectorised hooking: a crowded 720p frame after temporal fill
    holds ~1,500 face boxes, whose full pairwise matrix cost 36 ms a frame for ~11,000 linked
    pairs."""
    n = len(xyxy)
    if n <= 1:
        return n
    b = np.asarray(xyxy, np.float32).reshape(-1, 4)
    b = b[np.argsort(b[:, 0], kind="stable")]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    # candidates of box i: the boxes after it (sorted by x1) whose left edge is left of its right edge
    hi = np.maximum(np.searchsorted(x1, x2, side="left"), np.arange(1, n + 1))
    counts = hi - np.arange(1, n + 1)
    i = np.repeat(np.arange(n), counts)
    off = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=off[1:])
    j = np.arange(int(off[-1]), dtype=np.int64) - off[i] + i + 1
    iw = np.clip(np.minimum(x2[i], x2[j]) - np.maximum(x1[i], x1[j]), 0, None)
    ih = np.clip(np.minimum(y2[i], y2[j]) - np.maximum(y1[i], y1[j]), 0, None)
    area = np.clip((x2 - x1) * (y2 - y1), 1e-6, None)
    linked = (iw * ih) / np.minimum(area[i], area[j]) > overlap
    i, j = i[linked], j[linked]
    labels = np.arange(n)
    while True:
        li, lj = labels[i], labels[j]
        low = np.minimum(li, lj)
        new = labels.copy()
        np.minimum.at(new, li, low)  # hook each group's root onto the smallest root it touches
        np.minimum.at(new, lj, low)
        while True:  # then every box onto its root
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        new = new[labels]
        if np.array_equal(new, labels):
            return int(np.unique(labels).size)
        labels = new


def build_detectors(config: RedactionConfig) -> dict[str, Detector]:
    """Instantiate the detectors ``config.classes`` need, once.

    The detectors are built on threads, one each (their sessions' compiles, cache reads and
    warm-ups mostly release the GIL: the build's wall time is the slowest detector's, not the
    sum). Every thread is joined before this returns or raises; a failed build raises its
    own exception unchanged, the first in the order face, person, text when several fail.
    """
    from .detectors import DETECTORS  # local: keeps onnxruntime out of plain type imports

    common: dict[str, Any] = {"providers": list(config.providers) if config.providers else None,
                              "precision": config.precision}
    if config.model_dir:
        common["model_dir"] = config.model_dir
    if config.threads:
        common["threads"] = config.threads
    jobs: list[tuple[str, Callable[..., Detector], dict[str, Any]]] = []
    classes = set(config.classes)
    if "face" in classes:
        kw = dict(common)
        if config.face_threshold is not None:
            kw["threshold"] = config.face_threshold
        if config.face_max_side is not None:
            kw["max_side"] = config.face_max_side
        if config.face_model == "centerface+yunet":
            if config.yunet_threshold is not None:
                kw["yunet_threshold"] = config.yunet_threshold
            kw["yunet_max_side"] = config.yunet_max_side
            kw["yunet_min_side"] = config.yunet_min_side
            kw["small_frame_side"] = config.small_frame_side
            kw["small_frame_centerface_precision"] = config.small_frame_centerface_precision
        jobs.append(("face", DETECTORS[config.face_model], kw))
    plates = "plate" in classes
    vehicles = plates and config.plate_crops
    if "face" in classes or "person" in classes or vehicles:
        kw = dict(common)
        if config.person_threshold is not None:
            kw["threshold"] = config.person_threshold
        kw["max_side"] = config.person_max_side
        kw["max_upscale"] = config.person_max_upscale
        kw["native_max_side"] = config.small_frame_side
        if vehicles:
            kw["vehicles"] = True
            if config.vehicle_threshold is not None:
                kw["vehicle_threshold"] = config.vehicle_threshold
        jobs.append(("person", DETECTORS["yolox_person"], kw))
    if plates or "text" in classes:
        kw = dict(common)
        if config.text_threshold is not None:
            kw["threshold"] = config.text_threshold
        if config.text_max_side is not None:
            kw["max_side"] = config.text_max_side
        kw["min_side"] = config.text_min_side
        kw["max_upscale"] = config.text_max_upscale
        kw["tile"] = config.text_tile
        kw["crops"] = vehicles
        kw["full_min_side"] = config.text_full_min_side
        kw["crop_budget"] = config.text_crop_budget
        kw["native_max_side"] = config.small_frame_side
        kw["lit_pass"] = plates and config.plate_lit_pass
        kw["model"] = config.text_model
        kw["full_precision"] = config.text_full_precision
        kw["dark_precision"] = config.text_dark_precision
        # One text model serves both classes: it finds plate characters and other text.
        kw["label"] = Label.PLATE if plates else Label.TEXT
        jobs.append(("text", DETECTORS["ppocr_text"], kw))
    if len(jobs) <= 1:
        return {key: make(**kw) for key, make, kw in jobs}
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="veil-build") as pool:
        futures = [(key, pool.submit(make, **kw)) for key, make, kw in jobs]
    # leaving the block joined every thread
    for _key, fut in futures:
        exc = fut.exception()
        if exc is not None:
            raise exc
    return {key: fut.result() for key, fut in futures}

