"""``veilstream redact`` run as the program leaves with ``os._exit`` after a normal exit's own
steps: the output and the summary are complete, the exit code is the command's, non-daemon
threads are joined and every atexit hook runs (only the interpreter's teardown is skipped)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av

from operators.video import sample_video

PROGRAM = """
import atexit, sys, threading, time
from pathlib import Path
marker = Path(sys.argv.pop(1))
atexit.register(lambda: marker.with_suffix(".atexit").write_text("ran"))
def late():
    time.sleep(0.5)
    marker.with_suffix(".thread").write_text("joined")
threading.Thread(target=late, daemon=False).start()
class Finalised:  # freed only by the interpreter's teardown
    def __del__(self):
        marker.with_suffix(".teardown").write_text("ran")
kept = Finalised()
from pipeline.cli import main
sys.exit(main())
"""


def _program(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path / "marker"), *args],
                          capture_output=True, text=True, timeout=300)


def test_redact_exits_after_hooks_threads_and_output(tmp_path):
    src = sample_video("carphone_pristine.mp4")
    out = tmp_path / "o.mp4"
    proc = _program(tmp_path, "redact", str(src), "-o", str(out), "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])  # stdout flushed before the exit
    assert summary["frames"] == 120
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 120
    assert (tmp_path / "marker.atexit").read_text() == "ran"
    assert (tmp_path / "marker.thread").read_text() == "joined"
    assert not list(tmp_path.glob("*.part.mp4"))
    assert not (tmp_path / "marker.teardown").exists()  # the teardown was skipped


def test_other_commands_keep_the_interpreters_teardown(tmp_path):
    proc = _program(tmp_path, "--help")
    assert proc.returncode == 0
    assert (tmp_path / "marker.teardown").read_text() == "ran"


def test_redact_error_keeps_its_exit_code_and_one_line(tmp_path):
    proc = _program(tmp_path, "redact", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o.mp4"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"veilstream: error: input '{tmp_path / 'missing.mp4'}' does not exist"]
    assert (tmp_path / "marker.atexit").read_text() == "ran"
    assert (tmp_path / "marker.thread").read_text() == "joined"


def test_usage_error_exit_code_is_kept(tmp_path):
    src = sample_video("carphone_pristine.mp4")
    proc = _program(tmp_path, "redact", str(src), "-o", str(tmp_path / "o.mp4"), "--detect-every", "0")
    assert proc.returncode == 2
    assert "--detect-every" in proc.stderr


def test_main_called_with_argv_returns_instead_of_exiting(tmp_path):
    from pipeline.cli import main

    assert main(["redact", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o.mp4")]) == 1
