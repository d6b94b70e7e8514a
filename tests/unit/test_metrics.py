"""Prometheus endpoint and Kubernetes probes of a worker, over real HTTP on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from pipeline.metrics import StatusLine, WorkerMetrics, serve, serve_config


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def served():
    m = WorkerMetrics("process")
    server = serve(m, 0, host="127.0.0.1")
    yield m, server.server_address[1]
    server.shutdown()


def test_metrics_names_and_values(served):
    m, port = served
    m.chunks_in.labels(camera="all").inc(3)
    m.frames_masked.labels(cls="face").inc(7)
    m.fail_closed.inc(2)
    m.drops.labels(reason="backpressure").inc(5)
    m.dlq.labels(reason="decode_failed").inc()
    m.latency.observe(1.5)
    m.lag.labels(partition="0").set(4)
    code, body = get(port, "/metrics")
    assert code == 200
    for line in ('veil_process_chunks_in_total{camera="all"} 3.0', 'veil_process_masks_total{cls="face"} 7.0',
                 "veil_process_fail_closed_frames_total 2.0",
                 'veil_process_dropped_frames_total{reason="backpressure"} 5.0',
                 'veil_process_dlq_total{reason="decode_failed"} 1.0', "veil_process_latency_seconds_count 1.0",
                 'veil_process_consumer_lag_messages{partition="0"} 4.0'):
        assert line in body, line


def test_probes(served):
    m, port = served
    assert get(port, "/healthz")[0] == 200
    assert get(port, "/readyz")[0] == 503  # not connected/assigned yet
    m.ready = True
    assert get(port, "/readyz")[0] == 200
    m.last_tick -= m.stall_seconds + 1  # the loop stopped ticking: unhealthy and unready
    assert get(port, "/healthz")[0] == 503
    assert get(port, "/readyz")[0] == 503
    assert get(port, "/nope")[0] == 404


def test_disabled_port_serves_nothing():
    assert serve(WorkerMetrics("sink"), -1) is None


def test_status_line_due_every_interval():
    s = StatusLine(0.0)
    assert s.due() and s.due()
    s = StatusLine(3600.0)
    assert not s.due()


def test_healthz_live_and_readyz_red_while_starting_within_budget(served):
    m, port = served
    m.ready = True  # a stale flag must not leak into start-up
    m.last_tick -= m.stall_seconds + 1  # Ray start-up blocks the loop: no ticks
    with m.starting(600):
        code, body = get(port, "/healthz")
        assert (code, body) == (200, "ok starting\n")
        assert get(port, "/readyz")[0] == 503
        m.starting_until = 0.0  # the budget ran out: start-up hangs, restart the pod
        assert get(port, "/healthz") == (503, "stalled\n")
    assert get(port, "/healthz") == (200, "ok running\n")  # start-up over: the loop's clock runs
    assert get(port, "/readyz")[0] == 503  # ready only when the loop says it consumes
    m.ready = True
    assert get(port, "/readyz")[0] == 200


def test_endpoint_off_keeps_the_probes():
    from schemas.config import parse_config

    m = WorkerMetrics("sink")
    cfg = parse_config({"metrics": {"port": 0, "endpoint": False, "host": "127.0.0.1"}}).metrics
    server = serve_config(m, cfg)
    try:
        port = server.server_address[1]
        assert get(port, "/metrics")[0] == 404
        assert get(port, "/healthz")[0] == 200
    finally:
        server.shutdown()
    assert serve_config(m, parse_config({"metrics": {"enabled": False}}).metrics) is None



# ---------------------------------------------------------------- cached label children (session 13)
def test_a_repeated_labels_call_is_served_from_the_cache_and_counts_per_label(monkeypatch):
    import prometheus_client

    calls = []
    real = prometheus_client.Counter.labels

    def counting(self, *a, **kw):
        calls.append(kw)
        return real(self, *a, **kw)

    monkeypatch.setattr(prometheus_client.Counter, "labels", counting)
    m = WorkerMetrics("t")
    for _ in range(3):
        m.cpu_seconds.labels(step="decode").inc(1.0)
    m.cpu_seconds.labels(step="encode").inc(2.0)
    assert calls == [{"step": "decode"}, {"step": "encode"}]  # prometheus_client asked once per label value
    assert m.value("veil_t_cpu_seconds_total", {"step": "decode"}) == 3.0
    assert m.value("veil_t_cpu_seconds_total", {"step": "encode"}) == 2.0


def test_the_label_cache_is_bounded_with_many_cameras_and_every_camera_still_counts(monkeypatch):
    import pipeline.metrics as pm

    monkeypatch.setattr(pm, "LABEL_CACHE_MAX", 8)
    m = WorkerMetrics("t")
    for _rep in range(2):
        for cam in range(100):
            m.chunks_in.labels(camera=f"cam-{cam}").inc()
            assert len(m.chunks_in._veil_children) <= 8
    assert all(m.value("veil_t_chunks_in_total", {"camera": f"cam-{c}"}) == 2.0 for c in range(100))


def test_a_removed_child_is_not_served_from_the_cache():
    m = WorkerMetrics("t")
    m.lag.labels(partition="1").set(5)
    old = m.lag.labels(partition="1")
    m.lag.remove("1")
    assert m.value("veil_t_consumer_lag_messages", {"partition": "1"}) == 0.0
    m.lag.labels(partition="1").set(7)
    assert m.lag.labels(partition="1") is not old
    assert m.value("veil_t_consumer_lag_messages", {"partition": "1"}) == 7.0
    m.lag.clear()
    m.lag.labels(partition="1").set(9)
    assert m.value("veil_t_consumer_lag_messages", {"partition": "1"}) == 9.0


def test_bad_label_names_are_refused_as_before():
    m = WorkerMetrics("t")
    with pytest.raises(ValueError):
        m.cpu_seconds.labels(stage="x")
    with pytest.raises(ValueError):
        m.cpu_seconds.labels(step="x").labels(step="y")
