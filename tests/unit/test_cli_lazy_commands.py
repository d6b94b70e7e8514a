"""``veilstream redact`` (and ``eval``) build only their own parser: the other commands' modules
(``pipeline.ops`` with ``importlib.metadata``, ``pipeline.governance``, ``pipeline.sizing``,
``pipeline.commands``) are not imported on redact's start path, and the command parses exactly as
with the full parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from operators.video import sample_video
from schemas.errors import UsageError

OTHERS = ("pipeline.ops", "pipeline.governance", "pipeline.sizing", "pipeline.commands", "importlib.metadata")

PARSE = """
import json, sys
from pipeline.cli import _own_command, build_parser
argv = {argv!r}
own = _own_command(argv)
args = build_parser(None if own is None else (own,)).parse_args(argv)
print(json.dumps(sorted(m for m in {others!r} if m in sys.modules)))
"""


def _loaded_after_parsing(argv: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PARSE.format(argv=argv, others=OTHERS)], capture_output=True,
                         text=True, timeout=120, check=True)
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_parsing_a_redact_command_imports_no_other_command_module():
    assert _loaded_after_parsing(["--debug", "redact", "in.mp4", "-o", "out.mp4", "--quiet"]) == []


def test_another_command_still_builds_every_parser():
    assert set(_loaded_after_parsing(["version"])) >= {"pipeline.ops", "pipeline.governance", "pipeline.sizing",
                                                       "pipeline.commands"}


@pytest.mark.parametrize(("argv", "own"), [
    ([], None),
    (["redact"], "redact"),
    (["eval", "all"], "eval"),
    (["--debug", "redact", "x"], "redact"),
    (["--log-level", "DEBUG", "redact", "x"], "redact"),
    (["--log-level=DEBUG", "--debug", "eval"], "eval"),
    (["--log-level", "redact"], None),          # "redact" is the level's value; no command follows
    (["-h", "redact"], None),                   # top-level help lists every command
    (["--help"], None),
    (["--deb", "redact"], None),                # an abbreviation: the full parser decides
    (["version"], None),
    (["config", "check"], None),
])
def test_own_command(argv, own):
    from pipeline.cli import _own_command

    got = _own_command(argv)
    assert (None if got is None else got.__name__.removeprefix("add_")) == own


REDACT_ARGVS = [
    ["redact", "in.mp4", "-o", "out.mp4"],
    ["--debug", "redact", "in.mp4", "-o", "o/", "--classes", "face,person", "--style", "blur", "--detect-every", "2",
     "--keep-audio", "--json", "--max-pixels", "100", "--quiet"],
    ["--log-level", "DEBUG", "eval", "plates_eu", "--limit", "3", "--as-video", "--video-every", "1,4"],
]


@pytest.mark.parametrize("argv", REDACT_ARGVS)
def test_the_own_parser_parses_as_the_full_one(argv):
    from pipeline.cli import _own_command, build_parser

    own = _own_command(argv)
    assert own is not None
    assert vars(build_parser((own,)).parse_args(argv)) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [
    ["redact", "in.mp4"],                                   # -o missing
    ["redact", "in.mp4", "-o", "o.mp4", "--detect-every", "x"],
    ["redact", "in.mp4", "-o", "o.mp4", "--bogus"],
    ["eval", "all", "--sweep-family", "nope"],
])
def test_the_own_parser_rejects_as_the_full_one(argv):
    from pipeline.cli import _own_command, build_parser

    own = _own_command(argv)
    assert own is not None
    with pytest.raises(UsageError) as full:
        build_parser().parse_args(argv)
    with pytest.raises(UsageError) as mine:
        build_parser((own,)).parse_args(argv)
    assert str(mine.value) == str(full.value)


def test_redact_help_is_the_same(capsys):
    from pipeline.cli import add_redact, build_parser

    texts = []
    for parser in (build_parser(), build_parser((add_redact,))):
        with pytest.raises(SystemExit):
            parser.parse_args(["redact", "--help"])
        texts.append(capsys.readouterr().out)
    assert "--keep-subject" in texts[0] and texts[0] == texts[1]


def test_top_level_help_lists_every_command(capsys):
    from pipeline.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("redact", "eval", "version", "config", "plan", "audit"):
        assert name in out


def test_commands_is_every_command_in_help_order():
    from pipeline.cli import COMMANDS, add_eval, add_redact, all_commands

    assert COMMANDS[:2] == (add_redact, add_eval) and COMMANDS == all_commands() and len(COMMANDS) > 10


RUN = """
import atexit, sys
atexit.register(lambda: print("LOADED", sorted(m for m in {others!r} if m.startswith("pipeline.") and m in sys.modules)))
from pipeline.cli import main
sys.exit(main())
"""


def test_a_whole_redact_run_imports_no_other_command_module(tmp_path: Path):
    out = tmp_path / "out.mp4"
    proc = subprocess.run([sys.executable, "-c", RUN.format(others=OTHERS), "redact",
                           str(sample_video("carphone_pristine.mp4")), "-o", str(out), "--quiet",
                           "--detect-every", "8"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 0
    assert "LOADED []" in proc.stdout.splitlines()
