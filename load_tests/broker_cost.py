"""What our Kafka clients cost the local stack's broker storage: tansu on ``s3://`` in the local
S3 server, as ``veilstream up`` runs it (issue 19, the snapshot target).

    .venv/bin/python load_tests/broker_cost.py --seconds 40            # one run, JSON on the last line
    .venv/bin/python load_tests/broker_cost.py --ab OLD_TREE --rounds 2  # A/B against another checkout

One run starts a fresh S3 server and broker (``s3://`` storage; ``--broker-storage memory`` for
tansu's ``memory://``, the non-durable lower bound), then in this process:

* an *ingest*: ``--cameras`` cameras, one ``--chunk-bytes`` chunk each every ``--period-s``
  (phases spread evenly), through the pipeline's own producer (:func:`pipeline.kafka.chunk_producer`);
* a *process stage*: the real :class:`pipeline.runtime.StageRuntime` with the process stage's
  settings (``max_inflight_chunks``, ``max_inflight_per_partition`` from the config defaults) on a
  real :class:`pipeline.kafka.ChunkConsumer`; its handler stands in for Ray: chunks wait in one
  FIFO served at ``--service-fps`` chunks per second (wall time, no CPU), and each finished chunk
  is produced to the redacted topic (offset committed after its ack, as in the real stage).

With ``--service-fps`` below the offered rate the stage falls behind as in the 100-camera
``make load`` run (every partition at its in-flight bound). Over the measured window (after
``--warmup-s``) it reports, per chunk produced: the broker's S3 requests by kind (the S3 server's
access log, classified as in ``pipeline_load.broker_requests``), the CPU-seconds of the S3 server
and of tansu (their process trees, from /proc), this process's own CPU (our clients), and the
chunk latency (produce to redacted ack) p50 / p95. ``--slices N`` splits the window into N slices and reports the
S3 server's and tansu's CPU and the LISTs per chunk in each: how the storage's cost grows with the
topic's length (``--seconds 480 --slices 8 --service-fps 60``).

``--ab TREE`` runs the same script alternately with ``PYTHONPATH`` at TREE (e.g. an unpacked
``git archive`` of the commit before a change) and at this checkout, ``--rounds`` times each,
and prints both. The machine is shared: compare the two within one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "load_tests"))
    from pipeline_load import (  # this checkout's (it puts ROOT on sys.path)
        broker_requests,
        tree_cpu_s,
    )

    sys.path.insert(0, str(args.tree))  # the pipeline under test: ``--tree``'s, imported from here on
    import pipeline
    from pipeline.devstack.broker import DEFAULT_MESSAGE_MAX_BYTES, create_topics, start_broker
    from pipeline.devstack.s3 import start_s3
    from pipeline.devstack.stack import BROKER_BUCKET, broker_s3_env, worker_config
    from pipeline.kafka import ChunkProducer, KafkaDeliveryError, RenewingProducer, chunk_producer
    from pipeline.runtime import (
        HOLD,
        BaseHandler,
        Completion,
        Emit,
        Outcome,
        Record,
        RuntimeSettings,
        StageRuntime,
    )
    from pipeline.stage import StageKafka
    from schemas.config import parse_config

    tmp = Path(tempfile.mkdtemp(prefix="broker-cost-"))
    logs = tmp / "logs"
    s3 = start_s3(logs)
    broker = None
    try:
        if args.broker_storage == "s3":
            s3.client().make_bucket(BROKER_BUCKET)
            broker = start_broker(logs, storage=f"s3://{BROKER_BUCKET}/",
                                  env=broker_s3_env(s3.url, s3.access_key, s3.secret_key))
        else:  # the lower bound: tansu's memory:// (not durable), the S3 server idle beside it
            broker = start_broker(logs, storage="memory://tansu/")
        cfg = parse_config({**worker_config(broker.bootstrap, s3.endpoint, None, tmp, args.partitions),
                            "metrics": {"enabled": False}})
        t = cfg.kafka.topics
        create_topics(broker.bootstrap, {t.raw: args.partitions, t.redacted: args.partitions},
                      config={"max.message.bytes": str(DEFAULT_MESSAGE_MAX_BYTES)})

        stop = threading.Event()
        sent_at: dict[bytes, float] = {}
        produced = [0]

        failed, replaced = [0], [0]

        def delivered(d: Any) -> None:
            if d.error:
                failed[0] += 1

        def producer(client_id: str) -> Any:
            extra: dict[str, Any] = dict(kv.split("=", 1) for kv in args.producer_set)
            if args.linger_ms is not None:
                extra["linger.ms"] = args.linger_ms
            if not extra:
                return chunk_producer(cfg.kafka, client_id)
            # the pipeline's producer settings with others on top (an A/B within one tree)
            return ChunkProducer(cfg.kafka.bootstrap_servers, message_max_bytes=cfg.kafka.message_max_bytes,
                                 client_id=client_id, extra=extra)

        def ingest() -> None:
            # tansu sometimes answers OUT_OF_ORDER_SEQUENCE_NUMBER (fatal for an idempotent producer),
            # as in make load's ingest: replaced like the stages' producers; what it held is counted
            prod = RenewingProducer(lambda: producer("veil-ingest"), name="ingest")
            payload = os.urandom(args.chunk_bytes)
            step = args.period_s / args.cameras
            n, t0 = 0, time.monotonic()
            while not stop.is_set():
                due = t0 + n * step
                wait = due - time.monotonic()
                if wait > 0:
                    prod.poll(min(wait, 0.05))
                    continue
                cam = f"cam-{n % args.cameras:03d}"
                tag = f"{n}".encode()
                sent_at[tag] = time.monotonic()
                try:
                    prod.produce(t.raw, payload, cam, [("n", tag)], on_done=delivered)
                except KafkaDeliveryError:
                    failed[0] += 1
                    prod.poll(0.1)
                produced[0] += 1
                n += 1
            prod.flush(10)
            replaced[0] = prod.replaced

        class SimulatedRay(BaseHandler):
            """Held chunks finish one at a time, ``1 / service_fps`` apart (in order of arrival)."""

            def __init__(self) -> None:
                self.queue: deque[Record] = deque()
                self.next_done = time.monotonic()

            def handle(self, rec: Record) -> Outcome:
                if not self.queue:
                    self.next_done = max(self.next_done, time.monotonic()) + 1.0 / args.service_fps
                self.queue.append(rec)
                return HOLD

            def completions(self, timeout_s: float) -> Iterable[Completion]:
                out: list[Completion] = []
                if self.queue:  # like ray.wait: block up to timeout_s for the next one
                    time.sleep(max(0.0, min(timeout_s, self.next_done - time.monotonic())))
                now = time.monotonic()
                while self.queue and self.next_done <= now:
                    rec = self.queue.popleft()
                    out.append((rec, Emit(rec.value[: args.chunk_bytes // 2], rec.key, rec.headers,
                                          on_acked=lambda r=rec: done(r))))
                    self.next_done += 1.0 / args.service_fps
                return out

            def busy(self) -> bool:
                return bool(self.queue)

            def revoke(self, tps: list[Any]) -> None:
                gone = set(tps)
                self.queue = deque(r for r in self.queue if r.tp not in gone)

        latencies: list[tuple[float, float]] = []  # (ack time, latency)

        def done(rec: Record) -> None:
            tag = dict(rec.headers).get("n")
            if tag is not None and tag in sent_at:
                now = time.monotonic()
                latencies.append((now, now - sent_at[tag]))

        p = cfg.process
        kafka = StageKafka(cfg, "process")
        rt = StageRuntime(kafka, SimulatedRay(), RuntimeSettings(
            group=p.consumer_group, topics=(t.raw,), output_topic=t.redacted, poll_max=p.max_inflight_chunks,
            poll_s=0.2, busy_poll_s=0.02, max_inflight=p.max_inflight_chunks,
            max_inflight_per_partition=p.max_inflight_per_partition, pause_on_retry=False,
            consumer_extra=tuple(tuple(kv.split("=", 1)) for kv in args.consumer_set)))  # type: ignore[misc]
        rt.connect()
        if args.linger_ms is not None or args.producer_set:
            rt.kafka.producer = rt.kafka.renewing_producer(lambda: producer("veil-process"))
        feeder = threading.Thread(target=ingest, daemon=True)
        t_start = time.monotonic()
        while not rt.kafka.consumer.assigned and time.monotonic() - t_start < 30:
            rt.step()
        feeder.start()
        s3_log = logs / "s3.log"
        w0 = w1 = None
        marks: dict[str, Any] = {}
        # (chunks produced, S3 server CPU-s, tansu CPU-s, access log size) at each slice's start
        slices: list[tuple[int, float, float, int]] = []

        def slice_mark() -> None:
            slices.append((produced[0], tree_cpu_s(s3.pid), tree_cpu_s(broker.pid), s3_log.stat().st_size))

        end = time.monotonic() + args.warmup_s + args.seconds
        while time.monotonic() < end:
            if w0 is None and time.monotonic() >= end - args.seconds:
                w0 = time.monotonic()
                marks = {"log": s3_log.stat().st_size, "produced": produced[0], "acked": len(latencies),
                         "s3": tree_cpu_s(s3.pid), "broker": tree_cpu_s(broker.pid),
                         "self": time.process_time()}
                slices.append((produced[0], marks["s3"], marks["broker"], marks["log"]))
            if w0 is not None and len(slices) < args.slices \
                    and time.monotonic() >= w0 + len(slices) * args.seconds / args.slices:
                slice_mark()
            rt.step()
        w1 = time.monotonic()
        slice_mark()
        cpu = {"s3": tree_cpu_s(s3.pid) - marks["s3"], "broker": tree_cpu_s(broker.pid) - marks["broker"],
               "clients": time.process_time() - marks["self"]}
        reqs = broker_requests(s3_log, marks["log"], s3_log.stat().st_size, BROKER_BUCKET)
        chunks = produced[0] - marks["produced"]
        lat = [x for at, x in latencies if w0 is not None and at >= w0]
        stop.set()
        feeder.join(15)
        backlog = produced[0] - failed[0] - len(latencies)
        rt.stop_event.set()
        rt.kafka.consumer.close()
        per = 1.0 / max(chunks, 1)
        return {
            "tree": str(Path(pipeline.__file__).parents[1]), "linger_ms": args.linger_ms,
            "consumer_set": args.consumer_set, "producer_set": args.producer_set, "cameras": args.cameras, "period_s": args.period_s, "service_fps": args.service_fps,
            "offered_fps": round(args.cameras / args.period_s, 1), "window_s": round(w1 - (w0 or w1), 1),
            "chunks": chunks, "acked_in_window": len(lat), "backlog_end": backlog, "produce_failed": failed[0],
            "producers_replaced": replaced[0],
            "latency_p50_s": None if not lat else round(_pct(lat, 0.5) or 0.0, 2),
            "latency_p95_s": None if not lat else round(_pct(lat, 0.95) or 0.0, 2),
            "cpu_ms_per_chunk": {k: round(1000 * v * per, 2) for k, v in cpu.items()},
            # per slice of the window (--slices): the S3 server's and tansu's CPU per chunk and the
            # LISTs per chunk. tansu lists a partition's every batch object on each fetch, so the
            # S3 server's share grows with the topic's length
            "broker_storage": args.broker_storage,
            "s3_cpu_ms_per_chunk_by_slice": [round(1000 * (c1 - c0) / max(1, n1 - n0), 2)
                                             for (n0, c0, _, _), (n1, c1, _, _) in zip(slices, slices[1:])],
            "broker_cpu_ms_per_chunk_by_slice": [round(1000 * (b1 - b0) / max(1, n1 - n0), 2)
                                                 for (n0, _, b0, _), (n1, _, b1, _) in zip(slices, slices[1:])],
            "lists_per_chunk_by_slice": [
                round(sum(v for k, v in broker_requests(s3_log, l0, l1, BROKER_BUCKET).items()
                          if k.startswith("LIST")) / max(1, n1 - n0), 3)
                for (n0, _, _, l0), (n1, _, _, l1) in zip(slices, slices[1:])],
            "requests_per_chunk_total": round(sum(reqs.values()) * per, 2),
            "requests_per_chunk": {k: round(n * per, 3) for k, n in reqs.items()},
        }
    finally:
        if broker is not None:
            broker.stop(5.0)
        s3.stop(5.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=100)
    ap.add_argument("--period-s", type=float, default=2.0, help="seconds between two chunks of one camera")
    ap.add_argument("--chunk-bytes", type=int, default=12000, help="raw chunk size (a 320x180 keyframe ~12 KB)")
    ap.add_argument("--service-fps", type=float, default=45.0,
                    help="chunks per second the stand-in for Ray finishes (below the offered rate: it falls behind)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--broker-storage", choices=("s3", "memory"), default="s3",
                    help="tansu's storage: s3:// in the local S3 server (as `veilstream up`), or memory:// "
                         "(not durable: the lower bound)")
    ap.add_argument("--slices", type=int, default=3,
                    help="report the S3 server's and tansu's CPU per chunk in this many slices of the window")
    ap.add_argument("--seconds", type=float, default=40.0, help="measured window")
    ap.add_argument("--warmup-s", type=float, default=10.0)
    ap.add_argument("--ab", type=Path, default=None, metavar="TREE",
                    help="run alternately with PYTHONPATH at TREE and at this checkout")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--linger-ms", type=int, default=None, help="both producers' linger.ms (default: the pipeline's)")
    ap.add_argument("--producer-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a librdkafka setting of both producers (repeatable)")
    ap.add_argument("--consumer-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a librdkafka setting of the process stage's consumer (repeatable)")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose pipeline runs (default: this one)")
    args = ap.parse_args()
    if args.ab is None:
        print(json.dumps(run_once(args)), flush=True)
        return 0
    passthrough = [a for a in sys.argv[1:] if a not in ("--ab", str(args.ab))]
    for _ in range(args.rounds):
        for tree in (args.ab.resolve(), ROOT):
            r = subprocess.run([sys.executable, str(Path(__file__)), *passthrough, "--tree", str(tree)],
                               capture_output=True, text=True)
            lines = r.stdout.strip().splitlines()
            if r.returncode != 0 or not lines:
                print(json.dumps({"tree": str(tree), "error": r.stderr.strip()[-800:]}), flush=True)
                continue
            print(lines[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
