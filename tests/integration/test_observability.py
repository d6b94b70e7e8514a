"""The three workers as production runs them (`veilstream ingest|process|sink`, each its own
process) on the local stack: the probe server answers before Ray is up, /readyz turns 200 only
once the worker consumes, and every metric the chart's alerts, dashboard and sink autoscaling
read is one the running workers actually export (names scraped from /metrics)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.devstack import free_port
from pipeline.devstack.broker import create_topics
from tests.shared import MODELS as SHARED_MODELS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODELS = SHARED_MODELS
JOB_DRIVER_ONLY = {"veil_process_consumers", "veil_process_consumers_desired",
                   "veil_process_consumers_up"}  # job mode, not a local worker


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def exported(body: str) -> set[str]:
    """Metric family names of an exposition (counters as `<name>_total`, as PromQL sees them)."""
    out = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", body, flags=re.M):
        out.add(f"{name}_total" if kind == "counter" and not name.endswith("_total") else name)
    return out


def test_running_workers_probe_first_and_export_every_metric_the_chart_reads(broker, s3, ray_local, unique_name,
                                                                             tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_chart_operations import expressions, metric_names
    from test_deploy import _rendered

    (tmp_path / "ak").write_text(s3.access_key)
    (tmp_path / "sk").write_text(s3.secret_key)
    name = unique_name
    topics = {r: f"{name}-{r}" for r in ("raw", "redacted", "dlq", "cameras", "audit")}
    create_topics(broker.bootstrap, {t: 1 for t in topics.values()}, per_topic={topics["cameras"]: {
        "cleanup.policy": "compact"}})
    ports = {stage: free_port() for stage in ("ingest", "process", "sink")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    env = {**os.environ, "VEILSTREAM_MODEL_DIR": str(MODELS), "PYTHONUNBUFFERED": "1"}
    try:
        seen_starting = False
        for stage, port in ports.items():
            cfg = tmp_path / f"{stage}.yaml"
            cfg.write_text(yaml.safe_dump({
                "kafka": {"bootstrap_servers": broker.bootstrap, "topics": topics, "session_timeout_ms": 6000},
                "object_store": {"endpoint": s3.endpoint, "bucket": f"{name}-red"[:63], "secure": False,
                                 "access_key_file": str(tmp_path / "ak"), "secret_key_file": str(tmp_path / "sk")},
                "ray": {"address": ray_local.address, "chunk_workers": 1, "worker_num_cpus": 0.25,
                        "detector": {"num_cpus": 0.25}},
                "ingest": {"consumer_group": f"{name}-i"},
                "process": {"consumer_group": f"{name}-p", "status_interval_s": 1.0},
                "sink": {"consumer_group": f"{name}-s", "status_interval_s": 1.0},
                "metrics": {"host": "127.0.0.1", "port": port},
            }))
            log = open(tmp_path / f"{stage}.log", "wb")  # noqa: SIM115 - closed with the process
            procs[stage] = subprocess.Popen([sys.executable, "-m", "pipeline.cli", stage, "--config", str(cfg)],
                                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            if stage == "process":
                # probes first: the very first answer of /healthz comes while Ray and the actors
                # still start (live, not ready). Watched alone, polled tightly: nothing else sleeps.
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    assert procs[stage].poll() is None, (tmp_path / f"{stage}.log").read_text()[-3000:]
                    code, body = get(port, "/healthz")
                    if code:
                        seen_starting = code == 200 and "starting" in body and get(port, "/readyz")[0] == 503
                        break
                    time.sleep(0.02)

        # every stage turns ready once it consumes
        deadline = time.monotonic() + 240
        bodies: dict[str, str] = {}
        while time.monotonic() < deadline and len(bodies) < 3:
            for stage, port in ports.items():
                assert procs[stage].poll() is None, (tmp_path / f"{stage}.log").read_text()[-3000:]
                ready, _ = get(port, "/readyz")
                if ready == 200 and stage not in bodies:
                    time.sleep(1.5)  # one status interval: the lag / backlog gauges get their samples
                    bodies[stage] = get(port, "/metrics")[1]
            time.sleep(0.1)
        assert len(bodies) == 3, {s: (tmp_path / f"{s}.log").read_text()[-2000:] for s in ports if s not in bodies}
        assert seen_starting, "the process worker's probe server did not answer before Ray was ready"

        names = set().union(*(exported(b) for b in bodies.values()))
        assert "veil_sink_backlog_chunks" in names and "veil_process_latency_seconds" in names
        # the job driver's own gauges: test_process_job_driver_serves_every_consumer_actors_metrics_on_one_port
        names |= JOB_DRIVER_ONLY
        for which in ("small", "city"):
            exprs = expressions(list(_rendered(which)))
            missing = {k: sorted(metric_names(e) - names) for k, e in exprs.items() if metric_names(e) - names}
            assert not missing, missing
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def test_process_job_driver_serves_every_consumer_actors_metrics_on_one_port(broker, ray_local, unique_name):
    """Job mode (ray.consumers: 2): the supervising driver serves ONE endpoint on metrics.port with
    the merged veil_process_* families of both consumer actors, each sample labelled with its
    consumer, under the names the chart's alerts and dashboard read; /readyz once both consume."""
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from prometheus_client.parser import text_string_to_metric_families
    from test_chart_operations import expressions, metric_names
    from test_deploy import _rendered

    from pipeline.process.consumers import supervise
    from schemas.config import parse_config

    topics = {r: f"{unique_name}-{r}" for r in ("raw", "redacted", "dlq", "cameras", "audit")}
    create_topics(broker.bootstrap, {topics["raw"]: 2, topics["redacted"]: 1, topics["dlq"]: 1})
    port = free_port()
    cfg = parse_config({
        "kafka": {"bootstrap_servers": broker.bootstrap, "topics": topics, "session_timeout_ms": 6000},
        "ray": {"address": ray_local.address, "consumers": 2, "chunk_workers": 1, "worker_num_cpus": 0.25,
                "detector": {"num_cpus": 0.25, "replicas": 1}},
        "process": {"consumer_group": f"{unique_name}-g", "status_interval_s": 1.0, "model_dir": str(MODELS)},
        "metrics": {"host": "127.0.0.1", "port": port},
    })
    stop = threading.Event()
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(supervise(cfg, stop, poll_s=0.5)), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 120
        first = 0
        while not first and time.monotonic() < deadline:
            first = get(port, "/healthz")[0]
            time.sleep(0.02)
        assert first == 200  # probes answer while Ray and the actors start
        while get(port, "/readyz")[0] != 200 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.2)
        assert get(port, "/readyz")[0] == 200, result
        time.sleep(1.5)  # a status interval: the lag gauges get their samples
        code, body = get(port, "/metrics")
        assert code == 200 and get(port, "/healthz") == (200, "ok running\n")
    finally:
        stop.set()
        t.join(180)
    assert result == [0]
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    up = {s.name: s.value for n in ("veil_process_consumers", "veil_process_consumers_up") for s in fams[n].samples}
    assert up == {"veil_process_consumers": 2, "veil_process_consumers_up": 2}
    consumers_of = {f.name: {s.labels.get("consumer") for s in f.samples} for f in fams.values()
                    if f.name.startswith("veil_process_") and f.samples and f.name not in JOB_DRIVER_ONLY}
    assert consumers_of["veil_process_latency_seconds"] == {"0", "1"}
    assert consumers_of["veil_process_inflight_chunks"] == {"0", "1"}
    assert all(c <= {"0", "1"} and None not in c for c in consumers_of.values()), consumers_of
    names = exported(body)
    process_read = {n for which in ("small", "city") for e in expressions(list(_rendered(which))).values()
                    for n in metric_names(e) if n.startswith("veil_process_")}
    assert JOB_DRIVER_ONLY < process_read and not process_read - names, sorted(process_read - names)
