"""The masking plan decides what the Ray actors apply; it is built without Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from operators.detectors import DEFAULT_THRESHOLDS
from pipeline.process.plan import MaskingPlan, OnFailure, build_plan
from pipeline.stage import root_cause
from schemas.config import parse_config
from schemas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def plan(process: dict, policies_dir: Path | None = None) -> MaskingPlan:
    raw: dict = {"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "process": process}
    if policies_dir is not None:
        raw["policies_dir"] = str(policies_dir)
    return build_plan(parse_config(raw))


def test_defaults_match_the_cli_video_defaults():
    r = plan({}).default.redaction
    assert (r.classes, r.style, r.detect_every, r.face_max_side, r.text_max_side, r.face_model) == (
        ("face", "plate"), "mosaic", 4, 640, 640, "centerface+yunet")


def test_gpu_node_settings_reach_the_detectors():
    p = plan({"face_max_side": None, "detect_every": 1, "classes": ["face", "person"], "style": "fill",
              "face_model": "yunet"})
    r = p.detector
    assert (r.face_max_side, r.detect_every, r.classes, r.style, r.face_model) == (
        None, 1, ("face", "person"), "fill", "yunet")


def test_text_full_min_side_reaches_the_detectors_and_is_off_by_default():
    assert plan({}).detector.text_full_min_side is None
    p = plan({"text_full_min_side": 200, "detect_every": 8})
    assert p.detector.text_full_min_side == 200 and p.default.redaction.text_full_min_side == 200
    with pytest.raises(ConfigError, match="process.text_full_min_side"):
        plan({"text_full_min_side": 0})


def test_text_full_every_reaches_the_detectors_and_bad_values_name_the_key():
    default = plan({})
    assert default.detector.text_full_every == default.default.redaction.text_full_every >= 1
    p = plan({"text_full_every": 3})
    assert p.detector.text_full_every == 3 and p.default.redaction.text_full_every == 3
    for bad in (0, "2", 1.5):
        with pytest.raises(ConfigError, match="process.text_full_every"):
            plan({"text_full_every": bad})


def test_small_frame_side_reaches_the_detectors_and_may_be_turned_off():
    assert plan({}).detector.small_frame_side == 320
    p = plan({"small_frame_side": None})
    assert p.detector.small_frame_side is None and p.default.redaction.small_frame_side is None
    with pytest.raises(ConfigError, match="process.small_frame_side"):
        plan({"small_frame_side": 0})


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError) as ei:
        plan({"face_model": "retina", "detect_every": 0})
    msg = str(ei.value)
    assert "process.face_model" in msg and "process.detect_every" in msg


def test_root_cause_of_a_ray_actor_error_is_the_model_error():
    text = ("ActorDiedError: The actor died because of an error raised in its creation task, "
            "ray::DetectorActor.__init__()\n  File \"x.py\", line 3\n"
            "schemas.errors.ModelNotFoundError: model 'yolox_nano' not found; download it from URL")
    assert root_cause(RuntimeError(text)) == "model 'yolox_nano' not found; download it from URL"


def test_a_policy_decides_what_is_masked_and_how(tmp_path):
    (tmp_path / "subway.yaml").write_text("""
policy_id: subway
version: 4
classes: [face, plate, person]
style: blur
strength: 0.8
on_failure: drop
thresholds: {face: 0.3, plate: 0.5, text: 0.4}
padding: {face: 0.5, head: 0.3}
zones: [{name: booth, polygon: [[0, 0], [0.1, 0], [0.1, 0.1]], normalized: true}]
""")
    pol = plan({"policy_id": "subway", "classes": ["face"], "policy_version": 9}, tmp_path).default
    r = pol.redaction
    assert (r.classes, r.style, r.strength, r.face_threshold, r.text_threshold, r.face_padding,
            r.head_padding) == (("face", "plate", "person"), "blur", 0.8, 0.3, 0.4, 0.5, 0.3)
    assert r.mask_strength() == 0.8
    assert (pol.policy_id, pol.version, pol.on_failure) == ("subway", 4, OnFailure.DROP)
    (booth,) = pol.zone_set("cam-1").zones
    assert (booth.name, booth.normalized, booth.polygon_xy.tolist()) == ("booth", True, [[0, 0], [0.1, 0], [0.1, 0.1]])


def test_camera_zones_are_unioned_with_the_policy_zones(tmp_path):
    (tmp_path / "default.yaml").write_text("policy_id: default\nzones: [{name: a, polygon: [[0, 0], [1, 0], [1, 1]]}]\n")
    pol = plan({}, tmp_path).default
    cam = {"name": "b", "polygon": [[5, 5], [6, 5], [6, 6]]}
    assert [z.name for z in pol.zone_set("cam-1", [cam]).zones] == ["a", "b"]
    assert plan({}).default.zone_set("cam-1") is None  # no zones anywhere: nothing extra masked
    assert [z.name for z in plan({}).default.zone_set("cam-1", [cam]).zones] == ["b"]


def test_without_policies_dir_the_inline_keys_are_a_policy_like_any_other():
    p = plan({"policy_id": "p1", "policy_version": 2, "style": "fill",
              "zones": {"zones": [{"name": "z", "polygon": [[0, 0], [1, 0], [1, 1]]}],
                        "cameras": {"cam-9": [{"name": "c", "polygon": [[0, 0], [2, 0], [2, 2]]}]}}})
    pol = p.default
    assert (pol.policy_id, pol.version, pol.on_failure, pol.redaction.style) == ("p1", 2, OnFailure.MASK, "fill")
    assert not p.routed and p.for_chunk("anything") is pol
    assert [z.name for z in pol.zone_set("cam-9").zones] == ["z", "c"]
    assert [z.name for z in pol.zone_set("cam-1").zones] == ["z"]


def test_a_missing_policy_names_the_key_and_what_exists(tmp_path):
    (tmp_path / "subway.yaml").write_text("policy_id: subway\n")
    with pytest.raises(ConfigError, match=r"process.policy_id: no policy 'default' .*found: subway"):
        plan({}, tmp_path)
    (tmp_path / "subway.yaml").write_text("policy_id: subway\nclasses: [faces]\n")
    with pytest.raises(ConfigError, match="classes"):
        plan({"policy_id": "subway"}, tmp_path)


@pytest.mark.parametrize("style, strength, expected", [
    ("mosaic", None, None), ("mosaic", 0.5, 6.0), ("mosaic", 1.0, 3.0), ("mosaic", 0.1, 12.0),
    ("blur", 0.1, 0.25), ("blur", 0.9, 0.9), ("fill", 0.5, None)])
def test_policy_strength_never_goes_below_the_irreversible_minimum(style, strength, expected):
    from operators.redactor import RedactionConfig
    assert RedactionConfig(style=style, strength=strength).validate().mask_strength() == expected


def _two_policies(tmp_path, strict: str) -> MaskingPlan:
    (tmp_path / "default.yaml").write_text("policy_id: default\nclasses: [face, plate]\nstyle: mosaic\n")
    (tmp_path / "strict.yaml").write_text(strict)
    return plan({}, tmp_path)


def test_chunks_are_routed_by_their_camera_policy(tmp_path):
    p = _two_policies(tmp_path, "policy_id: strict\nversion: 3\nclasses: [face, person]\n")
    assert p.routed and p.default_id == "default"
    assert p.for_chunk(None).policy_id == "default"
    assert p.for_chunk("strict").version == 3
    assert p.for_chunk("nope") is None  # the driver DLQs it: nobody decided how to mask it


def test_one_detector_set_serves_every_policy_at_the_lowest_threshold(tmp_path):
    p = _two_policies(tmp_path, "policy_id: strict\nclasses: [face, person, text]\n"
                                "thresholds: {face: 0.03, person: 0.6}\n")
    det, per = p.detector, {pid: pp.redaction for pid, pp in p.policies.items()}
    assert det.classes == ("face", "plate", "person", "text")
    # face: strict asks 0.03, default takes the face detector's own constant (the
    # CenterFace+YuNet union's 0.05); the detector runs at 0.03 and the default policy
    # filters at the constant itself
    assert det.face_threshold == 0.03 and per["default"].face_threshold == DEFAULT_THRESHOLDS["centerface+yunet"]
    assert per["strict"].face_threshold == 0.03
    # person: strict 0.6, default (face needs the person detector for head fallback) its default
    assert det.person_threshold == DEFAULT_THRESHOLDS["yolox_person"] and per["strict"].person_threshold == 0.6
    # text: nobody set one: the detector default stands for both
    assert det.text_threshold is None and per["default"].text_threshold is None
    assert per["default"].classes == ("face", "plate") and per["strict"].classes == ("face", "person", "text")


def test_a_single_policy_detects_with_its_own_config(tmp_path):
    (tmp_path / "default.yaml").write_text("policy_id: default\nthresholds: {face: 0.4}\n")
    p = plan({}, tmp_path)
    assert p.detector is p.default.redaction and p.detector.face_threshold == 0.4


def test_the_plan_is_frozen():
    import dataclasses

    p = plan({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.default_id = "x"  # type: ignore[misc]


def test_config_check_builds_the_plan_without_ray(tmp_path):
    (tmp_path / "pol").mkdir()
    (tmp_path / "pol" / "default.yaml").write_text("policy_id: default\nclasses: [face]\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"policies_dir: {tmp_path / 'pol'}\nkafka: {{bootstrap_servers: '127.0.0.1:9'}}\n")
    code = ("import sys; from pipeline.cli import main; rc = main(['config', 'check', '--config', sys.argv[1]]); "
            "print('RAY' if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) else 'NO-RAY'); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "config ok" in proc.stdout and "default:v1:face:mask" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "NO-RAY"
