"""The production shape of the process stage, for real: `veilstream process --submit URL` submits
the stage as a Ray job through a real head's Jobs API (dashboard), the job's consumer actor
redacts what the raw topic holds, and stopping the submitter (its SIGTERM) stops the job with a drain (Ray
would SIGKILL the driver 3 s after its SIGTERM without the stop wait the submitter sets)."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.devstack import free_port
from pipeline.devstack.broker import create_topics
from pipeline.devstack.raylocal import start_ray_head
from pipeline.metrics import WorkerMetrics
from pipeline.process.submit import run_submitter
from schemas.config import parse_config
from schemas.messages import decode_chunk_redacted, encode_chunk
from tests.shared import MODELS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def jobs_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Ray head with its dashboard (the Jobs API) for the module's tests: ``url``. Each test's
    jobs carry its own unique name and are stopped by the test; a head start with the dashboard
    costs seconds of CPU, and its stop 3 s (Ray ignores SIGTERM: SIGKILL after the grace)."""
    dash = free_port()
    venv_bin = str(Path(sys.executable).parent)  # the job's entrypoint is `veilstream process`
    head = start_ray_head(tmp_path_factory.mktemp("ray-jobs-head"), num_cpus=2, object_store_mb=256,
                          dashboard_port=dash, timeout_s=120,
                          env_extra={"PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
                                     "VEILSTREAM_MODEL_DIR": str(MODELS)})
    try:
        yield f"http://127.0.0.1:{dash}"
    finally:
        head.stop()


def test_submitted_job_redacts_and_sigterm_drains_it(broker: Any, jobs_head: str, unique_name: str,
                                                    tmp_path: Path) -> None:
    from ray.job_submission import JobSubmissionClient
    from test_process import carphone_chunks, committed, consume_all, produce

    name = unique_name
    topics = {"raw": f"{name}-raw", "redacted": f"{name}-red", "dlq": f"{name}-dlq",
              "cameras": f"{name}-cams", "audit": f"{name}-audit"}
    create_topics(broker.bootstrap, {topics["raw"]: 2, topics["redacted"]: 2, topics["dlq"]: 1})
    raw = {"kafka": {"bootstrap_servers": broker.bootstrap, "topics": topics, "session_timeout_ms": 6000},
           "ray": {"address": "auto", "consumers": 1, "chunk_workers": 1, "worker_num_cpus": 0.25,
                   "detector": {"num_cpus": 0.25, "replicas": 1}},
           "process": {"consumer_group": f"{name}-g", "style": "fill", "drain_timeout_s": 20.0,
                       "model_dir": str(MODELS), "status_interval_s": 2.0},
           "metrics": {"host": "127.0.0.1", "port": free_port()}}
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    cfg = parse_config(raw)
    (first,) = carphone_chunks()[:1]  # one 4 s GOP; the second chunk is its successor
    chunks = [first, dataclasses.replace(first, chunk_seq=1, captured_at_ms=first.captured_at_ms + 4000)]
    produce(cfg, [(v, list(h), c.camera_id) for c in chunks for v, h in [encode_chunk(c)]])

    url = jobs_head
    # the submitter in this process (its own probe server would take the job's metrics.port: on
    # Kubernetes they are different pods); `stop` is what its SIGTERM handler sets
    stop, lines, rc = threading.Event(), [], []
    sub = threading.Thread(target=lambda: rc.append(run_submitter(
        cfg_path, url, stop, name=name[:40], poll_s=1.0, log=lines.append, metrics=WorkerMetrics("submit"))))
    sub.start()
    try:
        out = consume_all(cfg, topics["redacted"], len(chunks), timeout_s=240)
        assert len(out) == len(chunks), lines
        for m in out:
            r = decode_chunk_redacted(m.value(), m.headers())
            assert r.fail_closed_frames == () and r.masks_per_class["face"] >= len(r.pts_ms)
        # the job's driver serves every consumer's veil_process_* families on metrics.port (what
        # the chart's ServiceMonitor scrapes on the head)
        pattern = re.compile(r'^veil_process_chunks_out_total\{[^}]*consumer="0"[^}]*\} 2\.0$', re.M)
        body, deadline = "", time.monotonic() + 20  # the driver polls its consumers every 2 s
        while not pattern.search(body) and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{raw['metrics']['port']}/metrics", timeout=5) as resp:
                body = resp.read().decode()
            time.sleep(0.5)
        assert pattern.search(body), body[-2000:]
        client = JobSubmissionClient(url)
        (job,) = [j for j in client.list_jobs() if j.submission_id and j.submission_id.startswith(name[:40])]
        assert str(job.status.value) == "RUNNING"
        assert job.runtime_env["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"] == str(int(20 + 30 + 15))

        # two more chunks, in flight when the stop comes (4 s of detection each here): the drain
        # finishes them, flushes and commits, well past Ray's default 3 s before SIGKILL
        more = [dataclasses.replace(first, chunk_seq=k, captured_at_ms=first.captured_at_ms + 4000 * k) for k in (2, 3)]
        produce(cfg, [(v, list(h), c.camera_id) for c in more for v, h in [encode_chunk(c)]])
        time.sleep(2.0)
        stop.set()
        sub.join(120)
        assert rc == [0], lines
        assert str(client.get_job_status(job.submission_id).value) == "STOPPED"
        logs = client.get_job_logs(job.submission_id)
        # the driver got SIGTERM, stopped its consumer, which drained and committed: a clean exit
        assert "process job stopping 1 consumer actor(s)" in logs, logs[-3000:]
        done = len(consume_all(cfg, topics["redacted"], 4, timeout_s=15))
        assert f"process job stopped: 1 of 1 consumer(s) drained and committed, produced={done}" in logs, logs[-3000:]
        assert committed(cfg) == done >= 2
    finally:
        stop.set()
        sub.join(120)


def test_a_new_revision_takes_over_from_the_old_job_without_a_gap(broker: Any, jobs_head: str, unique_name: str,
                                                                  tmp_path: Path) -> None:
    """The chart's surge-first rollout on a real head: submitter A (pod-template-hash r1) runs its
    job; submitter B (r2, same config and policies) submits a second job beside it in the same
    consumer group, whose driver waits for the metrics port A's driver holds; B turns ready only
    once its consumers consume; then A's SIGTERM stops A's job (drain, commit). Every chunk comes
    out redacted by the uploaded policy (the Ray pods mount no policies), B's job keeps running."""
    from ray.job_submission import JobSubmissionClient
    from test_process import carphone_chunks, committed, consume_all, produce

    name = unique_name
    topics = {"raw": f"{name}-raw", "redacted": f"{name}-red", "dlq": f"{name}-dlq",
              "cameras": f"{name}-cams", "audit": f"{name}-audit"}
    create_topics(broker.bootstrap, {topics["raw"]: 2, topics["redacted"]: 2, topics["dlq"]: 1})
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "default.yaml").write_text("policy_id: default\nversion: 3\nclasses: [face]\nstyle: fill\n")
    raw = {"kafka": {"bootstrap_servers": broker.bootstrap, "topics": topics, "session_timeout_ms": 6000},
           "policies_dir": str(pol),
           "ray": {"address": "auto", "consumers": 1, "chunk_workers": 1, "worker_num_cpus": 0.25,
                   "detector": {"num_cpus": 0.25, "replicas": 1}},
           "process": {"consumer_group": f"{name}-g", "drain_timeout_s": 20.0,
                       "model_dir": str(MODELS), "status_interval_s": 2.0},
           "metrics": {"host": "127.0.0.1", "port": free_port()}}
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    cfg = parse_config(raw)
    (first,) = carphone_chunks()[:1]
    sent: list[Any] = []

    def more(n: int) -> None:
        batch = [dataclasses.replace(first, chunk_seq=len(sent) + k, captured_at_ms=first.captured_at_ms + 4000 * k)
                 for k in range(n)]
        sent.extend(batch)
        produce(cfg, [(v, list(h), c.camera_id) for c in batch for v, h in [encode_chunk(c)]])

    url = jobs_head
    subs: dict[str, dict[str, Any]] = {}

    def submitter(rev: str) -> dict[str, Any]:
        s: dict[str, Any] = {"stop": threading.Event(), "lines": [], "rc": [], "metrics": WorkerMetrics("submit")}
        s["thread"] = threading.Thread(target=lambda: s["rc"].append(run_submitter(
            cfg_path, url, s["stop"], name=name[:30], poll_s=1.0, log=s["lines"].append, metrics=s["metrics"],
            revision=rev)), daemon=True)
        s["thread"].start()
        return s

    def wait_ready(s: dict[str, Any]) -> None:
        deadline = time.monotonic() + 240
        while not s["metrics"].ready and time.monotonic() < deadline:
            assert s["thread"].is_alive(), s["lines"]
            time.sleep(0.5)
        assert s["metrics"].ready, s["lines"]

    try:
        subs["a"] = submitter("r1")
        wait_ready(subs["a"])
        more(1)
        assert len(consume_all(cfg, topics["redacted"], 1, timeout_s=240)) == 1
        subs["b"] = submitter("r2")  # the surge pod: A is still running
        wait_ready(subs["b"])
        client = JobSubmissionClient(url)
        jobs = {j.submission_id: str(j.status.value) for j in client.list_jobs()
                if j.submission_id and j.submission_id.startswith(name[:30])}
        (ja,) = [j for j in jobs if j.startswith(f"{name[:30]}-r1-")]
        (jb,) = [j for j in jobs if j.startswith(f"{name[:30]}-r2-")]
        assert jobs[ja] == jobs[jb] == "RUNNING"  # two jobs, one group: B consumes before A stops
        more(2)
        time.sleep(2.0)
        subs["a"]["stop"].set()  # the old pod's SIGTERM, once the new one is ready
        subs["a"]["thread"].join(120)
        assert subs["a"]["rc"] == [0], subs["a"]["lines"]
        assert str(client.get_job_status(ja).value) == "STOPPED"
        more(1)  # after the handover: only B's job consumes
        out = consume_all(cfg, topics["redacted"], len(sent), timeout_s=300)
        deadline = time.monotonic() + 60
        while committed(cfg) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed(cfg) == len(sent)
        dlq = consume_all(cfg, topics["dlq"], 1, timeout_s=3)
        assert str(client.get_job_status(jb).value) == "RUNNING" and subs["b"]["metrics"].ready
        # B's driver serves the metrics once A's freed the port
        body, deadline = "", time.monotonic() + 30
        while "veil_process_consumers_desired" not in body and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{raw['metrics']['port']}/metrics", timeout=5) as r:
                    body = r.read().decode()
            except OSError:
                pass
            time.sleep(1.0)
        assert "veil_process_consumers_desired 1.0" in body, client.get_job_logs(jb)[-3000:]
        logs_a = client.get_job_logs(ja)
        assert "process job stopped: 1 of 1 consumer(s) drained and committed" in logs_a, logs_a[-3000:]
        # the job ran the code its submitter shipped (py_modules), not the Ray node's installed copy
        code = re.search(r"consumer actor\(s\) started in the cluster; code from (\S+)", logs_a)
        assert code and "runtime_resources" in code.group(1) and not code.group(1).startswith(
            str(Path(__file__).resolve().parents[2])), logs_a[-3000:]
        assert client.get_job_info(jb).runtime_env["py_modules"]
    finally:
        for s in subs.values():
            s["stop"].set()
        for s in subs.values():
            s["thread"].join(120)
    got = [decode_chunk_redacted(m.value(), m.headers()) for m in out]
    assert {r.chunk_seq for r in got} == {c.chunk_seq for c in sent} and dlq == []
    assert all((r.policy_id, r.policy_version) == ("default", 3) and r.fail_closed_frames == () for r in got)
