"""The process driver's and the sink's own CPU per one-frame chunk, this tree against a baseline
commit, alternated round by round (issue 19, snapshot target; docs/performance.md, session 13).

    .venv/bin/python load_tests/stage_loop_ab.py [--baseline HEAD] [--rounds 8] [--cameras 100]

What runs is the stage code itself on its runtime, with Kafka and Ray replaced by in-process
stand-ins that cost next to nothing, so what is measured is the Python of the loop:

* **driver**: ``ProcessHandler`` on ``StageRuntime`` (as ``ProcessWorker.settings()`` configures
  it: poll, park, decode and check each ``ChunkCaptured``, build the ``ChunkTask``, batch, wait,
  collect each ``ChunkResult``, count its metrics, encode the ``ChunkRedacted``, produce through
  the stage's ``RenewingProducer``, finish and commit offsets). Ray answers at once with a
  result like a snapshot chunk's (a 13 KB payload, 4 classes, 4 CPU steps).
* **sink**: ``SinkWorker`` with the deployed plug-ins (retention with no policies, hash chain,
  notice with none, audit) on the in-memory object store: decode and check each
  ``ChunkRedacted``, hold it in its camera's 20 s segment (10 one-frame chunks at 0.5 fps, as
  ``make load``), remux the segment to MP4 with real 320x180 H.264 payloads, the manifest, the
  PUTs into a dict, the audit record, finish and commit.

Each variant runs in its own child process (``git archive`` of ``--baseline`` for the
baseline, this tree for ``now``); the parent asks them for one round each in turn (round 0
untimed) and each child reports its own ``time.process_time()`` for the round. A round feeds
``--cameras`` x 10 chunks (one segment window each) through the driver, then the same chunks
through the sink. Read ratios when the machine is shared; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHUNKS_PER_SEGMENT = 10  # make load: 20 s segments of one-frame chunks at 0.5 fps
PARTITIONS = 4


# ---------------------------------------------------------------- child: the stage code of one tree
def _Msg(topic: str, partition: int, offset: int, key: bytes, value: bytes, headers: list[Any]) -> Any:
    """A consumed message as confluent-kafka's ``Message`` answers (the runtime's own stand-in,
    imported from the tree under test)."""
    from pipeline.runtime import TestingMessage

    return TestingMessage(topic, partition, offset, key, value, headers)


class _Source:
    """A consumer over a deque (``poll`` is O(messages returned)); commits are kept."""

    def __init__(self, topic: str) -> None:
        self.q: deque[Any] = deque()
        self.assigned = {(topic, p) for p in range(PARTITIONS)}
        self.paused: set[tuple[str, int]] = set()
        self.joined = True
        self.commits: list[dict[tuple[str, int], int]] = []

    def poll(self, timeout_s: float, max_messages: int = 16) -> list[Any]:
        if self.paused:
            return []
        n = min(max_messages, len(self.q))
        return [self.q.popleft() for _ in range(n)]

    def commit(self, offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        self.commits.append(dict(offsets))
        return dict(offsets)

    def pause(self, tps: list[tuple[str, int]]) -> None:
        self.paused.update(tps)

    def resume(self, tps: list[tuple[str, int]]) -> None:
        self.paused.difference_update(tps)

    def lag(self) -> dict[tuple[str, int], int]:
        return {}

    def close(self) -> None:
        return None


class _Sink:
    """A producer that acks at once (the broker's ack is not this process's CPU)."""

    def __init__(self) -> None:
        self.out: list[tuple[str, Any, bytes, list[Any]]] = []

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_done: Any = None,
                retries: int = 50) -> Any:
        from pipeline.kafka import Delivery

        self.out.append((topic, key, value, list(headers)))
        d = Delivery(done=True, partition=0, offset=len(self.out) - 1)
        if on_done is not None:
            on_done(d)
        return d

    def poll(self, timeout_s: float = 0.0) -> int:
        return 0

    def flush(self, timeout_s: float = 30.0) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class _Ray:
    """Ray as the driver uses it: each chunk's result is ready at once."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.tasks: dict[Any, Any] = {}

    def submit(self, task: Any) -> Any:
        ref = object()
        self.tasks[ref] = task
        return ref

    def submit_many(self, tasks: list[Any]) -> list[Any]:
        return [self.submit(t) for t in tasks]

    def wait(self, refs: list[Any], num_returns: int, timeout: float, fetch_local: bool = True) -> Any:
        return list(refs), []

    def get(self, ref: Any) -> Any:
        if isinstance(ref, list):  # as Ray's get: every result of a list of refs
            return [self.answer(self.tasks.pop(r)) for r in ref]
        return self.answer(self.tasks.pop(ref))

    def kill(self, actor: Any, no_restart: bool = False) -> None:
        return None


def _Store() -> Any:  # noqa: N802 - a class made at run time from the tree under test
    """The in-memory object store with what ``MinioSegmentStore.put_object`` computes in Python
    before its HTTP request (the body's sha256 for ``x-amz-checksum-sha256``) instead of the
    fake's md5 etag: the request itself (HTTP, signing) is not in this harness."""
    from pipeline.objectstore import PutResult, sha256_b64
    from tests.fakes import InMemoryObjectStore, _Obj

    class Store(InMemoryObjectStore):
        def put_object(self, key: str, data: bytes, content_type: str, metadata: dict[str, str],
                       tags: dict[str, str], retention: Any = None) -> Any:
            checksum = sha256_b64(data)
            self._version += 1
            self.objects[key] = _Obj(bytes(data), content_type, dict(metadata), dict(tags), self._version)
            return PutResult(etag=checksum, version_id=str(self._version))

    return Store()


def _payloads(n: int) -> list[bytes]:
    """``n`` one-frame 320x180 H.264 chunks (vtest frames, the process stage's own encoder)."""
    import numpy as np

    from operators.codec import encode_h264_chunk

    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
    base = (base // 32 * 32).astype(np.uint8)  # some structure, some noise: ~snapshot-sized frames
    out = []
    for i in range(n):
        frame = np.roll(base, i * 3, axis=1)
        out.append(bytes(encode_h264_chunk(frame[None], 0.5, threads=1)))
    return out


class _Child:
    def __init__(self, cameras: int) -> None:
        from schemas.messages import ChunkCaptured, ChunkRedacted, encode_chunk

        self.cameras = cameras
        self.payloads = _payloads(16)
        self.models = [{"id": m, "version": "1", "sha256": "ab" * 32, "precision": "fp32"}
                       for m in ("centerface", "yunet", "yolox_nano", "ppocr_det", "ppocr_det@bf16")]
        self.round = 0
        self.ChunkCaptured, self.ChunkRedacted, self.encode_chunk = ChunkCaptured, ChunkRedacted, encode_chunk
        self._build_driver()
        self._build_sink()

    def _cam(self, c: int) -> str:
        return f"cam-{c:03d}"

    # the raw and the redacted messages of window r (cameras x 10 chunks, camera-interleaved)
    def _chunks(self, r: int) -> list[tuple[int, int, int]]:
        return [(c, r * CHUNKS_PER_SEGMENT + i, (r * CHUNKS_PER_SEGMENT + i) * 2000)
                for i in range(CHUNKS_PER_SEGMENT) for c in range(self.cameras)]

    def _build_driver(self) -> None:
        from pipeline.process.actors import ChunkResult
        from pipeline.process.batching import BatchLimits
        from pipeline.process.handler import ProcessHandler
        from pipeline.process.worker import ProcessWorker
        from pipeline.runtime import StageRuntime
        from schemas.config import parse_config

        cfg = parse_config({"process": {"classes": ["face", "plate"], "style": "fill"},
                            "metrics": {"enabled": False}})
        self.pcfg = cfg
        w = ProcessWorker(cfg)
        payloads = self.payloads

        def answer(task: Any) -> Any:
            return ChunkResult(payload=payloads[task.pts_ms[0] // 2000 % len(payloads)], pts_ms=task.pts_ms,
                               masks_per_class={"face": 1, "plate": 0, "person": 2, "text": 0},
                               cpu_s={"decode": 0.0015, "detect": 0.027, "mask": 0.0004, "encode": 0.0026})

        self.ray = _Ray(answer)
        handler = ProcessHandler(cfg, w.plan, w.metrics, self.ray.submit, self.ray,
                                 model_ids=list(self.models), submit_many=self.ray.submit_many,
                                 batch=BatchLimits(), workers=2)
        self.psource = _Source(cfg.kafka.topics.raw)
        w.kafka.consumer = self.psource
        self.psink = _Sink()
        w.kafka.producer = w.kafka.renewing_producer(lambda: self.psink)
        self.prt = StageRuntime(w.kafka, handler, w.settings())
        self.pnext = [0] * PARTITIONS

    def _build_sink(self) -> None:
        sys.path.insert(0, str(Path.cwd()))
        from pipeline.governance.segmentplugins import sink_plugins
        from pipeline.sink.worker import SinkWorker
        from schemas.config import parse_config
        from tests.fakes import InMemoryObjectStore

        cfg = parse_config({"metrics": {"enabled": False}, "sink": {"segment_seconds": 20, "idle_flush_s": 10}})
        self.store = _Store()
        self.ssource = _Source(cfg.kafka.topics.redacted)
        self.ssink = _Sink()
        plugins = sink_plugins(cfg, InMemoryObjectStore(), {}, notices=lambda cam: {})
        self.now = 0.0
        self.sw = SinkWorker(cfg, self.store, lambda on_revoke: self.ssource, producer_factory=lambda: self.ssink,
                             plugins=plugins, clock=lambda: self.now)
        self.sw.producer = self.sw.kafka.renewing_producer(lambda: self.ssink)
        self.sw.consumer = self.ssource
        self.snext = [0] * PARTITIONS

    def _raw_messages(self, r: int) -> list[Any]:
        out = []
        for c, seq, pts in self._chunks(r):
            m = self.ChunkCaptured(camera_id=self._cam(c), chunk_seq=seq, pts_ms=(pts,), fps=0.5, width=320,
                                   height=180, codec="h264", captured_at_ms=1_700_000_000_000 + pts,
                                   payload=self.payloads[seq % len(self.payloads)], policy_id=None)
            value, headers = self.encode_chunk(m)
            p = c % PARTITIONS
            out.append(_Msg(self.pcfg.kafka.topics.raw, p, self.pnext[p], self._cam(c).encode(), value,
                            list(headers)))
            self.pnext[p] += 1
        return out

    def run_driver(self, msgs: list[Any]) -> int:
        self.psink.out.clear()
        self.psource.q.extend(msgs)
        rt = self.prt
        for _ in range(100000):
            rt.step(0.0)
            if not self.psource.q and not rt.handler.busy() and not rt.parked and not rt.kafka.tracker.inflight():
                break
        return len(self.psink.out)

    def run_sink(self, produced: list[tuple[str, Any, bytes, list[Any]]]) -> int:
        before = len(self.store.objects) if hasattr(self.store, "objects") else 0
        for topic, key, value, headers in produced:
            k = key.encode() if isinstance(key, str) else key
            c = int(k.decode()[4:])
            p = c % PARTITIONS
            self.ssource.q.append(_Msg(topic, p, self.snext[p], k, value, headers))
            self.snext[p] += 1
        self.now += 20.0
        for _ in range(100000):
            self.sw.step(0.0)
            if not self.ssource.q:
                break
        after = len(self.store.objects) if hasattr(self.store, "objects") else 0
        return after - before

    def one_round(self) -> dict[str, Any]:
        msgs = self._raw_messages(self.round)
        t0 = time.process_time()
        n = self.run_driver(msgs)
        t1 = time.process_time()
        produced = list(self.psink.out)
        t2 = time.process_time()
        stored = self.run_sink(produced)
        t3 = time.process_time()
        self.round += 1
        digest = _digest(produced)
        return {"driver_s": t1 - t0, "sink_s": t3 - t2, "chunks": len(msgs), "produced": n, "stored": stored,
                "commits": sum(len(c) for c in self.psource.commits), "digest": digest}


def _digest(produced: list[tuple[str, Any, bytes, list[Any]]]) -> str:
    import hashlib

    h = hashlib.sha256()
    for topic, key, value, headers in produced:
        h.update(repr((topic, key, len(value), [(k, bytes(v)) for k, v in headers])).encode())
        h.update(value)
    return h.hexdigest()[:16]


class _GcClock:
    """CPU seconds spent in the garbage collector (``gc.callbacks``), and full collections."""

    def __init__(self) -> None:
        import gc

        self.cpu_s, self.full, self._t0 = 0.0, 0, 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.process_time()
        else:
            self.cpu_s += time.process_time() - self._t0
            self.full += info.get("generation") == 2


def child_main(cameras: int) -> int:
    import logging

    logging.disable(logging.WARNING)  # only errors (the stage logs status lines at INFO)
    child = _Child(cameras)
    clock = _GcClock()
    orig = child.one_round

    def one_round() -> dict[str, Any]:
        before, full = clock.cpu_s, clock.full
        out = orig()
        out["gc_s"], out["gc_full"] = clock.cpu_s - before, clock.full - full
        return out

    child.one_round = one_round  # type: ignore[method-assign]
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "round":
            print(json.dumps(child.one_round()), flush=True)
        elif line.strip() == "objects":
            objs = getattr(child.store, "objects", {})
            print(json.dumps({k: (len(v.data) if hasattr(v, "data") else 0) for k, v in sorted(objs.items())}),
                  flush=True)
        else:
            break
    return 0


# ---------------------------------------------------------------- parent
def baseline_tree(commit: str) -> Path:
    out = Path(tempfile.mkdtemp(prefix="stage_loop_base_"))
    data = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "pipeline", "schemas", "operators", "tests",
                           "load_tests"], check=True, capture_output=True).stdout
    import io

    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(out, filter="data")
    return out


def start(tree: Path, cameras: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    p = subprocess.Popen([sys.executable, str(tree / "load_tests" / "stage_loop_ab.py") if (tree / "load_tests" /
                          "stage_loop_ab.py").exists() else str(Path(__file__).resolve()), "--child",
                          "--cameras", str(cameras)], cwd=tree, env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    json.loads(p.stdout.readline())
    return p


def ask(p: subprocess.Popen[str], what: str) -> Any:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(what + "\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="HEAD", help="commit to compare with (default HEAD)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--cameras", type=int, default=100)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.cameras)
    base = baseline_tree(args.baseline)
    # the baseline child runs this file (its own copy of the harness) against the baseline's packages
    (base / "load_tests" / "stage_loop_ab.py").write_text(Path(__file__).read_text())
    procs = {"baseline": start(base, args.cameras), "now": start(ROOT, args.cameras)}
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in procs}
    for r in range(args.rounds + 1):
        order = list(procs) if r % 2 == 0 else list(reversed(procs))
        for name in order:
            res = ask(procs[name], "round")
            if r > 0:  # round 0 warms up (imports, templates, first segments)
                rows[name].append(res)
    same_out = all(a["digest"] == b["digest"] for a, b in zip(rows["baseline"], rows["now"], strict=True))
    objs = {k: ask(p, "objects") for k, p in procs.items()}
    for p in procs.values():
        assert p.stdin is not None
        p.stdin.close()
        p.wait()
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {args.rounds} rounds of {args.cameras} cameras "
          f"x {CHUNKS_PER_SEGMENT} one-frame chunks; ms of CPU per chunk (median of rounds; min-max)")
    summary: dict[str, Any] = {"baseline": args.baseline, "rounds": args.rounds, "cameras": args.cameras,
                               "load_avg": [round(x, 1) for x in load],
                               "produced_same": same_out, "objects_same": objs["baseline"] == objs["now"]}
    for part in ("driver_s", "sink_s"):
        per = {k: [x[part] / x["chunks"] * 1000 for x in v] for k, v in rows.items()}
        med = {k: statistics.median(v) for k, v in per.items()}
        ratios = [n / b for b, n in zip(per["baseline"], per["now"], strict=True)]
        print(f"  {part[:-2]:7s} baseline {med['baseline']:.3f} ({min(per['baseline']):.3f}-{max(per['baseline']):.3f})"
              f"  now {med['now']:.3f} ({min(per['now']):.3f}-{max(per['now']):.3f})"
              f"  ratio x{statistics.median(ratios):.2f} (per round {min(ratios):.2f}-{max(ratios):.2f})")
        summary[part[:-2]] = {"baseline_ms": round(med["baseline"], 4), "now_ms": round(med["now"], 4),
                              "ratio_median": round(statistics.median(ratios), 3)}
    gc_ms = {k: statistics.median(x["gc_s"] / x["chunks"] * 1000 for x in v) for k, v in rows.items()}
    full = {k: sum(x["gc_full"] for x in v) for k, v in rows.items()}
    print(f"  of which the garbage collector (driver + sink): baseline {gc_ms['baseline']:.4f}, now "
          f"{gc_ms['now']:.4f} ms a chunk; full collections baseline {full['baseline']}, now {full['now']}")
    summary["gc_ms"] = {k: round(v, 4) for k, v in gc_ms.items()}
    summary["gc_full"] = full
    counts = {k: {"produced": sum(x["produced"] for x in v), "stored": sum(x["stored"] for x in v),
                  "commits": sum(x["commits"] for x in v)} for k, v in rows.items()}
    print(f"  produced messages identical: {same_out}; stored objects identical (keys, sizes): "
          f"{summary['objects_same']}; counts {counts}")
    summary["counts"] = counts
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
