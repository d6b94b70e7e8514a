"""What one chunk of each ``make demo`` camera costs the process stage, without the stack.

Cuts each demo camera's sample video into chunks exactly as ingest does
(:func:`pipeline.ingest.source.camera_chunks`: H.264 passthrough GOP by GOP, or JPEG frames
for a camera with ``codec: jpeg``), then runs every chunk through the process stage's own
actors in this process (:class:`~pipeline.process.actors.ChunkActor` and
:class:`~pipeline.process.actors.DetectorActor`, the same code Ray runs, awaited directly), and
prints per camera: chunk length, frames detected, CPU-s per step (decode, detect, mask, encode,
as the actors count them), the CPU-s per second of video, and the chunk's wall time in the actor.

The config is a run config (``.veilstream/demo/run-config.yaml`` after a ``make demo``, or any
worker config whose ``policies_dir`` has the demo's ``default`` and ``street`` policies);
``--set process.KEY=VALUE`` / ``--set ingest.chunk_seconds=1`` / ``--codec jpeg`` try other
settings; ``detectors=2`` gives the chunk actor two detector actors, so a chunk's scheduled frames
may be split across them (``ChunkActor._detect``; both run in this process, so the ``detect``
column counts both halves' process CPU twice: read the CPU-s/s column, the process's own). Several ``--variant`` runs are interleaved round by round in one process, so
they see the same machine load: compare within one run (CPU-s are robust to load, wall time is
not).

    python load_tests/demo_chunk_cost.py --config .veilstream/demo/run-config.yaml \\
        --variant base: --variant 1s-jpeg:ingest.chunk_seconds=1,codec=jpeg --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.ingest.source import camera_chunks  # noqa: E402
from pipeline.process.actors import ChunkActor, ChunkTask, DetectorActor  # noqa: E402
from pipeline.process.plan import build_plan  # noqa: E402
from pipeline.runner import camera_records  # noqa: E402
from schemas.config import parse_camera, parse_config  # noqa: E402


def read_run_config(ap: argparse.ArgumentParser, path: Path) -> tuple[dict[str, Any], set[str]]:
    """The run config at ``path`` as a mapping (``ap.error`` when there is none) and the policy
    ids of its ``policies_dir``."""
    if not path.is_file():
        ap.error(f"--config {path}: no such file (run `make demo` once: it writes .veilstream/demo/run-config.yaml)")
    raw = yaml.safe_load(path.read_text())
    pdir = raw.get("policies_dir")
    return raw, ({p.stem for p in Path(pdir).glob("*.yaml")} if pdir else set())


def local_demo(ap: argparse.ArgumentParser, path: Path, seconds: float) -> tuple[Any, Any, list[ChunkTask]]:
    """The run config at ``path`` on a local Ray (``ray.address`` cleared), its masking plan,
    and the chunks of the demo's three cameras for about ``seconds`` of video each
    (:func:`demo_chunks` at the config's chunk length, codec ``auto``)."""
    raw, policies = read_run_config(ap, path)
    raw.setdefault("ray", {})["address"] = None
    cfg = parse_config(raw)
    plan = build_plan(cfg, model_dir=os.environ.get("VEILSTREAM_MODEL_DIR") or None)
    return cfg, plan, demo_chunks(3, float(cfg.ingest.chunk_seconds), "auto", policies, seconds)


def _coerce(v: str) -> Any:
    return yaml.safe_load(v)


def variant_config(raw: dict[str, Any], settings: dict[str, str]) -> tuple[Any, float, str, dict[str, Any]]:
    """(config, chunk_seconds, codec, detector overrides) of ``raw`` with ``settings`` applied:
    ``section.key`` -> value into the config, ``redaction.FIELD`` -> value onto the detector
    actor's ``RedactionConfig`` (a detection setting no config key exposes)."""
    raw = json.loads(json.dumps(raw))
    codec = settings.get("codec", "auto")
    det: dict[str, Any] = {}
    for k, v in settings.items():
        if k in ("codec", "detectors"):
            continue
        if k.startswith("redaction."):
            det[k.split(".", 1)[1]] = _coerce(v)
            continue
        *path, key = k.split(".")
        node = raw
        for part in path:
            node = node.setdefault(part, {})
        node[key] = _coerce(v)
    cfg = parse_config(raw)
    return cfg, float(cfg.ingest.chunk_seconds), codec, det


def demo_chunks(cameras: int, chunk_seconds: float, codec: str, policies: set[str], seconds: float) -> list[ChunkTask]:
    """The chunks of the demo's cameras for about ``seconds`` of video each (ingest's own cutting)."""
    tasks: list[ChunkTask] = []
    for rec in camera_records(cameras, policies):
        rec = {**rec, "loop": False, "realtime": False, "codec": codec}
        cam = parse_camera(rec)
        got = 0.0
        while got < seconds:
            for raw in camera_chunks(cam, chunk_seconds, 90):
                dur = (raw.pts_ms[-1] - raw.pts_ms[0]) / 1000.0 + 1.0 / raw.fps
                tasks.append(ChunkTask(raw.codec, raw.payload, cam.camera_id, raw.fps, raw.pts_ms, raw.width,
                                       raw.height, rec.get("policy_id")))
                got += dur
                if got >= seconds:
                    break
    return tasks


class _Local:
    """A detector actor handle for an in-process ChunkActor: ``detect.remote`` awaits the real one."""

    def __init__(self, det: DetectorActor) -> None:
        self.detect = SimpleNamespace(remote=det.detect)

        async def pending() -> int:
            return det.pending_px()
        self.pending_px = SimpleNamespace(remote=pending)


async def run_chunks(actor: ChunkActor, tasks: list[ChunkTask]) -> list[dict[str, Any]]:
    rows = []
    for t in tasks:
        w0, c0 = time.monotonic(), time.process_time()
        res = await actor.redact(t)
        if res.failed_stage is not None or res.fail_closed_frames:
            raise SystemExit(f"chunk of {t.camera_id} failed: {res.failed_stage} {res.error} {res.errors}")
        dur = (t.pts_ms[-1] - t.pts_ms[0]) / 1000.0 + 1.0 / t.fps
        rows.append({"camera": t.camera_id, "frames": len(t.pts_ms), "seconds": dur, "wall_s": time.monotonic() - w0,
                     "process_cpu_s": time.process_time() - c0, **{f"cpu_{k}": v for k, v in res.cpu_s.items()}})
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        s = out.setdefault(r["camera"], {"chunks": 0, "frames": 0, "seconds": 0.0, "wall_s": 0.0, "process_cpu_s": 0.0})
        s["chunks"] += 1
        for k, v in r.items():
            if k != "camera":
                s[k] = s.get(k, 0.0) + v
    total = {"chunks": 0.0, "seconds": 0.0, "process_cpu_s": 0.0, "wall_s": 0.0}
    for s in out.values():
        for k in total:
            total[k] += s[k]
    out["all"] = total
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path(".veilstream/demo/run-config.yaml"))
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:key=value,key=value (keys: section.key of the config, redaction.FIELD of the "
                         "detectors' RedactionConfig, codec=jpeg|auto, or detectors=N)")
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="video per camera per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    raw, policies = read_run_config(ap, args.config)
    variants = []
    detectors: list[DetectorActor] = []
    for spec in args.variant or ["base:"]:
        name, _, rest = spec.partition(":")
        settings = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
        cfg, chunk_s, codec, det_over = variant_config(raw, settings)
        plan = build_plan(cfg, model_dir=os.environ.get("VEILSTREAM_MODEL_DIR") or None)
        if det_over:
            plan = replace(plan, detector=replace(plan.detector, **det_over).validate())
        dets = [DetectorActor(plan, max_batch_frames=cfg.ray.detector.batch_size,
                              max_wait_s=cfg.ray.detector.max_wait_ms / 1000.0, timeout_s=600.0)
                for _ in range(max(1, int(settings.get("detectors", "1"))))]
        actor = ChunkActor(plan, [_Local(d) for d in dets], crf=cfg.process.crf, preset=cfg.process.preset,
                           detector_timeout_s=600.0)
        tasks = demo_chunks(args.cameras, chunk_s, codec, policies, args.seconds)
        variants.append((name, settings, actor, tasks))
        detectors += dets
    loop = asyncio.new_event_loop()  # one loop: the detector actors' batch loops live in it
    # warm-up: one chunk of each camera per variant (session start, first-call allocations)
    for _name, _s, actor, tasks in variants:
        seen: set[str] = set()
        loop.run_until_complete(run_chunks(actor, [t for t in tasks if not (t.camera_id in seen or seen.add(t.camera_id))]))
    results: dict[str, list[dict[str, Any]]] = {v[0]: [] for v in variants}
    for _ in range(args.rounds):
        for name, _s, actor, tasks in variants:
            results[name] += loop.run_until_complete(run_chunks(actor, tasks))
    for d in detectors:  # stop the batch loops before the loop closes
        if d._loop_task is not None:
            d._loop_task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    report = {}
    for name, settings, _a, _t in variants:
        summ = summarize(results[name])
        report[name] = {"settings": settings, "per_camera": summ}
        print(f"\n== {name} {settings}")
        print("CPU-s per chunk by step; CPU-s/s: the process's CPU (all threads) per second of video")
        print(f"{'camera':8s} {'chunks':>6s} {'s/chunk':>7s} {'decode':>7s} {'detect':>7s} {'mask':>7s} "
              f"{'encode':>7s} {'CPU-s/s':>8s} {'wall/chunk':>10s}")
        for cam, s in summ.items():
            if cam == "all":
                continue
            n, sec = s["chunks"], s["seconds"]
            print(f"{cam:8s} {n:6.0f} {sec / n:7.2f} "
                  + " ".join(f"{s.get('cpu_' + k, 0.0) / n:7.3f}" for k in ("decode", "detect", "mask", "encode"))
                  + f" {s['process_cpu_s'] / sec:8.3f} {s['wall_s'] / n:10.2f}")
        a = summ["all"]
        demo_rate = sum(s["process_cpu_s"] / s["seconds"] for cam, s in summ.items() if cam != "all")
        report[name]["demo_cpu_s_per_s"] = demo_rate
        print(f"the {args.cameras} cameras at once: {demo_rate:.2f} CPU-s of the process stage per second of the demo; "
              f"process CPU / wall {a['process_cpu_s'] / a['wall_s']:.2f} (wall time: read only on a quiet machine)")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
