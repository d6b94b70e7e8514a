"""On the real local Ray: a detector actor whose small-frame lanes run their own batch loops
answers small chunks through them and stops without a "Task was destroyed" / "Event loop is
closed" traceback (every loop is stopped by ``__ray_shutdown__``, not only the main one)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.shared import MODELS

REPO = Path(__file__).resolve().parents[2]


def test_a_detector_actor_with_running_lane_loops_stops_without_a_traceback():
    script = textwrap.dedent("""
        import os, time, numpy as np, ray
        from pipeline.process.actors import DetectorActor
        from pipeline.process.plan import build_plan
        from schemas.config import parse_config
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=True)
        plan = build_plan(parse_config({"process": {"classes": ["face"], "detect_every": 1}}))
        d = ray.remote(DetectorActor).options(num_cpus=0.5, max_concurrency=64).remote(plan)
        loops = 0
        for _ in range(600):  # small chunks until the lanes are built and their loops serve them
            out = ray.get(d.detect_many.remote([np.zeros((1, 64, 96, 3), np.uint8)] * 3))
            assert all(o.failed == [] for o in out), out
            loops = ray.get(d.__ray_call__.remote(lambda self: len(self._lane_tasks)))
            if loops:
                break
            time.sleep(0.1)
        out = ray.get(d.detect_many.remote([np.zeros((1, 64, 96, 3), np.uint8)] * 3))
        runs = ray.get(d.__ray_call__.remote(lambda self: self.lane_runs))
        print("lane loops", loops, "lane runs", runs, "failed", [o.failed for o in out], flush=True)
        pid = ray.get(d.__ray_call__.remote(lambda self: os.getpid()))
        del d  # the last handle: Ray ends the actor gracefully (its __ray_shutdown__ runs)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        time.sleep(2)  # the actor's last log lines reach the driver
        ray.shutdown()
        print("stopped", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "VEILSTREAM_MODEL_DIR": str(MODELS), "PYTHONUNBUFFERED": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "lane loops 2 lane runs" in out and "stopped" in out, out[-3000:]
    assert "failed [[], [], []]" in out and "lane runs 0 " not in out, out[-3000:]
    assert "Task was destroyed" not in out and "Event loop is closed" not in out, out[-3000:]
