"""The process job driver's one endpoint for its consumer actors (pipeline/process/consumers.py):
merged families with a ``consumer`` label, probes that follow the consumers, and a poll that a
silent or dead actor cannot hang. Fakes stand in for Ray; real HTTP on loopback."""

from __future__ import annotations

import threading
import time
from typing import Any
from unittest.mock import patch

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_metrics import get

from pipeline.metrics import WorkerMetrics, serve
from pipeline.process.consumers import JobMetrics, _watch, families_of


def worker(chunks: int, latencies: list[float], lag: dict[str, int]) -> WorkerMetrics:
    m = WorkerMetrics("process")
    m.chunks_in.labels(camera="all").inc(chunks)
    m.fail_closed.inc(chunks // 2)
    m.errors.labels(kind="detector").inc()
    for v in latencies:
        m.latency.observe(v)
    for p, v in lag.items():
        m.lag.labels(partition=p).set(v)
    return m


def snap(m: WorkerMetrics, index: int, *, ready: bool = True, phase: str = "running") -> dict[str, Any]:
    return {"index": index, "ready": ready, "phase": phase, "produced": 0, "exit_code": None, "error": None,
            "families": families_of(m.registry)}


@pytest.fixture
def job():
    m = JobMetrics(2)
    m.starting_until = time.monotonic() + 60
    server = serve(m, 0, host="127.0.0.1")
    yield m, server.server_address[1]
    server.shutdown()


def samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def test_merged_families_keep_the_worker_names_and_label_each_consumer(job):
    jm, port = job
    a, b = worker(3, [0.2, 4.0], {"0": 7}), worker(5, [30.0], {"1": 2})
    jm.observe({0: snap(a, 0), 1: snap(b, 1)})
    code, body = get(port, "/metrics")
    assert code == 200
    got = samples(body)  # the parser rejects an invalid exposition

    def val(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    assert val("veil_process_chunks_in_total", camera="all", consumer="0") == 3
    assert val("veil_process_chunks_in_total", camera="all", consumer="1") == 5
    assert val("veil_process_fail_closed_frames_total", consumer="1") == 2
    assert val("veil_process_consumer_lag_messages", partition="0", consumer="0") == 7
    assert val("veil_process_latency_seconds_count", consumer="0") == 2
    assert val("veil_process_latency_seconds_bucket", le="+Inf", consumer="1") == 1
    assert val("veil_process_latency_seconds_bucket", le="5.0", consumer="0") == 2
    assert val("veil_process_latency_seconds_bucket", le="0.25", consumer="0") == 1
    assert val("veil_process_consumers") == 2 and val("veil_process_consumers_up") == 2
    # exactly the sample names a single worker exports (the chart's alerts read them), nothing renamed
    single = {n for (n, _l) in samples(generate_latest(a.registry).decode())}
    merged = {n for (n, _l) in got}
    assert single <= merged
    job_level = {"veil_process_consumers", "veil_process_consumers_desired", "veil_process_consumers_up"}
    assert merged - single == job_level and val("veil_process_consumers_desired") == 2
    # every veil_process_* sample carries the consumer label
    assert all(dict(lbl).get("consumer") in ("0", "1") for (n, lbl) in got if n not in job_level)
    # scaling on lag: running, desired and the lag the scaler read
    jm.set_consumers(2, 3, 812)
    got = samples(get(port, "/metrics")[1])
    assert (val("veil_process_consumers"), val("veil_process_consumers_desired"),
            val("veil_process_raw_lag_chunks")) == (2, 3, 812)
    # the types survive: counters stay counters, histograms histograms
    types = {f.name: f.type for f in text_string_to_metric_families(body)}
    assert types["veil_process_chunks_in"] == "counter" and types["veil_process_latency_seconds"] == "histogram"


def test_a_consumer_that_did_not_answer_is_absent_not_stale_and_not_ready(job):
    jm, port = job
    a, b = worker(3, [], {}), worker(5, [], {})
    jm.observe({0: snap(a, 0), 1: snap(b, 1)})
    assert get(port, "/readyz")[0] == 200
    jm.observe({1: snap(b, 1)})  # consumer 0 did not answer this poll
    got = samples(get(port, "/metrics")[1])
    assert got[("veil_process_consumers_up", frozenset())] == 1
    assert not any(dict(lbl).get("consumer") == "0" for (_n, lbl) in got)
    assert got[("veil_process_chunks_in_total", frozenset({("camera", "all"), ("consumer", "1")}))] == 5
    assert get(port, "/readyz")[0] == 503


def test_probes_follow_the_consumers(job):
    jm, port = job
    a, b = worker(0, [], {}), worker(0, [], {})
    code, body = get(port, "/healthz")
    assert code == 200 and "starting" in body and get(port, "/readyz")[0] == 503  # before any answer
    jm.observe({0: snap(a, 0), 1: snap(b, 1, ready=False, phase="starting")})
    assert "starting" in get(port, "/healthz")[1] and get(port, "/readyz")[0] == 503
    jm.observe({0: snap(a, 0), 1: snap(b, 1)})
    assert get(port, "/healthz") == (200, "ok running\n") and get(port, "/readyz")[0] == 200
    jm.stall_seconds = 0.2  # a consumer whose loop stalled stops the driver's clock: /healthz turns red
    jm.observe({0: snap(a, 0), 1: snap(b, 1, phase="stalled")})
    time.sleep(0.3)
    jm.observe({0: snap(a, 0), 1: snap(b, 1, phase="stalled")})
    assert get(port, "/healthz")[0] == 503 and get(port, "/readyz")[0] == 503


def test_startup_past_its_budget_turns_healthz_red(job):
    jm, port = job
    jm.starting_until = time.monotonic() - 1
    assert get(port, "/healthz")[0] == 503


# ---------------------------------------------------------------- the poll, Ray faked


class Ref:
    def __init__(self, value: Any = None, exc: BaseException | None = None, done: bool = True) -> None:
        self.value, self.exc, self.done = value, exc, done

    def hex(self) -> str:
        return f"{id(self):x}"


class FakeRay:
    def __init__(self) -> None:
        self.waits = 0

    def wait(self, refs: list[Ref], num_returns: int, timeout: float) -> tuple[list[Ref], list[Ref]]:
        self.waits += 1
        assert num_returns == len(refs) and timeout == 0.5
        return [r for r in refs if r.done], [r for r in refs if not r.done]

    def get(self, ref: Ref, timeout: float | None = None) -> Any:
        if ref.exc is not None:
            raise ref.exc
        return ref.value


class Method:
    def __init__(self, fn: Any) -> None:
        self.fn, self.calls = fn, 0

    def remote(self) -> Ref:
        self.calls += 1
        return self.fn()


class FakeActor:
    def __init__(self, fn: Any) -> None:
        self.snapshot = Method(fn)


def watch(actors: list[FakeActor], jm: JobMetrics, *, polls: int | None = None, lost_after_s: float = 60.0,
          ray: FakeRay | None = None) -> str | None:
    ray = ray or FakeRay()
    stop = threading.Event()
    if polls is not None:
        orig = ray.wait

        def counting(*a: Any, **kw: Any) -> Any:
            if ray.waits + 1 >= polls:
                stop.set()
            return orig(*a, **kw)

        ray.wait = counting  # type: ignore[method-assign]
    return _watch(ray, actors, jm, stop, 0.0, 0.5, lost_after_s)


def test_a_silent_actor_is_asked_once_is_absent_and_fails_the_job_after_lost_after():
    m0 = worker(1, [], {})
    jm = JobMetrics(2)
    answering = FakeActor(lambda: Ref(snap(m0, 0)))
    silent = FakeActor(lambda: Ref(done=False))  # hangs: never answers
    assert watch([answering, silent], jm, polls=5) is None
    assert silent.snapshot.calls == 1 and answering.snapshot.calls == 5  # no pile-up of calls
    fams = {f[0] for f in jm.merged._latest[0]}
    assert set(jm.merged._latest) == {0} and "veil_process_chunks_in" in fams and not jm.ready
    t0 = time.monotonic()
    failed = watch([answering, silent], JobMetrics(2), lost_after_s=0.2)
    assert failed == "consumer actor(s) [1] did not answer for 0.2 s" and time.monotonic() - t0 < 5


def test_a_dead_or_failed_actor_ends_the_watch_with_one_line():
    m0 = worker(1, [], {})
    ok = FakeActor(lambda: Ref(snap(m0, 0)))
    dead = FakeActor(lambda: Ref(exc=RuntimeError("ActorDiedError: the actor died unexpectedly\ntraceback...")))
    assert watch([ok, dead], JobMetrics(2)) == ("consumer actor 1 lost: ActorDiedError: the actor died "
                                                 "unexpectedly")
    broken = FakeActor(lambda: Ref({**snap(m0, 1), "exit_code": 1, "error": "kafka: broker unreachable"}))
    assert watch([ok, broken], JobMetrics(2)) == "consumer 1 failed: kafka: broker unreachable"


def test_a_clean_run_is_ready_and_stops_on_the_event():
    a, b = worker(2, [1.0], {}), worker(4, [], {})
    jm = JobMetrics(2)
    jm.starting_until = time.monotonic() + 60
    assert watch([FakeActor(lambda: Ref(snap(a, 0))), FakeActor(lambda: Ref(snap(b, 1)))], jm, polls=3) is None
    assert jm.ready and jm.phase() == "running" and set(jm.merged._latest) == {0, 1}


def test_a_revoked_partitions_stale_lag_is_not_counted_twice():
    from pipeline.stage import StageKafka
    from schemas.config import parse_config
    from tests.fakes import FakeConsumer, FakeProducer

    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "metrics": {"enabled": False}})
    revoked: list[list[tuple[str, int]]] = []
    stage = StageKafka(cfg, "process")
    stage.consumer = FakeConsumer([], on_revoke=None)
    stage.producer = FakeProducer()
    stage.consumer.lag = lambda: {("raw", 0): 40, ("raw", 1): 9}  # type: ignore[method-assign]
    stage.log_status()  # consumer 0 owned both partitions
    # consumer_for stands in as "the consumer is the revoke callback it was given" (the real
    # one calls it from poll() during a rebalance)
    with patch("pipeline.stage.consumer_for", lambda *a, on_revoke, **k: on_revoke), \
            patch("pipeline.stage.producer_for", lambda *a, **k: FakeProducer()):
        stage.connect("g", ["raw"], on_revoke=revoked.append)
    stage.consumer([("raw", 1)])  # the rebalance takes partition 1 away (what consumer_for calls)
    after = worker(0, [], {"1": 12})  # consumer 1's fresh value for partition 1
    jm = JobMetrics(2)
    jm.observe({0: snap(stage.metrics, 0), 1: snap(after, 1)})
    assert revoked == [[("raw", 1)]]  # the worker's own revoke handler still runs
    lag = {(s.labels["partition"], s.labels["consumer"]): s.value
           for fam in text_string_to_metric_families(generate_latest(jm.registry).decode())
           if fam.name == "veil_process_consumer_lag_messages" for s in fam.samples}
    assert lag == {("0", "0"): 40, ("1", "1"): 12}  # sum = 52, not 61


def test_a_second_job_on_the_same_head_serves_once_the_old_one_frees_the_port():
    """Rolling upgrade: the new job's driver starts while the old one still holds metrics.port on
    the head. It must not fail (that would loop the rollout): it serves once the port is free."""
    import socket
    from types import SimpleNamespace

    from pipeline.process.consumers import _serve_job_metrics

    old = socket.socket()
    old.bind(("127.0.0.1", 0))
    old.listen()
    port = old.getsockname()[1]
    cfg = SimpleNamespace(enabled=True, host="127.0.0.1", port=port, endpoint=True)
    stop = threading.Event()
    jm = JobMetrics(1)
    server = _serve_job_metrics(jm, cfg, stop)
    try:
        old.close()  # the old job ends
        deadline = time.monotonic() + 15
        code = None
        while time.monotonic() < deadline:
            try:
                code, body = get(port, "/metrics")
                break
            except OSError:
                time.sleep(0.3)
        assert code == 200 and "veil_process_consumers_desired" in body
    finally:
        stop.set()
        server.shutdown()
