"""The process config decides the redaction the Ray actors apply (no Ray needed to check)."""

from __future__ import annotations

import pytest

from pipeline.process.worker import ProcessWorker, _root_cause
from schemas.config import parse_config
from schemas.errors import ConfigError


def redaction(process: dict) -> object:
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "process": process})
    return ProcessWorker(cfg)._redaction_config()


def test_defaults_match_the_cli_video_defaults():
    r = redaction({})
    assert (r.classes, r.style, r.detect_every, r.face_max_side, r.text_max_side, r.face_model) == (
        ("face", "plate"), "mosaic", 4, 640, 640, "centerface")


def test_gpu_node_settings_reach_the_detectors():
    r = redaction({"face_max_side": None, "detect_every": 1, "classes": ["face", "person"], "style": "fill",
                   "face_model": "yunet"})
    assert (r.face_max_side, r.detect_every, r.classes, r.style, r.face_model) == (
        None, 1, ("face", "person"), "fill", "yunet")


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError) as ei:
        redaction({"face_model": "retina", "detect_every": 0})
    msg = str(ei.value)
    assert "process.face_model" in msg and "process.detect_every" in msg


def test_root_cause_of_a_ray_actor_error_is_the_model_error():
    text = ("ActorDiedError: The actor died because of an error raised in its creation task, "
            "ray::DetectorActor.__init__()\n  File \"x.py\", line 3\n"
            "operators.types.ModelNotFoundError: model 'yolox_nano' not found; download it from URL")
    assert _root_cause(RuntimeError(text)) == "model 'yolox_nano' not found; download it from URL"


def _with_policies(tmp_path, process: dict, policy: str | None) -> object:
    if policy is not None:
        (tmp_path / "subway.yaml").write_text(policy)
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "policies_dir": str(tmp_path),
                        "process": process})
    return ProcessWorker(cfg)


def test_a_policy_decides_what_is_masked_and_how(tmp_path):
    w = _with_policies(tmp_path, {"policy_id": "subway", "classes": ["face"], "policy_version": 9}, """
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
    r = w._redaction_config()
    assert (r.classes, r.style, r.strength, r.face_threshold, r.text_threshold, r.face_padding,
            r.head_padding) == (("face", "plate", "person"), "blur", 0.8, 0.3, 0.4, 0.5, 0.3)
    assert r.mask_strength() == 0.8
    pol = w.policy
    assert (pol.policy_id, pol.version, pol.on_failure) == ("subway", 4, "drop")
    assert pol.zones == {"zones": [{"name": "booth", "polygon": [[0, 0], [0.1, 0], [0.1, 0.1]],
                                    "normalized": True}]}


def test_without_policies_dir_the_process_keys_apply():
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"},
                        "process": {"policy_id": "p1", "policy_version": 2, "style": "fill"}})
    pol = ProcessWorker(cfg).policy
    assert (pol.policy_id, pol.version, pol.on_failure, pol.overrides["style"]) == ("p1", 2, "mask", "fill")


def test_a_missing_policy_names_the_key_and_what_exists(tmp_path):
    with pytest.raises(ConfigError, match=r"process.policy_id: no policy 'default' .*found: subway"):
        _with_policies(tmp_path, {}, "policy_id: subway\n")
    with pytest.raises(ConfigError, match="classes"):
        _with_policies(tmp_path, {"policy_id": "subway"}, "policy_id: subway\nclasses: [faces]\n")


@pytest.mark.parametrize("style, strength, expected", [
    ("mosaic", None, None), ("mosaic", 0.5, 6.0), ("mosaic", 1.0, 3.0), ("mosaic", 0.1, 12.0),
    ("blur", 0.1, 0.25), ("blur", 0.9, 0.9), ("fill", 0.5, None)])
def test_policy_strength_never_goes_below_the_irreversible_minimum(style, strength, expected):
    from operators.redactor import RedactionConfig
    assert RedactionConfig(style=style, strength=strength).validate().mask_strength() == expected


def _two_policies(tmp_path, strict: str) -> object:
    (tmp_path / "default.yaml").write_text("policy_id: default\nclasses: [face, plate]\nstyle: mosaic\n")
    (tmp_path / "strict.yaml").write_text(strict)
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "policies_dir": str(tmp_path)})
    return ProcessWorker(cfg)


def test_chunks_are_routed_by_their_camera_policy(tmp_path):
    w = _two_policies(tmp_path, "policy_id: strict\nversion: 3\nclasses: [face, person]\n")
    ps = w.policies
    assert ps.routed and ps.default_id == "default"
    assert ps.for_chunk(None).policy_id == "default"
    assert ps.for_chunk("strict").version == 3
    assert ps.for_chunk("nope") is None  # the driver DLQs it: nobody decided how to mask it


def test_without_policies_dir_every_chunk_gets_the_inline_policy():
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "process": {"policy_id": "p1"}})
    ps = ProcessWorker(cfg).policies
    assert not ps.routed and ps.for_chunk("anything").policy_id == "p1"


def test_one_detector_set_serves_every_policy_at_the_lowest_threshold(tmp_path):
    w = _two_policies(tmp_path, "policy_id: strict\nclasses: [face, person, text]\n"
                                "thresholds: {face: 0.05, person: 0.6}\n")
    det, per = w._configs()
    assert det.classes == ("face", "plate", "person", "text")
    # face: strict asks 0.05, default takes CenterFace's own 0.1; the detector runs at 0.05 and
    # the default policy filters at 0.1 itself
    assert det.face_threshold == 0.05 and per["default"].face_threshold == 0.1
    assert per["strict"].face_threshold == 0.05
    # person: strict 0.6, default (face needs the person detector for head fallback) 0.1
    assert det.person_threshold == 0.1 and per["strict"].person_threshold == 0.6
    # text: nobody set one: the detector default stands for both
    assert det.text_threshold is None and per["default"].text_threshold is None
    assert per["default"].classes == ("face", "plate") and per["strict"].classes == ("face", "person", "text")


def test_a_single_policy_detects_with_its_own_config(tmp_path):
    (tmp_path / "default.yaml").write_text("policy_id: default\nthresholds: {face: 0.4}\n")
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "policies_dir": str(tmp_path)})
    det, per = ProcessWorker(cfg)._configs()
    assert det is per["default"] and det.face_threshold == 0.4
