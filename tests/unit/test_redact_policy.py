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
