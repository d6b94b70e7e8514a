"""``veilstream redact INPUT -o OUT --keep-subject X,Y,W,H[@FRAME]`` on a real clip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_keep_subject_on_a_file_writes_mp4_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import av

    from operators.video import sample_video
    from pipeline.cli import main

    out = tmp_path / "subject.mp4"
    rc = main(["redact", str(sample_video("carphone_pristine.mp4")), "-o", str(out), "--keep-subject",
               "30,10,120,134@40", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["frames"] == 120 and rep["subject"]["frame"] == 40 and rep["track_kind"] == "person"
    assert rep["subject_visible_frames"] >= 0.9 * rep["frames"], rep  # one person, close-up: kept throughout
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 120
    # bad input: one line, non-zero
    for spec, needle in (("150,100,60,60@3", "outside the 176x144 frame"), ("1,2,3", "X,Y,W,H"),
                         ("30,10,120,134@500", "frames 0..119")):
        rc = main(["redact", str(sample_video("carphone_pristine.mp4")), "-o", str(tmp_path / "x.mp4"),
                   "--keep-subject", spec, "--quiet"])
        err = capsys.readouterr().err
        assert rc != 0 and needle in err and len(err.strip().splitlines()) == 1, err
