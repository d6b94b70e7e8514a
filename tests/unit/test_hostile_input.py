"""Regression tests for issue 12: hostile input never leaks a secret, never picks another
camera's storage, never decodes into unbounded memory (items 1, 3, 4, 5)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from operators.codec import (
    CodecError,
    decode_chunk_payload,
    encode_h264_chunk,
    encode_jpeg_frames,
    jpeg_size,
)
from operators.redactor import RedactionConfig
from operators.types import ConfigError
from operators.video import image_size, read_image, sample_video
from pipeline.ingest.source import open_source
from schemas import load_schema, problems
from schemas.config import LimitsConfig, parse_camera, parse_config
from schemas.messages import (
    HEADER_META,
    ChunkCaptured,
    KeyMismatchError,
    LimitExceededError,
    SchemaError,
    decode_camera,
    decode_chunk_captured,
    encode_chunk,
)
from schemas.safety import (
    ID_PATTERN,
    camera_id_problem,
    redact_url,
    scrub_secrets,
    url_credentials_problem,
)
from tests.readers import failed_reconnect
from tests.shared import MODELS

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr/et:pw"


def chunk(**kw: object) -> ChunkCaptured:
    frames = np.full((3, 144, 176, 3), 90, np.uint8)
    base = ChunkCaptured(camera_id="cam-1", chunk_seq=0, pts_ms=(0, 40, 80), fps=25.0, width=176, height=144,
                         codec="jpeg", captured_at_ms=1_700_000_000_000, payload=encode_jpeg_frames(frames))
    return replace(base, **kw)  # type: ignore[arg-type]


def with_meta(headers: list[tuple[str, bytes]], **changes: object) -> list[tuple[str, bytes]]:
    meta = json.loads(dict(headers)[HEADER_META])
    meta.update(changes)
    return [(k, json.dumps(meta).encode() if k == HEADER_META else v) for k, v in headers]


# ---------------------------------------------------------------- item 3: one id validator


@pytest.mark.parametrize("cid", ["", "coll\n", "cam\r", " cam", "cam ", "a/b", "../x", ".x", "-x", "x" * 65,
                                 "cam\x00", "caméra", "cam=1"])
def test_invalid_ids_are_refused_everywhere(cid: str) -> None:
    assert camera_id_problem(cid) is not None
    assert problems("camera", {"camera_id": cid, "url": "/x.mp4"})
    with pytest.raises(ConfigError):
        parse_camera({"camera_id": cid, "url": "/x.mp4"})
    value, headers = encode_chunk(chunk())
    with pytest.raises(SchemaError, match="camera_id"):
        decode_chunk_captured(value, with_meta(headers, camera_id=cid))


@pytest.mark.parametrize("cid", ["c", "coll", "coll..", "cam-1.a_b", "X" * 64])
def test_valid_ids_pass_unchanged(cid: str) -> None:
    assert camera_id_problem(cid) is None
    assert parse_camera({"camera_id": cid, "url": "/x.mp4"}).camera_id == cid


def test_every_schema_carries_the_one_id_pattern() -> None:
    anchored = f"^{ID_PATTERN}$"
    for name, path in [("camera", ["properties", "camera_id"]), ("camera", ["properties", "policy_id"]),
                       ("chunk_captured", ["properties", "camera_id"]),
                       ("chunk_redacted", ["properties", "camera_id"]), ("policy", ["properties", "policy_id"])]:
        node = load_schema(name)
        for p in path:
            node = node[p]
        assert node["pattern"] == anchored, (name, path)


def test_dollar_in_schema_patterns_never_matches_before_a_trailing_newline() -> None:
    # jsonschema uses re.search, where "$" also matches before a final "\n" (issue 12 item 3)
    assert problems("camera", {"camera_id": "coll\n", "url": "/x.mp4", "credentials_env": "ENV\n"})
    assert len(problems("camera", {"camera_id": "coll\n", "url": "/x.mp4", "credentials_env": "ENV\n"})) == 2


# ---------------------------------------------------------------- item 1: credentials


@pytest.mark.parametrize("url, shown", [
    ("rtsp://user:pa/ss@10.0.0.5/stream", "rtsp://***@10.0.0.5/stream"),
    ("rtsp://user:p@ss@10.0.0.5:554/s", "rtsp://***@10.0.0.5:554/s"),
    ("http://u:p?#x@cam.local/a.ts", "http://***@cam.local/a.ts"),
    ("rtsp://10.0.0.5/stream", "rtsp://10.0.0.5/stream"),
    ("/plain/file.mp4", "/plain/file.mp4"),
])
def test_redact_url_removes_any_userinfo(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_secrets_in_free_text_and_known_literals() -> None:
    text = "Invalid argument: 'rtsp://admin:s3cr/et:pw@10.0.0.9/live' returned 22; pw=s3cr/et:pw"
    out = scrub_secrets(text, [f"admin:{SECRET}"])
    assert "s3cr" not in out and "admin:" not in out
    assert "10.0.0.9/live" in out


@pytest.mark.parametrize("url", ["rtsp://admin:pw@10.0.0.9/live", "rtsp://admin@10.0.0.9/live",
                                 "http://a:b/c@cam/x.ts"])
def test_urls_with_credentials_are_refused_at_registration(url: str) -> None:
    assert url_credentials_problem(url)
    with pytest.raises(ConfigError, match="credentials_env") as exc:
        parse_camera({"camera_id": "lobby", "url": url, "kind": "rtsp"})
    assert "pw" not in str(exc.value) and ":b/" not in str(exc.value)
    with pytest.raises(ConfigError, match="credentials_env"):
        parse_config({"ingest": {"cameras": [{"camera_id": "lobby", "url": url, "kind": "rtsp"}]}})
    with pytest.raises(SchemaError, match="credentials_env"):  # a registry record written before the rule
        decode_camera(json.dumps({"camera_id": "lobby", "url": url}).encode())


def test_pyav_error_text_is_scrubbed() -> None:
    # PyAV repeats the URL it failed to open, credentials included (issue 12 item 1)
    with pytest.raises(CodecError) as exc:
        open_source(f"rtsp://admin:{SECRET}@127.0.0.1:1/live", {"rtsp_transport": "tcp"}, 2.0, 2.0)
    assert "s3cr" not in str(exc.value) and "127.0.0.1" in str(exc.value)


def test_camera_reader_never_logs_the_credentials_env_secret(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CAM_CREDS", f"admin:{SECRET}")
    cam = parse_camera({"camera_id": "lobby", "url": "rtsp://127.0.0.1:1/live", "kind": "rtsp",
                        "credentials_env": "CAM_CREDS"})
    events, reader = failed_reconnect(cam, caplog)
    assert events and reader.last_error
    for text in [*events, reader.last_error, caplog.text]:
        assert "s3cr" not in text and "admin" not in text, text


def test_cameras_list_never_prints_a_password(tmp_path: Path) -> None:
    # a record registered before the refusal existed still holds a password: list must hide it
    code = f"""
import sys
from schemas.config import CameraConfig
import pipeline.ingest.registry as reg
cam = CameraConfig(1, "old", "rtsp://admin:{SECRET}@10.0.0.9/live", "rtsp", None, True, "default", (), "auto",
                   False, False, "CAM_ENV", {{}})
reg.read_registry = lambda cfg, **_kw: {{"old": cam}}
from pipeline.cli import main
sys.exit(main(["cameras", "list", "--config", sys.argv[1]]))
"""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka: {bootstrap_servers: '127.0.0.1:1'}\n")
    proc = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "s3cr" not in proc.stdout + proc.stderr and "admin" not in proc.stdout
    assert "rtsp://***@10.0.0.9/live" in proc.stdout and "credentials_env=CAM_ENV" in proc.stdout


# ---------------------------------------------------------------- item 4: key, size, count, cause


def test_key_must_name_the_meta_camera() -> None:
    value, headers = encode_chunk(chunk())
    assert decode_chunk_captured(value, headers, key=b"cam-1").camera_id == "cam-1"
    with pytest.raises(KeyMismatchError, match="key 'other'.*'cam-1'") as exc:
        decode_chunk_captured(value, headers, key=b"other")
    assert exc.value.reason == "key_mismatch"
    with pytest.raises(KeyMismatchError, match="no key"):
        decode_chunk_captured(value, headers, key=None)


def test_header_size_must_match_the_decoded_frames() -> None:
    frames = np.full((3, 144, 176, 3), 90, np.uint8)
    jpeg = encode_jpeg_frames(frames)
    with pytest.raises(CodecError, match="declares 10000x10000"):
        decode_chunk_payload("jpeg", jpeg, (10000, 10000), expected_frames=3, strict=True)
    h264 = encode_h264_chunk(frames, 25.0)
    with pytest.raises(CodecError, match="declares 10000x10000"):
        decode_chunk_payload("h264", h264, (10000, 10000), expected_frames=3, strict=True)
    with pytest.raises(CodecError, match="holds 3 frames, the message declares 5"):
        decode_chunk_payload("jpeg", jpeg, (176, 144), expected_frames=5, strict=True)
    with pytest.raises(CodecError, match="more than the 2 frames the message declares"):
        decode_chunk_payload("h264", h264, (176, 144), expected_frames=2, strict=True)
    assert decode_chunk_payload("h264", h264, (176, 144), expected_frames=3, strict=True).shape == (3, 144, 176, 3)
    assert decode_chunk_payload("jpeg", jpeg, (176, 144), expected_frames=3, strict=True).shape == (3, 144, 176, 3)


def test_oversized_jpeg_is_refused_from_its_header_before_decoding() -> None:
    big = np.zeros((300, 400, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", big)
    assert jpeg_size(buf.tobytes()) == (400, 300)
    payload = encode_jpeg_frames(big[None])
    with pytest.raises(CodecError, match="over the limit of 100000"):
        decode_chunk_payload("jpeg", payload, (400, 300), expected_frames=1, max_pixels=100_000, strict=True)


@pytest.mark.parametrize("change, match", [
    ({"pts_ms": [253402300800000, 253402300800040, 253402300800080]}, "pts_ms"),  # year 10000 (item 2)
    ({"captured_at_ms": 10**16}, "captured_at_ms"),
    ({"fps": 1e-9}, "fps"),  # once reached the encoder and came back as Ray's colour banner (item 4)
    ({"width": 10**6}, "width"),
])
def test_out_of_range_meta_is_refused_at_decode(change: dict[str, object], match: str) -> None:
    value, headers = encode_chunk(chunk())
    with pytest.raises(SchemaError, match=match):
        decode_chunk_captured(value, with_meta(headers, **change))


# ---------------------------------------------------------------- item 5: limits


def test_limits_refuse_before_decoding() -> None:
    limits = LimitsConfig(max_pixels_per_frame=20_000, max_frames_per_chunk=2, max_message_bytes=100)
    value, headers = encode_chunk(chunk())
    with pytest.raises(LimitExceededError, match="max_pixels_per_frame") as exc:
        decode_chunk_captured(value, headers, limits=limits)
    assert exc.value.reason == "limit_exceeded"
    with pytest.raises(LimitExceededError, match="max_frames_per_chunk"):
        decode_chunk_captured(value, headers, limits=replace(limits, max_pixels_per_frame=10**6))
    with pytest.raises(LimitExceededError, match="max_message_bytes"):
        decode_chunk_captured(value, headers, limits=replace(limits, max_pixels_per_frame=10**6,
                                                             max_frames_per_chunk=10))
    assert decode_chunk_captured(value, headers, limits=LimitsConfig()).camera_id == "cam-1"


def test_config_limits_have_bounds() -> None:
    assert parse_config({}).limits == LimitsConfig()
    with pytest.raises(ConfigError, match="limits.max_pixels_per_frame"):
        parse_config({"limits": {"max_pixels_per_frame": 0}})


def test_image_limit_reads_the_header(tmp_path: Path) -> None:
    img = np.zeros((120, 100, 3), np.uint8)
    for ext in (".png", ".jpg"):
        p = tmp_path / f"a{ext}"
        cv2.imwrite(str(p), img)
        assert image_size(p.read_bytes()) == (100, 120)
        with pytest.raises(Exception, match="over the limit"):
            read_image(p, max_pixels=10_000)
        assert read_image(p, max_pixels=12_000).shape == (120, 100, 3)


@pytest.mark.parametrize("side", [-1, 0.5, 10, True])
def test_redaction_config_refuses_nonsense_face_max_side(side: object) -> None:
    with pytest.raises(ConfigError, match="face_max_side"):
        RedactionConfig(face_max_side=side).validate()  # type: ignore[arg-type]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.setdefault("VEILSTREAM_MODEL_DIR", str(MODELS))
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=180)


def _one_line(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("veilstream")]
    assert len(lines) == 1 and re.search(needle, lines[0]), proc.stderr


def test_redact_cli_refuses_bad_limits_and_unwritable_outputs(tmp_path: Path) -> None:
    video = str(sample_video())
    _one_line(_cli("redact", video, "-o", str(tmp_path / "o.mp4"), "--face-max-side", "-1"), 2, "--face-max-side")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line(_cli("redact", video, "-o", str(blocker / "sub" / "o.mp4")), 1, "is a file, not a directory")
    _one_line(_cli("redact", video, "-o", str(tmp_path / "o.mp4"), "--max-pixels", "4096"), 1, "over the limit")
    assert not (tmp_path / "o.mp4").exists()


def test_ingest_refuses_a_source_over_the_pixel_limit() -> None:
    from pipeline.ingest.source import camera_chunks

    cam = parse_camera({"camera_id": "big", "url": str(sample_video()), "kind": "file"})
    with pytest.raises(CodecError, match="camera big is 176x144 = 25344 pixels, over the limit of 10000"):
        next(iter(camera_chunks(cam, 1.0, 80, max_pixels=10_000)))
    assert next(iter(camera_chunks(cam, 1.0, 80, max_pixels=25_344))).width == 176


def test_dlq_reason_text_is_the_remote_cause_not_rays_banner() -> None:
    # issue 12 item 4: a chunk with fps 1e-9 reached the DLQ with only Ray's colour banner
    import ray.exceptions

    from pipeline.stage import root_cause

    banner = "\x1b[36mray::ChunkWorkerActor.finish()\x1b[39m (pid=123, ip=127.0.0.1)\n  File \"x.py\", line 1"
    exc = ray.exceptions.RayTaskError("ChunkWorkerActor.finish", banner, CodecError("fps must be > 0, got 1e-09"))
    assert root_cause(exc) == "CodecError: fps must be > 0, got 1e-09"
    assert root_cause(ValueError("plain")) == "ValueError: plain"


def test_a_worker_stuck_in_shutdown_never_ignores_sigterm_forever(tmp_path: Path) -> None:
    """Issue 12 item 7: after a broker restart ingest ignored SIGTERM (its shutdown hung). A
    shutdown past VEILSTREAM_STOP_GRACE_S exits (3); a second signal exits at once."""
    import signal as sig
    import time

    code = ("import time, sys\nfrom pipeline.stage import stop_on_signals\nev = stop_on_signals()\n"
            "print('ready', flush=True)\nev.wait()\nwhile True: time.sleep(1)  # a shutdown that hangs\n")
    for second, want in ((False, 3), (True, 128 + sig.SIGTERM)):
        env = {**os.environ, "VEILSTREAM_STOP_GRACE_S": "2" if not second else "600"}
        p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        p.send_signal(sig.SIGTERM)
        if second:
            time.sleep(0.5)
            p.send_signal(sig.SIGTERM)
        assert p.wait(30) == want
        assert time.monotonic() - t0 < 20
