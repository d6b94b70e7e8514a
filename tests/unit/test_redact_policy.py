"""``veilstream redact --policy FILE`` masks as the stream does under that policy: the plan comes
from the same function (``plan_from``) the process stage uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli import EXIT_USAGE, _policy_redaction, _redaction_config, build_parser, main
from pipeline.process.plan import build_plan
from schemas.config import parse_config

POLICY = {"policy_id": "lobby", "version": 3, "classes": ["face", "person"], "style": "fill",
          "thresholds": {"face": 0.4, "person": 0.35}, "padding": {"face": 0.3},
          "zones": [{"name": "till", "polygon": [[0, 0], [0.2, 0], [0.2, 0.2]], "normalized": True}]}
FIELDS = ("classes", "style", "strength", "face_threshold", "person_threshold", "text_threshold", "face_padding",
          "plate_padding", "person_padding", "head_padding")


def _args(tmp_path: Path, *extra: str):
    (tmp_path / "in.mp4").write_bytes(b"")
    return build_parser().parse_args(["redact", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out.mp4"), *extra])


def test_redact_policy_is_the_streams_plan_for_that_policy(tmp_path: Path):
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "lobby.yaml").write_text(yaml.safe_dump(POLICY))
    args = _args(tmp_path, "--policy", str(pdir / "lobby.yaml"))
    cfg, zones = _policy_redaction(args, _redaction_config(args, detect_every_default=4), None)
    stream = build_plan(parse_config({"policies_dir": str(pdir), "process": {"policy_id": "lobby"}}))
    theirs = stream.policies["lobby"].redaction
    assert {f: getattr(cfg, f) for f in FIELDS} == {f: getattr(theirs, f) for f in FIELDS}
    assert cfg.classes == ("face", "person") and cfg.style == "fill" and cfg.face_threshold == 0.4
    assert zones is not None and [z.name for z in zones.zones] == ["till"]
    # the command's own detection settings stay (detect_every, providers, models)
    assert cfg.detect_every == 4


@pytest.mark.parametrize("extra", [["--style", "blur"], ["--classes", "face"]])
def test_redact_policy_refuses_conflicting_flags_in_one_line(tmp_path: Path, capsys, extra):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(POLICY))
    (tmp_path / "in.mp4").write_bytes(b"\x00" * 64)
    rc = main(["redact", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "o.mp4"), "--policy", str(tmp_path / "p.yaml"),
               *extra])
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_USAGE and err.startswith("veilstream: error: --policy sets") and "\n" not in err


def test_redact_policy_invalid_file_names_the_problem(tmp_path: Path, capsys):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**POLICY, "style": "sparkle"}))
    (tmp_path / "in.mp4").write_bytes(b"\x00" * 64)
    rc = main(["redact", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "o.mp4"), "--policy", str(tmp_path / "p.yaml")])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE and "style" in err and "Traceback" not in err


# --- --camera ID: exactly what the stream does to that camera's chunks ----------------------

STREET = {"policy_id": "street", "version": 2, "classes": ["face", "plate", "person"], "style": "mosaic",
          "strength": 0.7, "thresholds": {"face": 0.6, "plate": 0.5}, "padding": {"plate": 0.2},
          "zones": [{"name": "shop", "polygon": [[0.7, 0.7], [1, 0.7], [1, 1], [0.7, 1]]}]}
CAMERAS = [{"camera_id": "cam-lobby", "url": "/dev/null", "policy_id": "lobby",
            "zones": [{"name": "door", "polygon": [[10, 10], [40, 10], [40, 40]], "normalized": False}]},
           {"camera_id": "cam-street", "url": "/dev/null", "policy_id": "street",
            "zones": [{"name": "flat", "polygon": [[0, 0.5], [0.2, 0.5], [0.2, 0.9]]}]}]


def _camera_config(tmp_path: Path, **process) -> Path:
    pdir = tmp_path / "policies"
    pdir.mkdir(exist_ok=True)
    (pdir / "lobby.yaml").write_text(yaml.safe_dump(POLICY))
    (pdir / "street.yaml").write_text(yaml.safe_dump(STREET))
    raw = {"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "policies_dir": str(pdir), "ingest": {"cameras": CAMERAS},
           "process": {"policy_id": "lobby", "detect_every": 3, "face_max_side": 480,
                       # the legacy inline zones document: everywhere, and per camera
                       "zones": {"zones": [{"name": "sky", "polygon": [[0, 0], [1, 0], [1, 0.05]]}],
                                 "cameras": {"cam-street": [{"name": "bus-stop",
                                                             "polygon": [[0.4, 0.4], [0.5, 0.4], [0.5, 0.5]]}]}},
                       **process}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _stream_redactor(config: Path, camera_id: str):
    """The process stage's masker for a chunk of ``camera_id``, built as its chunk actor builds
    it: the plan from the config, routed by the chunk's policy id, the camera's zones on it."""
    from pipeline.process.actors import ChunkActor
    from schemas.config import load_config

    cfg = load_config(config)
    cam = next(c for c in cfg.ingest.cameras if c.camera_id == camera_id)
    plan = build_plan(cfg)
    actor = ChunkActor(plan, detectors=[])  # the plain class: its masker choice, no Ray
    return actor._redactor(plan.for_chunk(cam.policy_id), camera_id, tuple(dict(z) for z in cam.zones))


def _masked(redactor, camera_id: str):
    """One chunk of two noise frames masked from the same raw detections."""
    import numpy as np

    from operators.types import Boxes, Label

    frames = np.random.default_rng(7).integers(0, 256, (2, 120, 160, 3), dtype=np.uint8)
    raw = Boxes(np.array([[20, 20, 50, 60], [90, 30, 110, 50], [60, 80, 120, 100], [5, 60, 60, 118]], np.float32),
                np.array([0.55, 0.9, 0.8, 0.7], np.float32),
                np.array([Label.FACE, Label.FACE, Label.TEXT, Label.PERSON], np.int16))
    res = redactor.finish(frames, [raw, None], [], camera_id)
    return res.frames, res.boxes


@pytest.mark.parametrize("camera_id", ["cam-lobby", "cam-street"])
def test_redact_camera_masks_as_the_stream_masks_that_camera(tmp_path: Path, camera_id: str):
    from operators.redactor import Redactor
    from pipeline.cli import _camera_redaction

    config = _camera_config(tmp_path)
    args = _args(tmp_path, "--camera", camera_id, "--config", str(config))
    cfg, zones = _camera_redaction(args)
    stream = _stream_redactor(config, camera_id)
    assert cfg == stream.config  # classes, style, strength, thresholds, padding, detect_every, models
    assert cfg.detect_every == 3 and cfg.face_max_side == 480  # the config's, not redact's defaults
    ours = Redactor(cfg, zones=zones, detectors={})
    (out, boxes), (want, want_boxes) = _masked(ours, camera_id), _masked(stream, camera_id)
    assert (out == want).all()
    assert [b.xyxy.tolist() for b in boxes] == [b.xyxy.tolist() for b in want_boxes]
    # and the two cameras are masked differently (their policies and zones differ)
    other = "cam-street" if camera_id == "cam-lobby" else "cam-lobby"
    assert not (out == _masked(_stream_redactor(config, other), camera_id)[0]).all()


def test_redact_camera_zones_are_the_policys_the_legacy_documents_and_the_cameras(tmp_path: Path):
    from pipeline.cli import _camera_redaction

    args = _args(tmp_path, "--camera", "cam-street", "--config", str(_camera_config(tmp_path)))
    _, zones = _camera_redaction(args)
    assert sorted(z.name for z in zones.zones) == ["bus-stop", "flat", "shop", "sky"]


def test_redact_camera_with_policy_file_masks_with_that_version(tmp_path: Path):
    from pipeline.cli import _camera_redaction

    config = _camera_config(tmp_path)
    (tmp_path / "street-v3.yaml").write_text(yaml.safe_dump({**STREET, "version": 3, "style": "fill", "zones": []}))
    args = _args(tmp_path, "--camera", "cam-street", "--config", str(config), "--policy", str(tmp_path / "street-v3.yaml"))
    cfg, zones = _camera_redaction(args)
    assert cfg.style == "fill" and cfg.face_threshold == 0.6
    assert sorted(z.name for z in zones.zones) == ["bus-stop", "flat", "sky"]


@pytest.mark.parametrize("camera, policy, extra, message", [
    ("cam-nope", None, [], "veilstream: error: camera 'cam-nope' is not in the config's ingest.cameras "
                           "(cam-lobby, cam-street)"),
    ("cam-lobby", "street", [], "veilstream: error: camera 'cam-lobby' is masked under policy 'lobby', not 'street'"),
    ("cam-lobby", None, ["--style", "blur"], "veilstream: error: --camera masks as the stream does (config and "
                                             "policy decide): drop --style"),
    ("cam-lobby", None, ["--detect-every", "1"], "veilstream: error: --camera masks as the stream does (config "
                                                 "and policy decide): drop --detect-every"),
])
def test_redact_camera_errors_are_one_line(tmp_path: Path, capsys, camera, policy, extra, message):
    config = _camera_config(tmp_path)
    (tmp_path / "in.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "street.yaml").write_text(yaml.safe_dump(STREET))
    rc = main(["redact", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "o.mp4"), "--camera", camera,
               "--config", str(config), *(["--policy", str(tmp_path / f"{policy}.yaml")] if policy else []), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_USAGE and err == message


def test_redact_camera_routed_to_a_missing_policy_says_the_stream_dead_letters_it(tmp_path: Path, capsys):
    config = _camera_config(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc["ingest"]["cameras"][0]["policy_id"] = "gone"
    config.write_text(yaml.safe_dump(doc))
    (tmp_path / "in.mp4").write_bytes(b"\x00" * 64)
    rc = main(["redact", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "o.mp4"), "--camera", "cam-lobby",
               "--config", str(config)])
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_USAGE and "names policy 'gone'" in err and "dead-letters" in err and "\n" not in err
