"""The real pipeline on a Ray cluster of several nodes on one machine: what crosses between nodes.

    .venv/bin/python load_tests/cluster_load.py --nodes 3 --cameras 2 --seconds 45
    make load-cluster NODES=3 CAMERAS=2 SECONDS=45

The local stack (``veilstream up``: broker, S3 server, Ray head) plus ``--nodes - 1`` more Ray
nodes (``ray start --address HEAD``, each its own raylet and object store, on loopback), then
``load_tests/pipeline_load.py``'s run: ingest -> Kafka -> process (its driver on the head, its
actors on the cluster) -> Kafka -> sink -> S3. Every node gets the logical CPUs of one
node-local group (one detector and two chunk actors), and the process stage asks for one
detector replica per node, so Ray spreads the groups over the nodes.

``cross_node_bytes_per_frame`` is Ray's own count of object bytes moved between nodes (the sum
of every raylet's ``ray_object_manager_bytes{Type="Received"}`` over the run, scraped from each
node's metrics port) per frame sent; ``compressed_bytes_per_frame`` is the raw topic's bytes (the
camera's H.264 as ingest chunked it) per frame. With ``ray.placement: node_local`` only
compressed chunks go to a node and redacted chunks come back (about 2x the compressed video
at most); ``--placement spread`` is the comparison where decoded frames may travel to a detector
on another node. Ray passes objects under 100 KiB inline with the call (not through the object
manager): those are not in the count, which is why the frames' count is the one that matters.

Prints the table of ``pipeline_load.py``, then one JSON line (the last line) with ``nodes``,
``frames_sent``, ``frames_stored``, ``compressed_bytes_per_frame``, ``cross_node_bytes_per_frame``,
``cross_node_ratio`` (cross-node / compressed) and the rest of ``pipeline_load.py``'s result.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "load_tests"))

import pipeline_load  # noqa: E402 - load_tests is not a package

NODE_CPUS = 2  # logical CPUs per node: one group = detector (1) + two chunk actors (0.5 each)


def _received_bytes(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("ray_object_manager_bytes{") and 'Type="Received"' in line:
            total += float(line.rsplit(" ", 1)[-1])
    return total


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode("utf-8", "replace"))
    except OSError:
        return ""


class ClusterHooks:
    """Adds Ray nodes to the local stack's head and reads Ray's transfer counters."""

    def __init__(self, nodes: int, log_dir: Path) -> None:
        self.nodes = nodes
        self.log_dir = log_dir
        self.procs: list[Any] = []
        self.metric_ports: list[int] = []
        self.before = 0.0

    def _head_metrics_port(self, state: Any) -> int | None:
        """The head's metrics export port, from its command line."""
        from pipeline.devstack import cmdline

        for p in state.processes:
            if "ray" in str(p.get("name", "")):
                m = re.search(r"--metrics-export-port\s+(\d+)", " ".join(cmdline(int(p["pid"])) or []))
                if m:
                    return int(m.group(1))
        return None

    def started(self, state: Any) -> None:
        from pipeline.devstack import free_ports, spawn, wait_until
        from pipeline.devstack.raylocal import loopback_node_argv
        from pipeline.raynet import keep_ray_on_loopback

        head = state.ray_address
        if not head:
            raise SystemExit("the local stack started without Ray")
        port = self._head_metrics_port(state)
        if port:
            self.metric_ports.append(port)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        # not the head's loopback switch (it makes `ray start --address` refuse to add a node):
        # loopback_node_argv keeps the joining node on 127.0.0.1 its own way
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        flags = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                 "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
        import ray

        keep_ray_on_loopback(head)
        ray.init(address=head, include_dashboard=False, configure_logging=False, log_to_driver=False)

        def alive() -> int:
            return sum(1 for n in ray.nodes() if n.get("Alive"))

        try:
            # one node at a time, each retried: `ray start` gives a raylet 30 s to register
            # (hard-coded in Ray), which a loaded 2-vCPU machine does not always meet
            for i in range(1, self.nodes):
                for attempt in range(3):
                    ports = dict(zip(flags, free_ports(len(flags))))
                    argv = [*loopback_node_argv(), "start", "--block", "--address", head, "--node-ip-address",
                            "127.0.0.1", "--num-cpus", str(NODE_CPUS), "--object-store-memory",
                            str(256 * 1024 * 1024), "--disable-usage-stats"]
                    for flag, port_ in ports.items():
                        argv += [flag, str(port_)]
                    proc = spawn(f"ray-node-{i}", argv, self.log_dir / f"ray-node-{i}-{attempt}.log",
                                 marker=f"--metrics-export-port {ports['--metrics-export-port']}", env=env,
                                 grace_s=3.0)
                    def joined_or_dead(want: int = i + 1, p: Any = proc) -> bool:
                        return alive() >= want or not p.alive()

                    if wait_until(joined_or_dead, 120.0, interval_s=0.5) and alive() >= i + 1:
                        self.procs.append(proc)
                        self.metric_ports.append(ports["--metrics-export-port"])
                        break
                    proc.stop(5.0)
                    print(f"ray node {i} did not join (attempt {attempt + 1}); retrying", file=sys.stderr)
            joined = alive()
        finally:
            ray.shutdown()
        if joined < self.nodes:
            raise SystemExit(f"only {joined} of {self.nodes} Ray nodes joined; logs in {self.log_dir}")
        time.sleep(6.0)  # the metrics agents report every few seconds
        self.before = sum(_received_bytes(_scrape(p)) for p in self.metric_ports)

    def finished(self, cfg: Any, raw_topic: dict[str, dict[str, Any]]) -> dict[str, Any]:
        time.sleep(6.0)
        after = sum(_received_bytes(_scrape(p)) for p in self.metric_ports)
        frames = sum(int(r["frames"]) for r in raw_topic.values())
        raw_bytes = sum(int(r.get("bytes", 0)) for r in raw_topic.values())
        cross = max(0.0, after - self.before)
        compressed = raw_bytes / max(1, frames)
        return {"nodes": self.nodes, "nodes_scraped": len(self.metric_ports),
                "placement": cfg.ray.placement,
                "compressed_bytes_per_frame": round(compressed, 1),
                "cross_node_bytes_per_frame": round(cross / max(1, frames), 1),
                "cross_node_ratio": round(cross / max(1.0, raw_bytes), 2),
                "cross_node_bytes": int(cross)}

    def stop(self) -> None:
        for p in self.procs:
            p.stop(10.0)
        self.procs = []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=3, help="Ray nodes, the head included")
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--source", type=Path, default=None, help="video file (default: OpenCV's vtest.avi)")
    ap.add_argument("--placement", choices=["node_local", "spread"], default="node_local")
    ap.add_argument("--drain-seconds", type=float, default=240.0,
                    help="process drain after ingest stops (a loaded machine needs long)")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    args = ap.parse_args()
    if args.nodes < 1:
        raise SystemExit("--nodes: at least 1")
    models = ROOT.parent / "shared" / "models"
    if models.is_dir():
        os.environ.setdefault("VEILSTREAM_MODEL_DIR", str(models))
    w, h = (int(v) for v in args.size.lower().split("x"))
    source = pipeline_load.prepare_source(args.source or pipeline_load.VTEST, w, h, args.fps,
                                          ROOT / "out" / "load" / "sources")
    overrides = [f"ray.placement={args.placement}", f"ray.detector.replicas={args.nodes}",
                 f"ray.chunk_workers={2 * args.nodes}", "ray.worker_num_cpus=0.5", "ray.detector.num_cpus=1",
                 *args.overrides]
    log_dir = Path(tempfile.mkdtemp(prefix="veil-cluster-load-"))
    hooks = ClusterHooks(args.nodes, log_dir)
    res = pipeline_load.run_once(args.cameras, args.seconds, source, args.fps,
                                 ROOT / ".veilstream" / "load-cluster", args.drain_seconds,
                                 overrides=overrides, hooks=hooks)
    pipeline_load.table([res])
    keys = ("nodes", "placement", "frames_sent", "frames_stored", "compressed_bytes_per_frame",
            "cross_node_bytes_per_frame", "cross_node_ratio")
    pipeline_load.emit_json({**{k: res.get(k) for k in keys}, **res}, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
