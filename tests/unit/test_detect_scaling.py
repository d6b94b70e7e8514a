"""Detection cost scales with the pixels a camera sends (issue "Throughput", item 2).

The rule, pinned on the inputs the networks actually get (not on time: the CPU cost per frame
by size is printed by ``load_tests/detect_cost_by_size.py``):

* the full-frame text pass upscales a small frame by at most ``text_max_upscale`` (2.5x), so
  a 176x144 camera no longer runs it at 960 px;
* YOLOX runs on the frame upscaled by at most ``person_max_upscale`` (2x) and padded to the
  stride on each side (at most ``person_max_side``), not on a 640x640 letterbox whatever the
  frame; CenterFace and YuNet never upscale (their input is the frame rounded to the stride);
* the old sizing stays reachable (``None``) for comparisons;
* frames of at most ``small_frame_side`` (320 px, default) are detected at the camera's own
  size: YOLOX and the full-frame text pass not upscaled (issue "Throughput", item 3: 100
  snapshot cameras of 320x180). The caps above are pinned with ``small_frame_side=None``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from operators.detectors import TextDetector, YoloxPersonDetector
from operators.evaldata import load_coco
from operators.redactor import RedactionConfig, Redactor
from operators.types import ConfigError, Label
from operators.video import read_image
from tests.shared import EVAL, MODELS

SIZES = ((144, 176), (180, 320), (272, 640), (720, 1280))
"""(height, width) of the camera frames the rule is checked on."""


class _Recorder:
    """Stands in for a detector's session: records each input's (H, W) and delegates."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.shapes: list[tuple[int, int]] = []

    def run(self, outputs: Any, feeds: dict[str, np.ndarray], *a: Any, **kw: Any) -> Any:
        blob = next(iter(feeds.values()))
        self.shapes.append((int(blob.shape[2]), int(blob.shape[3])))  # NCHW
        return self._session.run(outputs, feeds, *a, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _sessions(red: Redactor) -> dict[str, Any]:
    d = red.detectors
    out: dict[str, Any] = {"person": d["person"], "text": d["text"]}
    face = d["face"]
    out.update(getattr(face, "components", None) or {"face": face})
    return out


def _record(**cfg: Any) -> dict[str, dict[tuple[int, int], list[tuple[int, int]]]]:
    """Per session and frame size, the network input shapes of one detection run on a blank
    grey frame (no vehicles: the crop pass runs nowhere)."""
    red = Redactor(RedactionConfig(threads=1, providers=("cpu",), model_dir=str(MODELS), **cfg))
    recs = {k: _Recorder(det.session) for k, det in _sessions(red).items()}
    for k, det in _sessions(red).items():
        det.session = recs[k]
    out: dict[str, dict[tuple[int, int], list[tuple[int, int]]]] = {k: {} for k in recs}
    for hw in SIZES:
        for r in recs.values():
            r.shapes.clear()
        # mid grey: a blank frame but not a dark one (dark frames get the lit-plate pass's
        # native-resolution text pass: operators.detectors.litplate)
        red.run_detectors(np.full((1, *hw, 3), 128, np.uint8))
        for k, r in recs.items():
            out[k][hw] = list(r.shapes)
    return out


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict[tuple[int, int], list[tuple[int, int]]]]:
    """The upscaling caps alone (``small_frame_side=None``)."""
    return _record(small_frame_side=None)


@pytest.fixture(scope="module")
def recorded_default() -> dict[str, dict[tuple[int, int], list[tuple[int, int]]]]:
    """The default sizing (caps and ``small_frame_side`` 320)."""
    return _record()


@pytest.mark.parametrize("hw", [(144, 176), (180, 320)])
def test_small_camera_detected_at_its_own_size(recorded_default, hw):
    """A 176x144 or 320x180 camera: every network input is the frame padded to the stride
    (for 320x180 YOLOX was 640x384 and the full-frame text pass 800x480)."""
    for key in ("person", "text", "centerface", "yunet"):
        assert recorded_default[key][hw] == [(_up32(hw[0]), _up32(hw[1]))], key


@pytest.mark.parametrize("hw", [(272, 640), (720, 1280)])
def test_larger_cameras_keep_the_capped_sizing(recorded, recorded_default, hw):
    for key in recorded:
        assert recorded_default[key][hw] == recorded[key][hw]


def test_small_camera_network_pixels_follow_the_frame(recorded_default):
    """Network pixels of a 320x180 frame: the four passes each on the frame padded to the stride
    (4 x 320x192), where the capped sizing gave 5.6 times that."""
    h, w = 180, 320
    net = sum(a * b for per in recorded_default.values() for a, b in per[(h, w)])
    assert net == 4 * _up32(h) * _up32(w), net


def test_small_frame_side_reaches_the_detectors_and_may_be_lifted():
    base = {"threads": 1, "providers": ("cpu",), "model_dir": str(MODELS), "classes": ("face", "plate")}
    red = Redactor(RedactionConfig(**base))
    assert red.detectors["person"].native_max_side == red.detectors["text"].native_max_side == 320
    assert red.detectors["text"].full_min_side is None  # small frames keep the full-frame pass, at native size
    assert red.detectors["text"]._scale_for(180, 320) == 1.0 and red.detectors["text"]._scale_for(240, 326) == 2.5
    red = Redactor(RedactionConfig(**base, small_frame_side=None, text_full_min_side=200))
    assert red.detectors["person"].native_max_side is None and red.detectors["text"].native_max_side is None
    assert red.detectors["text"].full_min_side == 200
    red = Redactor(RedactionConfig(**base, small_frame_side=100, text_full_min_side=200))
    assert red.detectors["text"].native_max_side == 100 and red.detectors["text"].full_min_side == 200
    for bad in (0, -1, True, "320"):
        with pytest.raises(ConfigError, match="small_frame_side"):
            RedactionConfig(small_frame_side=bad).validate()


def _up32(v: float) -> int:
    return -(-int(round(v)) // 32) * 32


def test_text_pass_on_a_tiny_camera_is_not_upscaled_to_960(recorded):
    (shape,) = recorded["text"][(144, 176)]
    assert max(shape) != 960 and max(shape) <= _up32(2.5 * 176)
    assert shape == (384, 448)  # 440x360 padded to the stride


@pytest.mark.parametrize(("hw", "expect"), [((180, 320), (480, 800)), ((272, 640), (416, 960)),
                                            ((720, 1280), (384, 640))])
def test_text_pass_sizes(recorded, hw, expect):
    # 320x180 by 2.5x; 640x272 by 1.5x as before (kg_*-like photos keep their 960 px);
    # 720p downscaled to text_max_side 640
    assert recorded["text"][hw] == [expect]


@pytest.mark.parametrize("key", ["centerface", "yunet"])
@pytest.mark.parametrize("hw", SIZES)
def test_face_inputs_not_larger_than_the_frame_rounded_to_the_stride(recorded, key, hw):
    (shape,) = recorded[key][hw]
    assert shape[0] <= _up32(hw[0]) and shape[1] <= _up32(hw[1])


@pytest.mark.parametrize(("hw", "expect"), [((144, 176), (288, 352)), ((180, 320), (384, 640)),
                                            ((272, 640), (288, 640)), ((720, 1280), (384, 640))])
def test_yolox_input_at_most_twice_the_frame_and_not_square(recorded, hw, expect):
    assert recorded["person"][hw] == [expect]  # was (640, 640) for every size


def test_yolox_input_follows_the_frame():
    det = YoloxPersonDetector(model_dir=MODELS, threads=1, max_side=640, max_upscale=1.0)
    assert det.input_size(144, 176) == (1.0, 160, 192)
    assert det.input_size(272, 640) == (1.0, 288, 640)
    assert det.input_size(720, 1280) == (0.5, 384, 640)
    det.max_upscale = None  # the old square letterbox, for comparisons
    assert det.input_size(144, 176)[1:] == (640, 640)
    det.max_upscale, det.native_max_side = 2.0, 320  # small frames at their own size, larger ones 2x
    assert det.input_size(180, 320) == (1.0, 192, 320)
    assert det.input_size(144, 176) == (1.0, 160, 192)
    assert det.input_size(240, 326) == (pytest.approx(640 / 326), 480, 640)
    det.max_upscale = None  # native_max_side binds even with the old letterbox
    assert det.input_size(180, 320) == (1.0, 192, 320)


def test_network_pixels_grow_with_frame_pixels(recorded):
    def pixels(hw: tuple[int, int]) -> int:
        return sum(h * w for per in recorded.values() for h, w in per[hw])
    got = [pixels(hw) for hw in SIZES[:2]] + [pixels(SIZES[3])]
    assert got == sorted(got) and got[0] < got[-1] / 2, got


def test_old_sizing_reachable():
    d = TextDetector(threads=1, max_side=640, min_side=960)
    assert d._scale_for(144, 176) == pytest.approx(960 / 176)
    d.max_upscale = 2.5
    assert d._scale_for(144, 176) == pytest.approx(2.5)
    assert d._scale_for(272, 640) == pytest.approx(1.5)


def test_rectangular_yolox_finds_the_same_persons_as_the_square_letterbox():
    items = list(load_coco(EVAL / "coco_val2017"))
    img = read_image(items[0].image_path)[None]  # an indoor photo with people, 640x426
    rect = YoloxPersonDetector(model_dir=MODELS, threads=1, max_side=640, max_upscale=1.0).detect(img)[0]
    square = YoloxPersonDetector(model_dir=MODELS, threads=1, max_side=640).detect(img)[0]
    a = rect.select((rect.label == Label.PERSON) & (rect.score >= 0.5))
    b = square.select((square.label == Label.PERSON) & (square.score >= 0.5))
    assert len(a) == len(b) >= 1
    for box in b.xyxy:
        iw = np.clip(np.minimum(a.xyxy[:, 2], box[2]) - np.maximum(a.xyxy[:, 0], box[0]), 0, None)
        ih = np.clip(np.minimum(a.xyxy[:, 3], box[3]) - np.maximum(a.xyxy[:, 1], box[1]), 0, None)
        inter = iw * ih
        union = (a.xyxy[:, 2:] - a.xyxy[:, :2]).prod(1) + (box[2:] - box[:2]).prod() - inter
        assert (inter / union).max() > 0.8


@pytest.mark.parametrize("field", ["text_max_upscale", "person_max_upscale"])
@pytest.mark.parametrize("value", [0.5, 0, -1, True, "2"])
def test_upscale_caps_validated(field, value):
    with pytest.raises(ConfigError, match=field):
        RedactionConfig(**{field: value}).validate()


def test_upscale_caps_may_be_lifted():
    RedactionConfig(text_max_upscale=None, person_max_upscale=None).validate()
    RedactionConfig(text_max_upscale=1, person_max_upscale=2.0).validate()


def test_text_full_min_side_skips_the_full_frame_pass_on_tiny_frames_only():
    """``text_full_min_side`` (a policy choice, off by default): a frame below it gets the
    vehicle-crop pass only; larger frames, and the text class without plate crops, keep the
    full-frame pass."""
    def shapes(cfg: RedactionConfig, hw: tuple[int, int]) -> list[tuple[int, int]]:
        red = Redactor(cfg)
        rec = _Recorder(red.detectors["text"].session)
        red.detectors["text"].session = rec
        red.run_detectors(np.zeros((2, *hw, 3), np.uint8))
        return rec.shapes

    base = {"threads": 1, "providers": ("cpu",), "model_dir": str(MODELS)}
    base = {**base, "small_frame_side": None}  # the small-frame rule alone is tested above
    assert RedactionConfig(**base).text_full_min_side is None  # default: both passes everywhere
    assert shapes(RedactionConfig(**base, text_full_min_side=240), (144, 176)) == []
    assert len(shapes(RedactionConfig(**base, text_full_min_side=240), (272, 640))) == 2
    assert len(shapes(RedactionConfig(**base), (144, 176))) == 2
    # the text class (no plate crops) always gets the full-frame pass
    assert len(shapes(RedactionConfig(**base, classes=("text",), text_full_min_side=240), (144, 176))) == 2
    with pytest.raises(ConfigError, match="text_full_min_side"):
        RedactionConfig(text_full_min_side=0).validate()


def test_eval_scoring_skips_the_full_frame_pass_where_the_detector_does():
    """``veilstream eval`` scores cached passes: an image below ``text_full_min_side`` must not
    be credited with the full-frame pass the detector would not have run (crops only)."""
    from operators import evalcache
    from operators.evaldata import load_plates_eu
    from operators.types import Boxes

    item = load_plates_eu(EVAL / "plates_eu")[0]
    h, w = read_image(item.image_path).shape[:2]
    cache = evalcache.DetectionCache(None, "plates_eu", [item])
    cache.hw = [(h, w)]
    plate = np.asarray(item.plate_boxes[:1], np.float32)
    cached = {"text_full": evalcache.Cached([Boxes.of(plate, np.ones(1, np.float32), Label.PLATE)], 0.0),
              "text_crops": evalcache.Cached([Boxes.empty()], 0.0),
              "yolox": evalcache.Cached([Boxes.empty()], 0.0)}
    th = {"text_full": 0.25, "text_crops": 0.25, "yolox": 0.1}

    def leaked(cfg: RedactionConfig) -> int:
        rep = evalcache.score_setting("plates_eu", [item], cache, cached, cfg, th)
        return {c.cls: c for c in rep.classes}["plate"].leaked

    base = {"classes": ("plate",)}
    assert leaked(RedactionConfig(**base)) == 0  # the full pass's box masks the plate
    assert leaked(RedactionConfig(**base, text_full_min_side=max(h, w) + 1)) == 1  # skipped there
    assert leaked(RedactionConfig(**base, text_full_min_side=max(h, w))) == 0
