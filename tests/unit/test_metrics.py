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

