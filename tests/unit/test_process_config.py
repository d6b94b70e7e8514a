"""The process config decides the redaction the Ray actors apply (no Ray needed to check)."""

from __future__ import annotations

import pytest

from operators.types import ConfigError
from pipeline.process.worker import ProcessWorker, _root_cause
from schemas.config import parse_config


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


def test_kafka_security_settings_apply_to_every_client(monkeypatch):
    from pipeline.kafka import kafka_settings

    cfg = parse_config({"kafka": {"bootstrap_servers": "b:9093", "security": {
        "protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "username_env": "KU", "password_env": "KP",
        "ca_file": "/etc/ca.pem"}}})
    with pytest.raises(ConfigError, match="sasl.username"):
        kafka_settings(cfg.kafka)
    monkeypatch.setenv("KU", "veil")
    monkeypatch.setenv("KP", "s3cret")
    assert kafka_settings(cfg.kafka) == {"security.protocol": "SASL_SSL", "ssl.ca.location": "/etc/ca.pem",
                                         "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "veil",
                                         "sasl.password": "s3cret"}
    assert kafka_settings(parse_config({"kafka": {"bootstrap_servers": "b:9092"}}).kafka) == {}
