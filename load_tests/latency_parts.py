"""Where a chunk's end-to-end latency goes, ingest against the process stage, on a stack that is up.

Reads every message of ``veil.chunks.raw`` and ``veil.chunks.redacted`` of a running (or
``--keep-up``) stack and pairs them by camera and chunk sequence. Per camera, from the capture
of a chunk's last frame (``captured_at_ms`` plus the chunk's span, the figure ``make demo``
and ``veilstream run`` report):

* ingest -> raw: until the raw chunk was durable in Kafka (the raw message's broker
  timestamp): ingest's chunking hand-over and produce;
* raw -> redacted: until the redacted copy was durable (the process stage: poll, dispatch,
  queueing behind other chunks, decode, detection, masking, encode, produce).

The sink is outside the figure (it starts after the redacted chunk is in Kafka).

    python load_tests/latency_parts.py --config .veilstream/demo/run-config.yaml
    # while `python -m pipeline.demo --no-console` streams, or after `veilstream run --keep-up`
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.kafka import plain_consumer  # noqa: E402
from schemas.config import parse_config  # noqa: E402
from schemas.messages import decode_chunk_captured, decode_chunk_redacted  # noqa: E402


def read_topic(cfg: Any, topic: str, decode: Any, idle_s: float = 3.0) -> dict[tuple[str, int], tuple[Any, int]]:
    """(camera, chunk_seq) -> (decoded message, broker timestamp ms) of every message in ``topic``."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    c = plain_consumer(cfg.kafka, f"veil-latency-parts-{time.time_ns()}",
                       **{"fetch.message.max.bytes": cfg.kafka.message_max_bytes})
    out: dict[tuple[str, int], tuple[Any, int]] = {}
    try:
        md = c.list_topics(topic, timeout=10)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
        until = time.time() + 15.0
        while time.time() < until:
            m = c.poll(1.0)
            if m is None or m.error():
                continue
            until = min(until, time.time() + idle_s)
            try:
                r = decode(m.value(), list(m.headers() or []))
            except Exception:  # noqa: BLE001 - not a chunk (or another schema): not ours to count
                continue
            out[(r.camera_id, r.chunk_seq)] = (r, m.timestamp()[1])
    finally:
        c.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path(".veilstream/demo/run-config.yaml"))
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    if not args.config.is_file():
        ap.error(f"--config {args.config}: no such file (a run config of a stack that is up)")
    cfg = parse_config(yaml.safe_load(args.config.read_text()))
    raw = read_topic(cfg, cfg.kafka.topics.raw, decode_chunk_captured)
    red = read_topic(cfg, cfg.kafka.topics.redacted, decode_chunk_redacted)
    per: dict[str, list[tuple[float, float]]] = {}
    for key, (r, ts) in red.items():
        if key not in raw:
            continue
        last = r.captured_at_ms + (r.pts_ms[-1] - r.pts_ms[0] if r.pts_ms else 0)
        per.setdefault(key[0], []).append(((raw[key][1] - last) / 1000.0, (ts - raw[key][1]) / 1000.0))
    report = {}
    print(f"{'camera':8s} {'chunks':>6s} {'ingest->raw p50/max':>20s} {'raw->redacted p50/p95':>22s}")
    for cam, xs in sorted(per.items()):
        ing, proc = sorted(x[0] for x in xs), sorted(x[1] for x in xs)
        report[cam] = {"chunks": len(xs), "ingest_p50_s": statistics.median(ing), "ingest_max_s": ing[-1],
                       "process_p50_s": statistics.median(proc), "process_p95_s": proc[min(len(proc) - 1, int(0.95 * len(proc)))]}
        s = report[cam]
        print(f"{cam:8s} {len(xs):6d} {s['ingest_p50_s']:9.2f} / {s['ingest_max_s']:6.2f} s "
              f"{s['process_p50_s']:10.2f} / {s['process_p95_s']:6.2f} s")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
