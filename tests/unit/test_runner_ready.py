"""``veilstream run`` / ``make demo`` start the cameras only once process answers /readyz."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.metrics import Probes, serve
from pipeline.runner import Workers
from schemas.errors import VeilStreamError


def _workers(tmp_path: Path, log_line: str, *, alive: bool = True) -> Workers:
    w = Workers(tmp_path / "cfg.yaml", tmp_path / "logs")
    log = w.log_dir / "process.log"
    log.write_text("metrics stage=process port=1 endpoint=on\n")  # an earlier run's line: ignored
    w.log_offsets["process"] = log.stat().st_size
    with open(log, "a") as f:
        f.write(log_line)
    code = "import time; time.sleep(30)" if alive else "raise SystemExit(4)"
    w.procs["process"] = subprocess.Popen([sys.executable, "-c", code])
    return w


def test_waits_until_process_answers_ready_on_the_port_it_logged_this_run(tmp_path: Path) -> None:
    probes = Probes("process")
    server = serve(probes, 0, "127.0.0.1")
    assert server is not None
    port = server.server_address[1]
    probes.tick()
    w = _workers(tmp_path, f"metrics stage=process port={port} endpoint=on\n")
    threading.Timer(1.5, lambda: setattr(probes, "ready", True)).start()
    try:
        t0 = time.monotonic()
        waited = w.wait_ready("process", 20.0)
        assert waited is not None and waited >= 1.0, waited  # not before the stage said ready
        assert time.monotonic() - t0 < 15.0
    finally:
        w.kill_all()
        server.shutdown()


def test_a_stage_that_exits_while_starting_is_an_error_not_a_hang(tmp_path: Path) -> None:
    w = _workers(tmp_path, "", alive=False)
    w.procs["process"].wait(10)
    with pytest.raises(VeilStreamError, match="process worker exited with code 4"):
        w.wait_ready("process", 20.0)


def test_a_stage_never_ready_times_out_with_where_to_look(tmp_path: Path) -> None:
    probes = Probes("process")
    server = serve(probes, 0, "127.0.0.1")
    assert server is not None
    w = _workers(tmp_path, f"metrics stage=process port={server.server_address[1]} endpoint=on\n")
    try:
        with pytest.raises(VeilStreamError, match=r"process worker not ready after 2s; see .*process\.log"):
            w.wait_ready("process", 2.0)
    finally:
        w.kill_all()
        server.shutdown()
