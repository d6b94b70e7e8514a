"""``small_frame_centerface_precision``: frames of at most ``small_frame_side`` px go through a bf16
CenterFace session (where bf16 runs), larger frames through the one they always did, YuNet on
both; the setting is validated, reaches the detectors from the process config and the CLI, and
is stamped on the segment manifests (issue 19, session 12: docs/quality.md "Small cameras: which
face detectors earn their CPU")."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pytest

from operators import ovsession
from operators.detectors.faces import FaceUnionDetector
from operators.redactor import RedactionConfig, Redactor
from operators.types import Boxes, ConfigError, Label

BF16 = ovsession.available() and ovsession.bf16_supported()


class _Spy:
    """Stands in for a CenterFace session: records the frame sizes it is given."""

    def __init__(self, score: float) -> None:
        self.score = score
        self.seen: list[tuple[int, int]] = []

    def detect(self, frames: np.ndarray) -> list[Boxes]:
        self.seen.append(tuple(frames.shape[1:3]))  # type: ignore[arg-type]
        return [Boxes.of([[1, 1, 9, 9]], [self.score], Label.FACE) for _ in frames]


def _union(**kw: Any) -> FaceUnionDetector:
    return FaceUnionDetector(threads=1, **kw)


@pytest.mark.parametrize("hw", [(0, 0), (180, 320), (320, 240), (144, 176), (181, 321), (360, 640), (720, 1280)])
def test_small_frames_take_the_small_frame_centerface_and_larger_ones_the_other(hw: tuple[int, int]) -> None:
    if hw == (0, 0):  # no small-frame session: every frame takes the one CenterFace
        det = _union(small_frame_side=320, small_frame_centerface_precision=None)
        assert det.centerface_small is None and "centerface_small_frames" not in det.components
        return
    det = _union(small_frame_side=320, small_frame_centerface_precision="bf16")
    big, small = _Spy(0.5), _Spy(0.75)
    det.centerface, det.centerface_small = big, small  # type: ignore[assignment]
    frames = np.zeros((2, *hw, 3), np.uint8)
    out = det.detect(frames)
    is_small = max(hw) <= 320
    assert (small.seen, big.seen) == (([hw], []) if is_small else ([], [hw]))
    # CenterFace's boxes first, then YuNet's (none on a black frame), for every frame
    assert [b.score[:1].tolist() for b in out] == [[0.75 if is_small else 0.5]] * 2


def test_the_default_builds_a_bf16_centerface_for_small_frames_where_bf16_runs() -> None:
    red = Redactor(RedactionConfig(classes=("face",), threads=1).validate())
    face = red.detectors["face"]
    assert isinstance(face, FaceUnionDetector)
    assert face.small_frame_side == 320
    if not BF16:  # nothing to gain: no second session, every frame as before
        assert face.centerface_small is None
        return
    small = face.centerface_small
    assert small is not None and small.precision == "bf16" and small.providers == [ovsession.OPENVINO]
    assert face.centerface.precision == "fp32" and small.threshold == face.centerface.threshold
    assert small.max_side == face.centerface.max_side
    ids = {m["id"]: m for m in red.model_ids}
    assert ids["centerface_small_frames"]["precision"] == "bf16" and ids["centerface"]["precision"] == "fp32"


@pytest.mark.parametrize("cfg", [{"small_frame_centerface_precision": None},
                                 {"small_frame_centerface_precision": "fp32"},
                                 {"small_frame_side": None},
                                 {"precision": "bf16"}])  # CenterFace runs bf16 on every frame already
def test_no_second_centerface_when_off_or_when_it_would_be_the_same(cfg: dict[str, Any]) -> None:
    red = Redactor(RedactionConfig(classes=("face",), threads=1, **cfg).validate())
    face = red.detectors["face"]
    assert isinstance(face, FaceUnionDetector) and face.centerface_small is None


def test_a_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match="small_frame_centerface_precision: expected fp32 or bf16"):
        RedactionConfig(small_frame_centerface_precision="int8").validate()


def test_process_config_key_reaches_the_redaction_config_and_a_bad_value_names_it() -> None:
    from pipeline.process.plan import build_plan
    from schemas.config import parse_config
    from schemas.errors import ConfigError as SchemaConfigError

    def redaction(process: dict[str, Any]) -> RedactionConfig:
        cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "process": process})
        return build_plan(cfg).default.redaction

    assert redaction({}).small_frame_centerface_precision == "bf16"
    assert redaction({"small_frame_centerface_precision": "fp32"}).small_frame_centerface_precision == "fp32"
    with pytest.raises(SchemaConfigError, match="process.small_frame_centerface_precision"):
        redaction({"small_frame_centerface_precision": "int8"})


@pytest.mark.parametrize(("flag", "expected"), [(None, "bf16"), ("fp32", "fp32"), ("bf16", "bf16")])
def test_cli_precision_fp32_turns_it_off_too(flag: str | None, expected: str) -> None:
    from pipeline.cli import _redaction_config

    args = argparse.Namespace(face_model=None, face_max_side=None, precision=flag, classes=["face", "plate"],
                              style="mosaic", detect_every=None, providers=None, model_dir=None)
    cfg = _redaction_config(args, 4)
    assert isinstance(cfg, RedactionConfig) and cfg.small_frame_centerface_precision == expected


def test_the_still_eval_detects_as_before_whatever_the_setting() -> None:
    """``veilstream eval`` (still) caches CenterFace and YuNet as components of their own: the
    setting is not in what they run or in their cache signatures, so its figures cannot move (and
    no eval image is <= 320 px anyway)."""
    from operators import evalcache

    on = evalcache.components(RedactionConfig().validate())
    off = evalcache.components(RedactionConfig(small_frame_centerface_precision="fp32").validate())
    assert list(on) == list(off) and {"centerface", "yunet"} <= set(on)
    assert all(on[k].params == off[k].params for k in on)
