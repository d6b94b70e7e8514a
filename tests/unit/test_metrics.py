"""Prometheus endpoint and Kubernetes probes of a worker, over real HTTP on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from pipeline.metrics import StatusLine, WorkerMetrics, serve


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
