"""Wire messages and the pipeline config: round trips and every kind of bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from schemas import SCHEMA_NAMES, load_schema, problems
from schemas.config import (
    PipelineConfig,
    config_to_dict,
    load_config,
    parse_camera,
    parse_config,
)
from schemas.errors import ConfigError
from schemas.messages import (
    HEADER_META,
    HEADER_VERSION,
    ChunkCaptured,
    ChunkRedacted,
    DlqRecord,
    SchemaError,
    decode_camera,
    decode_chunk_captured,
    decode_chunk_redacted,
    decode_dlq,
    encode_camera,
    encode_chunk,
    encode_dlq,
)


def captured(**kw) -> ChunkCaptured:
    base = dict(camera_id="cam-001", chunk_seq=7, pts_ms=(1000, 1040, 1080), fps=25.0, width=64, height=48,
                codec="jpeg", captured_at_ms=1_700_000_000_000, payload=b"\x00payload\xff")
    base.update(kw)
    return ChunkCaptured(**base)


def redacted(**kw) -> ChunkRedacted:
    base = dict(camera_id="cam-001", chunk_seq=7, pts_ms=(1000, 1040, 1080), fps=25.0, width=64, height=48,
                codec="h264", captured_at_ms=1_700_000_000_000, payload=b"\x00\x00\x00\x01h264",
                masks_per_class={"face": 3, "plate": 0}, fail_closed_frames=(2,),
                models=({"id": "centerface", "sha256": "ab" * 32},), policy_id="subway", policy_version=4,
                dropped_frames=1)
    base.update(kw)
    return ChunkRedacted(**base)


def with_meta(headers, meta):
    return [(k, json.dumps(meta).encode() if k == HEADER_META else v) for k, v in headers]


# ---------------------------------------------------------------- messages


def test_schema_files_are_valid_2020_12():
    import jsonschema

    for name in SCHEMA_NAMES:
        jsonschema.Draft202012Validator.check_schema(load_schema(name))


def test_chunk_captured_round_trip():
    msg = captured()
    value, headers = encode_chunk(msg)
    assert value == msg.payload
    names = [k for k, _ in headers]
    assert {"veil-meta", "schema_version", "content-type"} <= set(names)
    assert all(isinstance(v, bytes) for _, v in headers)
    assert decode_chunk_captured(value, headers) == msg


def test_chunk_captured_carries_the_camera_policy():
    import dataclasses
    import json

    msg = dataclasses.replace(captured(), policy_id="subway-strict")
    value, headers = encode_chunk(msg)
    assert json.loads(dict(headers)["veil-meta"])["policy_id"] == "subway-strict"
    assert decode_chunk_captured(value, headers) == msg
    # absent when unset: older readers and writers keep working
    value, headers = encode_chunk(captured())
    assert "policy_id" not in json.loads(dict(headers)["veil-meta"])
    assert decode_chunk_captured(value, headers).policy_id is None
    with pytest.raises(SchemaError, match="policy_id"):
        encode_chunk(dataclasses.replace(captured(), policy_id="no spaces"))


def test_chunk_redacted_round_trip():
    msg = redacted()
    value, headers = encode_chunk(msg)
    assert decode_chunk_redacted(value, headers) == msg
    assert dict(headers)["content-type"] == b"video/h264"


def test_empty_chunk_round_trip():
    msg = captured(pts_ms=(), payload=b"")
    assert decode_chunk_captured(*encode_chunk(msg)) == msg


def test_dlq_round_trip_keeps_original_value():
    rec = DlqRecord(reason="decode_failed", source_topic="veil.chunks.raw", source_partition=3, source_offset=42,
                    headers={"veil-type": "ChunkCaptured"}, error="bad", at_ms=5, payload_size=4)
    value, headers = encode_dlq(rec, b"orig")
    assert value == b"orig"
    assert decode_dlq(value, headers) == rec


def test_camera_record_round_trip_and_tombstone():
    cam = parse_camera({"camera_id": "cam-1", "url": "rtsp://10.0.0.1/s", "kind": "rtsp"})
    key, value, _headers = encode_camera(cam)
    assert key == b"cam-1"
    assert decode_camera(value) == cam
    assert decode_camera(None) is None
    with pytest.raises(SchemaError, match="kind"):
        decode_camera(json.dumps({"camera_id": "c", "url": "x", "kind": "ftp"}).encode())


@pytest.mark.parametrize("drop", ["veil-meta", "schema_version"])
def test_missing_header(drop):
    value, headers = encode_chunk(captured())
    headers = [(k, v) for k, v in headers if k != drop]
    with pytest.raises(SchemaError, match=f"missing header '{drop}'"):
        decode_chunk_captured(value, headers)


def test_corrupt_json():
    value, headers = encode_chunk(captured())
    headers = [(k, b'{"camera_id": "cam' if k == HEADER_META else v) for k, v in headers]
    with pytest.raises(SchemaError, match="not JSON"):
        decode_chunk_captured(value, headers)


def test_meta_not_utf8():
    value, headers = encode_chunk(captured())
    headers = [(k, b"\xff\xfe" if k == HEADER_META else v) for k, v in headers]
    with pytest.raises(SchemaError, match="not utf-8"):
        decode_chunk_captured(value, headers)


def test_schema_violation_names_the_path():
    value, headers = encode_chunk(captured())
    meta = json.loads(dict(headers)[HEADER_META])
    meta["pts_ms"][1] = "x"
    meta["width"] = 0
    with pytest.raises(SchemaError) as exc:
        decode_chunk_captured(value, with_meta(headers, meta))
    assert "pts_ms[1]: expected integer >= 0 and <= 253402214399999, got 'x'" in str(exc.value)
    assert "width: expected integer >= 1 and <= 65535, got 0" in str(exc.value)


def test_unknown_meta_key_rejected():
    value, headers = encode_chunk(captured())
    meta = json.loads(dict(headers)[HEADER_META])
    meta["face_crops"] = []
    with pytest.raises(SchemaError, match="face_crops: unknown key"):
        decode_chunk_captured(value, with_meta(headers, meta))


def test_payload_size_mismatch():
    value, headers = encode_chunk(captured())
    with pytest.raises(SchemaError, match="payload_size"):
        decode_chunk_captured(value[:-1], headers)


def test_wrong_version():
    value, headers = encode_chunk(captured())
    headers = [(k, b"2" if k == HEADER_VERSION else v) for k, v in headers]
    with pytest.raises(SchemaError, match="unsupported schema_version '2'"):
        decode_chunk_captured(value, headers)


def test_wrong_message_type():
    value, headers = encode_chunk(captured())
    with pytest.raises(SchemaError, match="veil-type"):
        decode_chunk_redacted(value, headers)


def test_fail_closed_index_out_of_range():
    value, headers = encode_chunk(redacted())
    meta = json.loads(dict(headers)[HEADER_META])
    meta["fail_closed_frames"] = [5]
    with pytest.raises(SchemaError, match="fail_closed_frames"):
        decode_chunk_redacted(value, with_meta(headers, meta))


def test_invalid_message_is_never_encoded():
    with pytest.raises(SchemaError, match="codec"):
        encode_chunk(captured(codec="vp9"))
    with pytest.raises(SchemaError, match="camera_id"):
        encode_chunk(captured(camera_id="bad id/with slash"))


def test_headers_accept_str_values_and_mapping():
    value, headers = encode_chunk(captured())
    as_map = {k: v.decode() for k, v in headers}
    assert decode_chunk_captured(value, as_map) == captured()


# ---------------------------------------------------------------- config


def test_defaults_filled():
    cfg = parse_config({})
    assert isinstance(cfg, PipelineConfig)
    assert cfg.ingest.chunk_seconds == 2.0
    assert cfg.sink.segment_seconds == 60.0
    assert cfg.kafka.topics.raw == "veil.chunks.raw"
    assert cfg.process.classes == ("face", "plate")
    assert cfg.ray.detector.providers == ()
    assert parse_config(None) == cfg


def test_round_trip_through_dict():
    cfg = parse_config({"ingest": {"cameras": [{"camera_id": "c1", "url": "/v.mp4", "zones": [
        {"name": "door", "polygon": [[0, 0], [1, 0], [1, 1]]}]}]}})
    assert cfg.ingest.cameras[0].kind == "file"
    assert parse_config(config_to_dict(cfg)) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.kafka = None  # type: ignore[misc]


def test_dataclass_fields_match_schema_properties():
    from schemas import config as c

    schema = load_schema("config")["properties"]
    pairs = {c.KafkaConfig: schema["kafka"], c.ObjectStoreConfig: schema["object_store"],
             c.RayConfig: schema["ray"], c.DetectorConfig: schema["ray"]["properties"]["detector"],
             c.IngestConfig: schema["ingest"], c.ProcessConfig: schema["process"], c.SinkConfig: schema["sink"],
             c.MetricsConfig: schema["metrics"], c.CameraConfig: load_schema("camera")}
    for cls, sub in pairs.items():
        assert {f.name for f in dataclasses.fields(cls)} == set(sub["properties"]), cls.__name__


def test_error_names_dotted_key():
    with pytest.raises(ConfigError) as exc:
        parse_config({"process": {"detect_every": "x"}})
    assert "process.detect_every: expected integer >= 1, got 'x'" in str(exc.value)


def test_every_problem_reported_at_once():
    bad = {
        "kafka": {"bootstrap_servers": "", "message_max_bytes": 10},
        "process": {"detect_every": 0, "style": "pixelate"},
        "ingest": {"cameras": [{"camera_id": "c1", "kind": "ftp"}]},
        "metrics": {"port": 70000},
    }
    with pytest.raises(ConfigError) as exc:
        parse_config(bad)
    text = str(exc.value)
    for needle in ("kafka.bootstrap_servers:", "kafka.message_max_bytes:", "process.detect_every:",
                   "process.style: expected one of 'mosaic', 'blur', 'fill', got 'pixelate'",
                   "ingest.cameras[0].kind:", "ingest.cameras[0].url: required", "metrics.port:"):
        assert needle in text, needle
    assert "7 problems" in text


def test_unknown_keys_rejected():
    with pytest.raises(ConfigError) as exc:
        parse_config({"kafak": {}, "sink": {"segment_secs": 10}})
    assert "kafak: unknown key" in str(exc.value)
    assert "sink.segment_secs: unknown key" in str(exc.value)


def test_wrong_type_of_section():
    with pytest.raises(ConfigError, match="ray: expected mapping"):
        parse_config({"ray": [1, 2]})
    with pytest.raises(ConfigError, match="top level"):
        parse_config(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_bool_is_not_an_integer():
    with pytest.raises(ConfigError, match="metrics.port: expected integer"):
        parse_config({"metrics": {"port": True}})


def test_duplicate_camera_ids():
    cams = [{"camera_id": "c1", "url": "a"}, {"camera_id": "c1", "url": "b"}]
    with pytest.raises(ConfigError, match="duplicate camera_id 'c1'"):
        parse_config({"ingest": {"cameras": cams}})


def test_secrets_are_env_names_not_values():
    with pytest.raises(ConfigError, match="object_store.access_key_env"):
        parse_config({"object_store": {"access_key_env": "minio admin secret!"}})


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  bootstrap_servers: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("process:\n  detect_every: x\n")
    with pytest.raises(ConfigError, match="process.detect_every"):
        load_config(wrong)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == parse_config({})


def test_policy_schema():
    ok = {"policy_id": "subway", "classes": ["face", "plate"], "retention": {"redacted_days": 30, "raw_days": 0},
          "roles": {"analyst": {"read": ["redacted"]}, "investigator": {"read": ["raw", "redacted"]}}}
    assert problems("policy", ok) == []
    bad = {"policy_id": "p", "classes": ["faces"], "retention": {"raw_days": -1}, "roles": {"x": {"read": ["all"]}}}
    found = problems("policy", bad)
    assert any(f.startswith("classes[0]:") for f in found)
    assert any(f.startswith("retention.raw_days:") for f in found)
    assert any(f.startswith("roles.x.read[0]:") for f in found)


def test_schemas_import_without_kafka_ray_minio():
    code = ("import sys, schemas, schemas.config, schemas.messages; "
            "bad = [m for m in ('confluent_kafka', 'ray', 'minio') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
