"""make load stops with a stage's own one-line error when the stage exits (e.g. the process
stage's start-up check that its actors fit the local Ray) instead of streaming on and
reporting 0 stored. Fake stages are real child processes that log and exit like the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load_tests"))
import pipeline_load  # noqa: E402
from pipeline_load import StageExitedError, _fail_if_exited, exited_stage  # noqa: E402

RAY_LINE = ("ray: chunk_workers 2 x worker_num_cpus 0.5 + detector.replicas 3 x detector.num_cpus 1.0 = 4.0 CPUs, "
            "the cluster has 2.0: lower ray.detector.num_cpus or replicas, or ray.chunk_workers or worker_num_cpus")


def fake_stage(log: Path, lines: list[str], code: int | None) -> subprocess.Popen[bytes]:
    """A child that writes ``lines`` to ``log`` (as the runner's stages do) and exits ``code``
    (``None``: keeps running)."""
    body = "import sys, time\nsys.stdout.write(sys.argv[1]); sys.stdout.flush()\n"
    body += "time.sleep(60)\n" if code is None else f"sys.exit({code})\n"
    with open(log, "ab") as f:
        p = subprocess.Popen([sys.executable, "-c", body, "".join(ln + "\n" for ln in lines)], stdout=f)
    if code is not None:
        p.wait(30)
    return p


@pytest.fixture
def running():
    procs = []
    yield procs
    for p in procs:
        p.kill()
        p.wait(10)


def test_no_stage_then_running_stages_are_not_an_exit(tmp_path, running):
    assert exited_stage({}, tmp_path) is None
    running.append(fake_stage(tmp_path / "sink.log", ["metrics stage=sink port=1"], None))
    assert exited_stage({"sink": running[0]}, tmp_path) is None


def test_the_stage_error_line_is_reported_in_one_line(tmp_path, running):
    running.append(fake_stage(tmp_path / "sink.log", [], None))
    log = tmp_path / "process.log"
    log.write_text("veilstream: error: an older run's error\n")
    offset = log.stat().st_size
    proc = fake_stage(log, ["2026-12-05 18:31:48,945 INFO pipeline.metrics metrics stage=process port=41339",
                            f"veilstream: error: {RAY_LINE}"], 1)
    line = exited_stage({"sink": running[0], "process": proc}, tmp_path, {"process": offset})
    assert line == f"process stage exited with code 1: {RAY_LINE} (log: {log})"
    assert "\n" not in line and "older run" not in line


def test_an_exit_without_an_error_line_names_its_last_line_and_code(tmp_path):
    proc = fake_stage(tmp_path / "ingest.log", ["first", "Killed", ""], 3)
    assert exited_stage({"ingest": proc}, tmp_path) == (
        f"ingest stage exited with code 3: Killed (log: {tmp_path / 'ingest.log'})")
    empty = fake_stage(tmp_path / "sink.log", [], 0)  # a clean exit the run did not ask for counts too
    assert exited_stage({"sink": empty}, tmp_path) == (
        f"sink stage exited with code 0: nothing logged (log: {tmp_path / 'sink.log'})")


def test_main_prints_the_line_and_exits_1_instead_of_a_report(tmp_path, monkeypatch, capsys):
    proc = fake_stage(tmp_path / "process.log", [f"veilstream: error: {RAY_LINE}"], 1)
    workers = SimpleNamespace(procs={"process": proc}, log_offsets={"process": 0})

    def run_once(*_a, **_k):  # what run_once's window loop does once a stage has exited
        _fail_if_exited(workers, tmp_path)
        raise AssertionError("not reached")

    monkeypatch.setattr(pipeline_load, "run_once", run_once)
    monkeypatch.setattr(pipeline_load, "prepare_source", lambda *a: tmp_path / "src.mp4")
    out = tmp_path / "load.json"
    monkeypatch.setattr(sys, "argv", ["pipeline_load.py", "--cameras", "1", "--seconds", "5",
                                      "--json-out", str(out), "--state-dir", str(tmp_path / "state")])
    assert pipeline_load.main() == 1
    cap = capsys.readouterr()
    assert cap.err.splitlines() == [f"pipeline_load: error: process stage exited with code 1: {RAY_LINE} "
                                    f"(log: {tmp_path / 'process.log'})"]
    assert "stored" not in cap.out and not out.exists()  # no table, no JSON of a run that did not happen
    with pytest.raises(StageExitedError):
        _fail_if_exited(workers, tmp_path)
