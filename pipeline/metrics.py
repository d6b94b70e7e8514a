"""Prometheus metrics and Kubernetes probes for every worker.

One ``WorkerMetrics`` per process with its own registry; ``serve`` exposes
``/metrics``, ``/healthz`` (process alive and its loop ticking) and ``/readyz``
(connected and assigned) on one port. Metric names follow ``veil_<stage>_<quantity>_<unit>``.

Start order (Kubernetes): a worker calls :func:`serve_config` before anything slow (Ray,
actors, models, a GPU node that is still being added), inside ``metrics.starting(budget)``:
``/healthz`` answers 200 while start-up is within its budget, ``/readyz`` 503 until the loop
consumes. A liveness probe therefore never kills a pod that is still starting, and a start-up
that hangs past its budget turns ``/healthz`` red so the pod is restarted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, 120)

_M = TypeVar("_M")

LABEL_CACHE_MAX = 256
"""Children a metric keeps at hand per label values (:class:`CachedLabels`); past it the cache
starts again empty (prometheus_client itself keeps every child it ever made)."""


class CachedLabels:
    """``labels()`` that finds the child of label values it was asked for before in a dict.

    prometheus_client's ``labels()`` checks the names, converts every value with ``str`` and
    takes the metric's lock on every call: ~1.3 us, and the process driver and the sink call it
    about ten times a chunk (per CPU step, class, outcome). Here a repeated call is one dict
    lookup; the first call for some values, and any call that prometheus_client would refuse,
    goes to prometheus_client as before. The cache is bounded (:data:`LABEL_CACHE_MAX`) and
    emptied by ``remove()`` and ``clear()``, so a removed child is never counted into again.
    """

    _veil_children: dict[Any, Any]
    _veil_gen: int

    def labels(self: _M, *labelvalues: object, **labelkwargs: object) -> _M:
        this: Any = self
        try:
            cache = this._veil_children
        except AttributeError:
            cache = this._veil_children = {}
            this._veil_gen = 0
        key = (labelvalues, tuple(labelkwargs.items()))
        try:
            child = cache.get(key)
        except TypeError:  # an unhashable value: prometheus_client decides (str() of it)
            return super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc, no-any-return]
        if child is not None:
            return child  # type: ignore[no-any-return]
        gen = this._veil_gen
        child = super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc]
        if gen == this._veil_gen:  # no remove()/clear() meanwhile (another thread)
            if len(cache) >= LABEL_CACHE_MAX:
                cache.clear()
            cache[key] = child
        return child  # type: ignore[no-any-return]

    def _veil_forget(self) -> None:
        self._veil_gen = getattr(self, "_veil_gen", 0) + 1
        if getattr(self, "_veil_children", None):
            self._veil_children.clear()

    def remove(self, *labelvalues: Any) -> None:
        super().remove(*labelvalues)  # type: ignore[misc]
        self._veil_forget()

    def clear(self) -> None:
        super().clear()  # type: ignore[misc]
        self._veil_forget()


class Counter(CachedLabels, prometheus_client.Counter):
    """``prometheus_client.Counter`` with :class:`CachedLabels`."""


class Gauge(CachedLabels, prometheus_client.Gauge):
    """``prometheus_client.Gauge`` with :class:`CachedLabels`."""


class Histogram(CachedLabels, prometheus_client.Histogram):
    """``prometheus_client.Histogram`` with :class:`CachedLabels`."""


class Probes:
    """What ``/healthz`` and ``/readyz`` answer from, and the registry ``/metrics`` serves.

    :class:`WorkerMetrics` is one (a worker's own families); the process stage's Ray job
    driver has another whose registry merges its consumer actors' families
    (:mod:`pipeline.process.consumers`).
    """

    def __init__(self, stage: str, registry: CollectorRegistry | None = None) -> None:
        self.stage = stage
        self.registry = registry if registry is not None else CollectorRegistry()
        self.ready = False
        self.last_tick = time.monotonic()
        self.stall_seconds = 120.0
        self.starting_until: float | None = None  # monotonic deadline while start-up runs

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    @contextmanager
    def starting(self, budget_s: float) -> Iterator[None]:
        """Start-up phase: live (not ready) for up to ``budget_s`` seconds, whatever the loop does.

        Args:
            budget_s: seconds start-up may take (Ray connect, actor placement on a GPU node
                the cluster autoscaler is still adding, model loading and warm-up).
        """
        self.ready = False
        self.starting_until = time.monotonic() + budget_s
        try:
            yield
        finally:
            self.starting_until = None
            self.tick()  # the loop's stall clock starts when start-up ends

    def phase(self) -> str:
        """``starting``, ``running`` or ``stalled`` (what ``/healthz`` reports)."""
        now = time.monotonic()
        if self.starting_until is not None:
            return "starting" if now < self.starting_until else "stalled"
        return "running" if now - self.last_tick < self.stall_seconds else "stalled"

    def healthy(self) -> bool:
        return self.phase() != "stalled"


class WorkerMetrics(Probes):
    """The metrics of one stage (``ingest``, ``process`` or ``sink``)."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        r = self.registry
        p = f"veil_{stage}"
        self.chunks_in = Counter(f"{p}_chunks_in_total", "chunks consumed or captured", ["camera"], registry=r)
        self.chunks_out = Counter(f"{p}_chunks_out_total", "chunks produced or stored", ["camera"], registry=r)
        self.frames_in = Counter(f"{p}_frames_in_total", "frames received", registry=r)
        self.frames_out = Counter(f"{p}_frames_out_total", "frames emitted", registry=r)
        self.frames_masked = Counter(f"{p}_masks_total", "boxes masked, per class", ["cls"], registry=r)
        self.fail_closed = Counter(f"{p}_fail_closed_frames_total",
                                   "frames masked whole because detection failed or timed out", registry=r)
        self.drops = Counter(f"{p}_dropped_frames_total", "frames dropped on purpose, per reason", ["reason"],
                             registry=r)
        self.dlq = Counter(f"{p}_dlq_total", "messages sent to the dead-letter topic, per reason", ["reason"],
                           registry=r)
        self.errors = Counter(f"{p}_errors_total", "errors, per kind", ["kind"], registry=r)
        self.latency = Histogram(f"{p}_latency_seconds", "capture-to-output latency of a chunk",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Histogram(f"{p}_step_seconds", "time spent per chunk in this stage",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.lag = Gauge(f"{p}_consumer_lag_messages", "consumer lag per partition", ["partition"], registry=r)
        self.inflight = Gauge(f"{p}_inflight_chunks", "chunks being worked on", registry=r)
        self.cameras = Gauge(f"{p}_cameras", "cameras owned by this worker", registry=r)
        self.cpu_seconds = Counter(f"{p}_cpu_seconds_total", "CPU seconds spent, per step (decode, detect, "
                                   "mask, encode, kafka, object_store)", ["step"], registry=r)
        self.producer_recreated = Counter(
            f"{p}_producer_recreated_total", "Kafka producers replaced by a new instance after a fatal "
            "librdkafka error (e.g. OUT_OF_ORDER_SEQUENCE_NUMBER)", registry=r)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        v = self.registry.get_sample_value(name, labels or {})
        return float(v or 0.0)


class _Handler(BaseHTTPRequestHandler):
    metrics: Probes
    endpoint: bool = True

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        m = self.metrics
        if self.path.startswith("/metrics") and self.endpoint:
            body, ctype, code = generate_latest(m.registry), CONTENT_TYPE_LATEST, 200
        elif self.path.startswith("/healthz"):
            phase = m.phase()
            ok = phase != "stalled"
            body, ctype, code = (b"ok " if ok else b"") + phase.encode() + b"\n", "text/plain", 200 if ok else 503
        elif self.path.startswith("/readyz"):
            ok = m.ready and m.phase() == "running"
            body, ctype, code = (b"ready\n" if ok else b"not ready\n"), "text/plain", 200 if ok else 503
        else:
            body, ctype, code = b"not found\n", "text/plain", 404
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: probes hit this every few seconds
        return


def serve(metrics: Probes, port: int, host: str = "0.0.0.0", *,
          endpoint: bool = True) -> ThreadingHTTPServer | None:
    """Serve metrics and probes in a daemon thread; ``port`` 0 picks a free one, < 0 disables.

    ``endpoint`` False serves only ``/healthz`` and ``/readyz`` (``/metrics`` answers 404).
    """
    if port < 0:
        return None
    handler = type("Handler", (_Handler,), {"metrics": metrics, "endpoint": endpoint})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"metrics-{metrics.stage}", daemon=True).start()
    logger.info("metrics stage=%s port=%d endpoint=%s", metrics.stage, server.server_address[1],
                "on" if endpoint else "off")
    return server


def serve_config(metrics: Probes, cfg: Any) -> ThreadingHTTPServer | None:
    """The worker's HTTP server as the config's ``metrics`` section says: none when
    ``enabled`` is false, probes only when ``endpoint`` is false, else probes and ``/metrics``."""
    if not getattr(cfg, "enabled", False):
        return None
    return serve(metrics, cfg.port, getattr(cfg, "host", "0.0.0.0"), endpoint=getattr(cfg, "endpoint", True))


class StatusLine:
    """Periodic one-line status in the logs (every ``every_s`` seconds)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            return True
        return False
