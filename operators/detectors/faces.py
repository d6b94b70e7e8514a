"""Union of CenterFace and YuNet: where one of them misses a face, the other often finds it."""

from __future__ import annotations

from collections.abc import Sequence

from .. import ovsession
from ..providers import choose_providers, on_cpu
from ..quantize import DEFAULT_PRECISION
from ..types import Boxes, Frames, Label
from ._common import ModelRef, check_frames
from .centerface import CenterFaceDetector
from .yunet import YuNetDetector

DEFAULT_THRESHOLD = 0.05
"""CenterFace's threshold inside the union (alone it keeps 0.1): the faces sweep
(`veilstream eval --sweep`) halves faces_wider_hard leaks from 0.07 to 0.05 for +2.8
points of masked area, with no COCO or dlib face leaked."""

YUNET_THRESHOLD = 0.35
"""YuNet's threshold inside the union (alone it keeps 0.45, ``yunet.DEFAULT_THRESHOLD``).
Chosen with ``RedactionConfig.face_large_px`` on a sweep over whole sets (docs/quality.md
"Face masks that follow faces"): faces_wider_hard 93 -> 85 leaks of 5097 (>= 20 px 26 -> 25)
with the large weak CenterFace boxes dropped; every other set no worse (0.4: 89; 0.3: 84 for
+0.2 points of masked area on faces_wider_hard and plates_traffic)."""


class FaceUnionDetector:
    """Faces from CenterFace and YuNet on the same frames, all boxes kept (a union: a
    missed face leaks, an extra box costs a little masked area).

    The two fail differently: CenterFace (RGB, stride 4) is strong on mid-size and profile
    faces, YuNet (BGR, strides 8/16/32) on small, blurred and dark ones, and it is cheap
    enough (33 ms at 1280x720 on one CPU core) to run at a higher resolution than
    CenterFace: YuNet is the small-face pass.

    Args:
        model / yunet_model: registry names or paths.
        threshold / max_side / min_side: CenterFace's (see :class:`CenterFaceDetector`).
        yunet_threshold / yunet_max_side / yunet_min_side: YuNet's (see :class:`YuNetDetector`).
        small_frame_side / small_frame_centerface_precision: frames whose longer side is at
            most ``small_frame_side`` go through a second CenterFace session in this precision
            (``bf16``: OpenVINO on a CPU with native bf16; where bf16 cannot run, or CenterFace
            already runs in it, there is no second session and every frame takes the first).
            YuNet is the same on every frame. See
            ``RedactionConfig.small_frame_centerface_precision`` for why.
        Others go to both.
    """

    name: str = "centerface+yunet"
    labels: tuple[Label, ...] = (Label.FACE,)

    def __init__(self, model: ModelRef = "centerface", *, yunet_model: ModelRef = "yunet_n",
                 providers: Sequence[str] | str | None = None, threshold: float = DEFAULT_THRESHOLD,
                 max_side: int | None = 640, min_side: int | None = None,
                 yunet_threshold: float = YUNET_THRESHOLD, yunet_max_side: int | None = 1280,
                 yunet_min_side: int | None = None, model_dir: ModelRef | None = None,
                 threads: int | None = None, batch_size: int | None = None, precision: str = DEFAULT_PRECISION,
                 small_frame_side: int | None = None, small_frame_centerface_precision: str | None = None) -> None:
        common = {"providers": providers, "model_dir": model_dir, "threads": threads, "batch_size": batch_size,
                  "precision": precision}
        self.centerface = CenterFaceDetector(model, threshold=threshold, max_side=max_side, min_side=min_side,
                                             **common)  # type: ignore[arg-type]
        self.yunet = YuNetDetector(yunet_model, threshold=yunet_threshold, max_side=yunet_max_side,
                                   min_side=yunet_min_side, **common)  # type: ignore[arg-type]
        self.small_frame_side = small_frame_side
        self.centerface_small: CenterFaceDetector | None = None
        """CenterFace for frames of at most ``small_frame_side`` px (``None``: ``centerface`` for all)."""
        if (small_frame_side is not None and small_frame_centerface_precision == "bf16"
                and self.centerface.precision != "bf16" and on_cpu(choose_providers(providers))
                and ovsession.available() and ovsession.bf16_supported()):
            small = CenterFaceDetector(model, threshold=threshold, max_side=max_side, min_side=min_side,
                                       **{**common, "precision": "bf16"})  # type: ignore[arg-type]
            if small.precision == "bf16":
                small.name = "centerface_small_frames"  # its own entry in the segment manifests
                self.centerface_small = small
        self.threshold = self.centerface.threshold
        self.providers = self.centerface.providers
        self.model_sha256 = f"{self.centerface.model_sha256}+{self.yunet.model_sha256}"

    @property
    def components(self) -> dict[str, CenterFaceDetector | YuNetDetector]:
        """The detectors whose boxes are united (the evaluation caches each one)."""
        out: dict[str, CenterFaceDetector | YuNetDetector] = {"centerface": self.centerface, "yunet": self.yunet}
        if self.centerface_small is not None:
            out["centerface_small_frames"] = self.centerface_small
        return out

    def detect(self, frames: Frames) -> list[Boxes]:
        check_frames(frames)
        cf = self.centerface
        if self.centerface_small is not None and max(frames.shape[1:3]) <= (self.small_frame_side or 0):
            cf = self.centerface_small  # set only when small_frame_side is
        a = cf.detect(frames)
        b = self.yunet.detect(frames)
        return [Boxes.concat([x, y]) for x, y in zip(a, b)]


__all__ = ["FaceUnionDetector"]
