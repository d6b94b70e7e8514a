"""`veilstream cameras`: credentials in a URL's query are refused and never shown, the kind
follows the URL, and an unreachable broker is one line (security review findings 2-4)."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from schemas.config import CameraConfig, parse_camera
from schemas.errors import ConfigError, SchemaError
from schemas.messages import decode_camera
from schemas.safety import redact_url, scrub_secrets, secret_param, url_credentials_problem
from tests.readers import failed_reconnect

SECRET = "s3cr3tPW"
QUERY_URLS = [
    f"rtsp://10.0.0.9/live?user=admin&password={SECRET}",
    f"rtsp://10.0.0.9/live?ch=1&PWD={SECRET}",
    f"http://10.0.0.9/snap.cgi?token={SECRET}",
    f"http://10.0.0.9/a.ts?Key={SECRET}&x=1",
    f"http://10.0.0.9/a.ts?sig={SECRET}",
    f"http://10.0.0.9/a.ts?AUTH={SECRET}",
    f"rtsp://10.0.0.9/live?passwd={SECRET}",
    f"rtsp://10.0.0.9/live?Secret={SECRET}",
    f"http://10.0.0.9/a.ts?access_token={SECRET}",
    f"http://10.0.0.9/a.ts?api_key={SECRET}",
    f"http://10.0.0.9/a.ts?x-api-key={SECRET}",
    f"http://10.0.0.9/a.ts?X-Amz-Signature={SECRET}",
    f"rtsp://10.0.0.9/axis-media/media.amp;password={SECRET}",
    f"rtsp://10.0.0.9/live?pass%77ord={SECRET}",
]


def cfg_file(tmp_path: Path, bootstrap: str = "127.0.0.1:1") -> str:
    p = tmp_path / "c.yaml"
    p.write_text(f"kafka: {{bootstrap_servers: '{bootstrap}'}}\n")
    return str(p)


def old_record(url: str) -> CameraConfig:
    """A registry record as an older version stored it: no refusal ran on its URL."""
    return replace(parse_camera({"camera_id": "old", "url": "rtsp://10.0.0.9/live", "kind": "rtsp"}), url=url)


# ---------------------------------------------------------------- pure: which names, what is shown


@pytest.mark.parametrize("url", QUERY_URLS)
def test_query_credentials_are_masked_and_refused(url: str) -> None:
    shown = redact_url(url)
    assert SECRET not in shown and "10.0.0.9" in shown
    assert SECRET not in scrub_secrets(f"Connection refused: '{url}' returned -111")
    problem = url_credentials_problem(url)
    assert problem and "credentials_env" in problem and SECRET not in problem


@pytest.mark.parametrize("url", ["", "/plain/file.mp4", "rtsp://10.0.0.9/live?ch=1&subtype=0",
                                 "http://10.0.0.9/a.ts?keyframe=1&monkey=2&author=x", "file:///v/a.mp4"])
def test_urls_without_secrets_pass_unchanged(url: str) -> None:
    assert redact_url(url) == url
    assert url_credentials_problem(url) is None


def test_user_names_are_masked_but_not_refused_alone() -> None:
    assert redact_url("rtsp://h/live?user=admin&ch=1") == "rtsp://h/live?user=***&ch=1"
    assert url_credentials_problem("rtsp://h/live?user=admin") is None
    assert secret_param("PassWord") and secret_param("client_secret") and not secret_param("keyframe")


def test_a_stored_record_with_query_credentials_is_refused_when_read() -> None:
    with pytest.raises(SchemaError, match="credentials_env") as exc:
        decode_camera(json.dumps({"camera_id": "old", "url": QUERY_URLS[0], "kind": "rtsp"}).encode())
    assert SECRET not in str(exc.value)
    with pytest.raises(ConfigError, match="credentials_env"):
        parse_camera({"camera_id": "lobby", "url": QUERY_URLS[1], "kind": "rtsp"})


# ---------------------------------------------------------------- cameras add


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[CameraConfig]:
    """What `cameras add` would publish (no broker, no audit bucket)."""
    import pipeline.governance.context as gcontext
    import pipeline.ingest.registry as registry

    out: list[CameraConfig] = []

    def publish(_cfg: Any, cams: Any, remove: Any = ()) -> int:
        out.extend(cams)
        return len(out)

    monkeypatch.setattr(registry, "publish_cameras", publish)
    monkeypatch.setattr(gcontext, "record_camera_change", lambda *_a, **_k: None)
    return out


@pytest.mark.parametrize("url", [QUERY_URLS[0], "rtsp://10.0.0.9/live?Password=x1&token=y2"])
def test_cameras_add_refuses_query_credentials_in_one_line(tmp_path: Path, url: str,
                                                           published: list[CameraConfig],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["cameras", "add", "cam", url, "--config", cfg_file(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 2 and not published
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("veilstream: error:") and "--credentials-env" in lines[0], err
    assert SECRET not in out + err and "x1" not in err and "y2" not in err


def test_cameras_add_with_credentials_env_is_accepted(tmp_path: Path, published: list[CameraConfig]) -> None:
    assert main(["cameras", "add", "cam", "rtsp://10.0.0.9/live?ch=1", "--credentials-env", "CAM_CREDS",
                 "--config", cfg_file(tmp_path)]) == 0
    assert published[0].credentials_env == "CAM_CREDS" and published[0].kind == "rtsp"


@pytest.mark.parametrize("url, kind", [
    ("/srv/footage/gate.mp4", "file"), ("gate.mp4", "file"), ("file:///srv/gate.mp4", "file"),
    ("http://10.0.0.9/a.ts", "http"), ("HTTPS://10.0.0.9/a.m3u8", "http"),
    ("rtsp://10.0.0.9/live", "rtsp"), ("rtsps://10.0.0.9/live", "rtsp"),
])
def test_cameras_add_infers_the_kind_from_the_url(tmp_path: Path, url: str, kind: str,
                                                  published: list[CameraConfig]) -> None:
    assert main(["cameras", "add", "cam", url, "--config", cfg_file(tmp_path)]) == 0
    assert published[0].kind == kind


def test_cameras_add_explicit_kind_wins_and_unknown_scheme_is_an_error(
        tmp_path: Path, published: list[CameraConfig], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cameras", "add", "cam", "/srv/gate.mp4", "--kind", "http", "--config", cfg_file(tmp_path)]) == 0
    assert published[0].kind == "http"
    capsys.readouterr()
    assert main(["cameras", "add", "cam2", "rtmp://10.0.0.9/live", "--config", cfg_file(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(published) == 1 and len(err) == 1 and "'rtmp'" in err[0] and "--kind" in err[0], err


# ---------------------------------------------------------------- old records: never shown


def test_cameras_list_hides_query_credentials_of_an_old_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import pipeline.ingest.registry as registry

    monkeypatch.setattr(registry, "read_registry",
                        lambda _cfg, timeout_s=10.0: {"old": old_record(QUERY_URLS[0]),
                                                      "old2": replace(old_record(QUERY_URLS[9]), camera_id="old2")})
    assert main(["cameras", "list", "--config", cfg_file(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err and "admin" not in out
    assert "rtsp://10.0.0.9/live?user=***&password=***" in out and "api_key=***" in out


def test_ingest_retry_logs_never_show_query_credentials(caplog: pytest.LogCaptureFixture) -> None:
    cam = old_record(f"rtsp://127.0.0.1:1/live?user=admin&password={SECRET}")
    events, reader = failed_reconnect(cam, caplog)
    assert events and reader.last_error and "camera failed" in caplog.text
    assert "127.0.0.1" in reader.last_error  # the error still says which source failed
    for text in [*events, reader.last_error, caplog.text]:
        assert SECRET not in text and "admin" not in text, text


# ---------------------------------------------------------------- broker down


def test_cameras_list_with_the_broker_down_is_one_line_and_exit_1(tmp_path: Path,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a local port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["cameras", "list", "--config", cfg_file(tmp_path, f"127.0.0.1:{port}"), "--timeout", "1"])
    out, err = capfd.readouterr()
    assert rc == 1 and not out.strip()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err  # librdkafka's per-retry lines go to debug logging, not stderr
    assert lines[0].startswith("veilstream: error:") and f"127.0.0.1:{port}" in lines[0] and "broker" in lines[0]


def test_cameras_import_infers_the_kind_of_records_without_one(tmp_path: Path, published: list[CameraConfig],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "cams.yaml"
    f.write_text("cameras:\n  - {camera_id: a, url: 'rtsp://10.0.0.9/a'}\n  - {camera_id: b, url: /srv/b.mp4}\n"
                 "  - {camera_id: c, url: 'https://10.0.0.9/c.m3u8'}\n  - {camera_id: d, url: 'rtsp://h/d', kind: http}\n")
    assert main(["cameras", "import", str(f), "--config", cfg_file(tmp_path)]) == 0
    assert [(c.camera_id, c.kind) for c in published] == [("a", "rtsp"), ("b", "file"), ("c", "http"), ("d", "http")]
    f.write_text("- {camera_id: a, url: 'srt://10.0.0.9/a'}\n")
    assert main(["cameras", "import", str(f), "--config", cfg_file(tmp_path)]) == 2
    assert "cameras[0]: cannot tell the kind" in capsys.readouterr().err and len(published) == 4
