"""Ray's own CPU in the process stage, idle and under a snapshot load, by process, per set of Ray
settings (issue 19, session 12; docs/performance.md "Session 12: Ray's own CPU").

    VEILSTREAM_MODEL_DIR=../shared/models .venv/bin/python load_tests/ray_idle_cost.py \\
        [--variants today,adopted,nometrics,noevents,noeventstats,quietall] [--idle-windows 4] \\
        [--idle-s 30] [--load-variants today,adopted] [--rounds 4] [--chunks 240] [--calls 2000]

Each variant is its own driver process (``--child``) that starts the stage's Ray exactly as
``veilstream process`` does (:meth:`pipeline.process.worker.ProcessWorker._start_ray`: an
in-process local Ray, the detector and chunk actors, their placement groups) with the variant's
``RAY_*`` environment, and warms its actors up with a few snapshot chunks. Ray's settings are
per cluster, so the variants are separate clusters side by side on this machine.

* ``today``: the stage without :data:`pipeline.process.raysettings.QUIET_RAY_ENV` (before);
* ``adopted``: the stage as it is (``QUIET_RAY_ENV`` applied by ``_start_ray``);
* the other variants: ``today`` plus the environment in :data:`VARIANTS`.

Idle: every variant's tree is read from /proc over the same ``--idle-s`` window (all idle at
once, so they share the machine's load), ``--idle-windows`` times; reported as CPU-s per second
by role (command line: raylet, gcs, dashboard agent, runtime_env agent, log monitor, the
minimal dashboard (API server), autoscaler monitor, idle workers, the actors, the driver).

Load: per round, each of ``--load-variants`` in turn (order reversed every other round) pushes
``--chunks`` one-frame chunks of ``make load``'s 320x180 0.5 fps source through its actors as
the stage does in a backlog (``chunk_batch_cost.push``: batched ``redact_many`` calls,
``process.max_inflight_chunks`` in flight), and its tree's CPU over the push is divided by the
frames; with ``--calls N`` it then makes N no-op calls (``ChunkActor.ready``, 32 in flight) to
the chunk actors: Ray's own per-call CPU, without detection's noise. The other variants idle
meanwhile (the same background for each). Compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_load import process_tree_cpu  # noqa: E402

VARIANTS: dict[str, dict[str, str]] = {
    "today": {},
    "adopted": {},
    "nometrics": {"RAY_enable_metrics_collection": "0"},
    "noevents": {"RAY_task_events_report_interval_ms": "0", "RAY_enable_timeline": "0"},
    "noeventstats": {"RAY_event_stats": "0"},
    "slowreporter": {"REPORTER_UPDATE_INTERVAL_MS": "60000"},
    "quiet": {"RAY_task_events_report_interval_ms": "0", "RAY_enable_timeline": "0", "RAY_event_stats": "0",
              "RAY_enable_metrics_collection": "0"},
    "quietall": {"RAY_task_events_report_interval_ms": "0", "RAY_enable_timeline": "0", "RAY_event_stats": "0",
                 "RAY_enable_metrics_collection": "0", "REPORTER_UPDATE_INTERVAL_MS": "60000"},
}
ROLES = ("detector", "chunk_actor", "raylet", "gcs", "dashboard_agent", "runtime_env_agent", "log_monitor",
         "api_server", "autoscaler", "idle_worker", "other", "driver")


def role_of(pid: int, cmdline: str, driver: int) -> str:
    """The group a process of a variant's tree counts under (by its command line)."""
    exe = cmdline.split(" ", 1)[0]
    checks = (("detector", "DetectorActor"), ("chunk_actor", "ChunkActor"), ("dashboard_agent", "DashboardAgent"),
              ("dashboard_agent", "dashboard/agent.py"), ("runtime_env_agent", "RuntimeEnvAgent"),
              ("runtime_env_agent", "runtime_env/agent"), ("log_monitor", "log_monitor.py"),
              ("api_server", "dashboard/dashboard.py"), ("api_server", "ray::Dashboard"),
              ("autoscaler", "autoscaler/_private/monitor.py"), ("idle_worker", "ray::IDLE"))
    if pid == driver:
        return "driver"
    if exe.endswith("raylet"):
        return "raylet"
    if exe.endswith("gcs_server"):
        return "gcs"
    for role, needle in checks:
        if needle in cmdline:
            return role
    return "other"


def tree_by_role(root: int) -> dict[str, float]:
    out = dict.fromkeys(ROLES, 0.0)
    for q, s in process_tree_cpu(root).items():
        try:
            cmd = Path(f"/proc/{q}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = ""
        out[role_of(q, cmd, root)] += s
    return out


def _diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: b[k] - a[k] for k in ROLES}


# ------------------------------------------------------------------ child: one variant's driver
def child(name: str, chunks: int, config: Path | None) -> int:
    from types import MappingProxyType

    import pipeline.process.raysettings as rs

    if name != "adopted":  # the stage before: no QUIET_RAY_ENV (the variant's own env comes from the parent)
        rs.QUIET_RAY_ENV = MappingProxyType({})

    import ray
    from chunk_batch_cost import SOURCE, push, snapshot_tasks

    from pipeline.process.batching import BatchLimits
    from pipeline.process.worker import ProcessWorker
    from schemas.config import parse_config

    base: dict[str, Any] = {}
    if config is not None:
        import yaml

        full = yaml.safe_load(config.read_text()) or {}
        base = {k: full[k] for k in ("process", "policies_dir") if k in full}
    w = ProcessWorker(parse_config({**base, "metrics": {"enabled": False}}))
    w._start_ray()
    tasks = snapshot_tasks(SOURCE, chunks)
    window, limits = w.cfg.process.max_inflight_chunks, BatchLimits()
    push(w, tasks[:48], "batch", window, limits)  # warm-up: sessions, lanes, Ray workers
    env = {k: v for k, v in os.environ.items() if k.startswith(("RAY_", "REPORTER_"))}
    print(json.dumps({"ready": name, "env": env}), flush=True)
    try:
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            if cmd[0] == "push":
                got = push(w, tasks[:int(cmd[1])], "batch", window, limits)
                print(json.dumps(got), flush=True)
            elif cmd[0] == "calls":  # Ray's per-call cost alone: no-op calls to the chunk actors, 32 in flight
                n, t0 = int(cmd[1]), time.perf_counter()
                refs: list[Any] = []
                for i in range(n):
                    refs.append(w.workers[i % len(w.workers)].ready.remote())
                    if len(refs) >= 32:
                        ray.get(refs.pop(0))
                ray.get(refs)
                print(json.dumps({"frames": n, "detect_s": 0.0, "wall_s": time.perf_counter() - t0, "failed": 0,
                                  "calls": n}), flush=True)
    finally:
        w._release_actors(ray)
        ray.shutdown()
    return 0


# ------------------------------------------------------------------ parent
class Variant:
    def __init__(self, name: str, chunks: int, config: Path | None) -> None:
        import pipeline.process.raysettings as rs

        env = {k: v for k, v in os.environ.items() if k not in rs.QUIET_RAY_ENV and k != "RAY_ADDRESS"}
        env.update(VARIANTS[name])
        argv = [sys.executable, __file__, "--child", name, "--chunks", str(chunks)]
        if config is not None:
            argv += ["--config", str(config)]
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready: dict[str, Any] = {}

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.ready = json.loads(line)
                return
        raise SystemExit(f"variant {self.name}: child exited ({self.proc.wait()}) before it was ready")

    def push(self, n: int, what: str = "push") -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{what} {n}\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("{"):
                return dict(json.loads(line))
        raise SystemExit(f"variant {self.name}: child exited during a push")

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _fmt(row: dict[str, float], scale: float = 1.0) -> str:
    return "  ".join(f"{k} {row[k] * scale:.4f}" for k in ROLES if k in row)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="today,adopted,nometrics,noevents,noeventstats,quietall")
    ap.add_argument("--load-variants", default="today,adopted", help="variants pushed under load ('' = none)")
    ap.add_argument("--idle-windows", type=int, default=4)
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--chunks", type=int, default=240)
    ap.add_argument("--calls", type=int, default=0,
                    help="also, per round and load variant, this many no-op actor calls (Ray's per-call cost)")
    ap.add_argument("--config", type=Path, default=None,
                    help="a stage config whose process block and policies the actors get (default: the defaults)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.chunks, args.config)
    names = args.variants.split(",")
    load_names = [x for x in args.load_variants.split(",") if x]
    bad = [x for x in names + load_names if x not in VARIANTS]
    if bad or any(x not in names for x in load_names):
        ap.error(f"unknown variant(s) {bad} (choose from {', '.join(VARIANTS)}); load variants must be in --variants")
    vs: dict[str, Variant] = {}
    idle: dict[str, dict[str, float]] = {n: dict.fromkeys(ROLES, 0.0) for n in names}
    idle_s = 0.0
    load: dict[str, dict[str, float]] = {n: {} for n in load_names}
    calls: dict[str, dict[str, float]] = {n: {} for n in load_names}
    try:
        for n in names:  # one at a time: start-up is CPU-heavy
            vs[n] = Variant(n, args.chunks, args.config)
            vs[n].wait_ready()
            print(f"{n}: ready, env {vs[n].ready['env']}", flush=True)
        time.sleep(10.0)
        for i in range(args.idle_windows):
            c0 = {n: tree_by_role(v.proc.pid) for n, v in vs.items()}
            t0 = time.perf_counter()
            time.sleep(args.idle_s)
            c1 = {n: tree_by_role(v.proc.pid) for n, v in vs.items()}
            dt = time.perf_counter() - t0
            idle_s += dt
            for n in names:
                d = _diff(c0[n], c1[n])
                for k in ROLES:
                    idle[n][k] += d[k]
                print(f"idle {i} {n:<12} total {sum(d.values()) / dt:.4f}  {_fmt(d, 1 / dt)}  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        for r in range(args.rounds):
            for n in (load_names if r % 2 == 0 else load_names[::-1]):
                v = vs[n]
                before = tree_by_role(v.proc.pid)
                got = v.push(args.chunks)
                d = _diff(before, tree_by_role(v.proc.pid))
                acc = load[n]
                for k, val in {**d, "frames": got["frames"], "detect_s": got["detect_s"], "wall_s": got["wall_s"],
                               "failed": got["failed"], "calls": got["calls"]}.items():
                    acc[k] = acc.get(k, 0.0) + val
                f = got["frames"]
                if args.calls:
                    before = tree_by_role(v.proc.pid)
                    got_c = v.push(args.calls, "calls")
                    dc = _diff(before, tree_by_role(v.proc.pid))
                    acc_c = calls[n]
                    for k, val in {**dc, "calls": got_c["calls"]}.items():
                        acc_c[k] = acc_c.get(k, 0.0) + val
                    print(f"calls {r} {n:<12} total/call {sum(dc.values()) / args.calls * 1e3:.4f} ms  "
                          f"{_fmt(dc, 1e3 / args.calls)} (ms)", flush=True)
                print(f"load {r} {n:<12} total/frame {sum(d.values()) / f:.4f}  {_fmt(d, 1 / f)}  detect "
                      f"{got['detect_s'] / f:.4f}  failed {got['failed']:.0f}  load {os.getloadavg()[0]:.1f}",
                      flush=True)
    finally:
        for v in vs.values():
            v.stop()
    out: dict[str, Any] = {"idle_cpu_s_per_s": {}, "load_cpu_s_per_frame": {}, "idle_s": round(idle_s, 1),
                           "chunks": args.chunks, "rounds": args.rounds, "load_avg": round(os.getloadavg()[0], 2)}
    print(f"\nidle CPU-s per second over {idle_s:.0f} s")
    for n in names:
        row = {k: round(idle[n][k] / idle_s, 4) for k in ROLES}
        row["total"] = round(sum(idle[n].values()) / idle_s, 4)
        out["idle_cpu_s_per_s"][n] = row
        print(f"{n:<12} total {row['total']:.4f}  {_fmt(row)}")
    if load_names:
        print("\nunder load, CPU-s per frame")
    for n in load_names:
        t = load[n]
        f = t["frames"]
        row = {k: round(t[k] / f, 5) for k in ROLES}
        row["total"] = round(sum(t[k] for k in ROLES) / f, 5)
        row["detect_reported"] = round(t["detect_s"] / f, 5)
        row["failed"] = int(t["failed"])
        row["chunks_per_call"] = round(f / t["calls"], 2)
        out["load_cpu_s_per_frame"][n] = row
        print(f"{n:<12} total {row['total']:.5f}  {_fmt(row)}  detect {row['detect_reported']:.5f}")
    if args.calls:
        print("\nno-op actor calls, CPU-ms per call")
        out["call_cpu_ms"] = {}
        for n in load_names:
            t = calls[n]
            row = {k: round(t[k] / t["calls"] * 1e3, 4) for k in ROLES}
            row["total"] = round(sum(t[k] for k in ROLES) / t["calls"] * 1e3, 4)
            out["call_cpu_ms"][n] = row
            print(f"{n:<12} total {row['total']:.4f}  {_fmt(row)}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
