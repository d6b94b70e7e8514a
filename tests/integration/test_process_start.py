"""On the real local Ray: process-stage actors that cannot fit a fixed cluster fail the stage at
start with one line and exit code 1 (not a silent hang), and a detector actor's normal stop logs
no "Task was destroyed" / "Event loop is closed" traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from pipeline.devstack import free_port
from tests.shared import MODELS

REPO = Path(__file__).resolve().parents[2]


def test_actors_that_do_not_fit_the_loopback_ray_fail_at_start_in_one_line(ray_local, tmp_path):
    # `make load ... --set ray.detector.replicas=2` on a 2-CPU local stack: 3 CPUs asked
    cfg = {"kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"},
           "metrics": {"port": free_port(), "startup_budget_s": 600},
           "ray": {"address": ray_local.address, "chunk_workers": 2, "worker_num_cpus": 0.5,
                   "detector": {"replicas": 2, "num_cpus": 1.0, "threads": 1}}}
    path = tmp_path / "load.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "process", "--config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VEILSTREAM_MODEL_DIR": str(MODELS)})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[-1] == (
        "veilstream: error: ray: chunk_workers 2 x worker_num_cpus 0.5 + detector.replicas 2 x detector.num_cpus 1.0 "
        "= 3.0 CPUs, the cluster has 2.0: lower ray.detector.num_cpus or replicas, or ray.chunk_workers or "
        "worker_num_cpus")
    assert "Traceback" not in proc.stderr


def test_a_detector_actor_stops_without_a_traceback():
    """On the real local Ray: a detector actor answers, then its small-frame lanes are built and
    their own batch loops serve small chunks, and it stops without a "Task was destroyed" /
    "Event loop is closed" traceback (``__ray_shutdown__`` stops every loop, not only the main one)."""
    script = textwrap.dedent("""
        import os, time, numpy as np, ray
        from pipeline.process.actors import DetectorActor
        from pipeline.process.plan import build_plan
        from schemas.config import parse_config
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=True)
        plan = build_plan(parse_config({"process": {"classes": ["face"], "detect_every": 1}}))
        d = ray.remote(DetectorActor).options(num_cpus=0.5, max_concurrency=64).remote(plan)
        print("detected", ray.get(d.detect.remote(np.zeros((2, 64, 96, 3), np.uint8))).failed, flush=True)
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
    assert proc.returncode == 0 and "detected []" in out and "stopped" in out, out[-3000:]
    assert "lane loops 2 lane runs" in out and "failed [[], [], []]" in out and "lane runs 0 " not in out, out[-3000:]
    assert "Task was destroyed" not in out and "Event loop is closed" not in out, out[-3000:]
