"""Where ``veilstream redact``'s wall time and memory go on the bench's 720p input.

Runs :func:`pipeline.redact_file.redact_video` in this process (default CLI settings:
faces + plates, mosaic, detect every 4th frame) while a sampler thread reads every thread's
CPU time from ``/proc/self/task`` and both cores' idle time from ``/proc/stat`` every
``--interval`` seconds. Reports, per run:

* wall seconds of each phase (building the detectors, the redact call);
* CPU-seconds per thread group (the detecting main thread, the decode thread, the finishing
  thread, inference pool threads, encoder/decoder library threads, ...);
* how many cores the process kept busy: the share of samples at < 0.5, 0.5-1.5, > 1.5 cores,
  and the cores' idle time (whole machine: other work on the host shows here too);
* peak RSS (``ru_maxrss`` of a fresh child process per run: ``--child``);
* ``--hash``: a hash of every frame handed to the encoder and of every planned box (and of the
  written file decoded back), so two code versions can be compared for identical output; with
  ``--env VEIL_PROFILE_SYNC_COMPILE=1`` OpenVINO's static-shape compiles run in the calling
  thread, so the boxes' scores do not depend on when a compile finished.

Each run is a fresh subprocess (so peak RSS and start-up are a user's), ``--rounds`` times.
Prints one JSON line per run. Never asserts on times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TICK = os.sysconf("SC_CLK_TCK")


def _threads() -> dict[int, tuple[str, float]]:
    """tid -> (comm, CPU seconds) of every thread of this process."""
    out: dict[int, tuple[str, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        fields = s[s.rindex(")") + 2:].split()
        out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def _cpu_idle() -> list[float]:
    """Idle + iowait seconds of each core since boot."""
    idle = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = line.split()
                idle.append((int(v[4]) + int(v[5])) / TICK)
    return idle


class Sampler:
    """Samples per-thread CPU and per-core idle time on a thread of its own."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last: dict[int, tuple[str, float]] = {}
        self.names: dict[int, str] = {}
        self.busy: list[float] = []  # process CPU per sample, in cores
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="profile-sampler", daemon=True)

    def _run(self) -> None:
        prev_total, prev_t = sum(c for _, c in _threads().values()), time.perf_counter()
        while not self._stop.wait(self.interval):
            th = _threads()
            for tid, v in th.items():
                self.last[tid] = v
            for t in threading.enumerate():
                if t.native_id is not None:
                    self.names[t.native_id] = t.name
            total, now = sum(c for _, c in self.last.values()), time.perf_counter()
            self.busy.append((total - prev_total) / (now - prev_t))
            prev_total, prev_t = total, now

    def __enter__(self) -> Sampler:
        self.start_threads = _threads()
        self.idle0, self.t0 = _cpu_idle(), time.perf_counter()
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        for tid, v in _threads().items():
            self.last[tid] = v
        self.wall = time.perf_counter() - self.t0
        self.idle = [b - a for a, b in zip(self.idle0, _cpu_idle())]

    def groups(self) -> dict[str, float]:
        """CPU seconds spent during the sampled span, per thread group."""
        me = self._t.native_id
        out: dict[str, float] = {}
        for tid, (comm, cpu) in self.last.items():
            if tid == me:
                continue
            spent = cpu - self.start_threads.get(tid, (comm, 0.0))[1]
            name = self.names.get(tid)
            if tid == os.getpid():
                g = "main (detect)"
            elif name is not None:
                g = name.rstrip("0123456789_") or name
            else:
                g = f"native:{comm}"
            out[g] = round(out.get(g, 0.0) + spent, 3)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def output_hash(path: Path) -> str:
    from operators.video import VideoReader

    h = hashlib.sha256()
    with VideoReader(path) as r:
        for c in r.chunks(64):
            h.update(c.frames.tobytes())
            h.update(c.pts.tobytes())
    return h.hexdigest()[:16]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timeline(t0: float) -> list[tuple[str, str, float, float]]:
    """Wrap the redact path's stages so each call is logged as (thread, stage, start, end)."""
    from operators.redactor import Redactor
    from operators.video import VideoReader, VideoWriter

    log: list[tuple[str, str, float, float]] = []

    def wrap(cls: Any, name: str) -> None:
        fn = getattr(cls, name)

        def timed(*a: Any, **k: Any) -> Any:
            s = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                log.append((threading.current_thread().name, name, s - t0, time.perf_counter() - t0))
        setattr(cls, name, timed)

    for cls, name in ((Redactor, "detect"), (Redactor, "plan_from"), (Redactor, "apply"), (VideoWriter, "write"),
                      (VideoWriter, "close")):
        wrap(cls, name)
    chunks = VideoReader.chunks

    def logged_chunks(self: Any, n: int, *a: Any, **k: Any) -> Any:
        it = chunks(self, n, *a, **k)
        while True:
            s = time.perf_counter()
            try:
                c = next(it)
            except StopIteration:
                return
            log.append((threading.current_thread().name, "decode", s - t0, time.perf_counter() - t0))
            yield c
    VideoReader.chunks = logged_chunks  # type: ignore[method-assign]
    return log


def _hashing() -> dict[str, Any]:
    """Hash every frame handed to the encoder (with its pts) and every box the finisher planned:
    the redacted output before x264 (whose output moved between runs of identical frames)."""
    from operators.redactor import Redactor
    from operators.video import VideoWriter

    h = {"frames": hashlib.sha256(), "boxes": hashlib.sha256(), "geometry": hashlib.sha256()}
    write, finish = VideoWriter.write, Redactor.finish

    def hashed_write(self: Any, frames: Any, pts: Any) -> None:
        for f in frames:
            h["frames"].update(f.tobytes())
        h["frames"].update(pts.tobytes())
        write(self, frames, pts)

    def hashed_finish(self: Any, *a: Any, **k: Any) -> Any:
        res = finish(self, *a, **k)
        for b in res.boxes:
            h["boxes"].update(b.xyxy.tobytes() + b.label.tobytes() + b.score.tobytes())
            h["geometry"].update(b.xyxy.round(1).tobytes() + b.label.tobytes())
        return res
    VideoWriter.write = hashed_write  # type: ignore[method-assign]
    Redactor.finish = hashed_finish  # type: ignore[method-assign]
    return h


def child(src: Path, out: Path, interval: float, timeline: bool, kw: dict[str, Any],
          hashes: bool = False, deferred: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    from operators.redactor import RedactionConfig, Redactor
    from pipeline.redact_file import redact_video

    t_import = time.perf_counter() - t0
    rss_import = _rss_mib()
    if os.environ.get("VEIL_PROFILE_SYNC_COMPILE"):
        # OpenVINO's static-shape compiles in the calling thread: which frames the static model
        # serves no longer depends on timing (its scores differ from the dynamic model's in the
        # last bits), so two code versions can be compared box for box.
        from operators.ovsession import OpenVinoSession

        init = OpenVinoSession.__init__

        def sync_init(self: Any, *a: Any, **k: Any) -> None:
            init(self, *a, **k)
            self.synchronous_compile = True
        OpenVinoSession.__init__ = sync_init  # type: ignore[method-assign]
    cfg = RedactionConfig(classes=("face", "plate"), style="mosaic", detect_every=4).validate()
    with Sampler(interval) as build:
        red: Any = Redactor(cfg) if not deferred else None
    if deferred:  # built by redact_video beside the first chunks' decoding, as the CLI does
        from pipeline.redact_file import DeferredRedactor

        red = DeferredRedactor(cfg)
    rss_build = _rss_mib()
    t1 = time.perf_counter()
    log = _timeline(t1) if timeline else []
    h = _hashing() if hashes else None
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    with Sampler(interval) as s:
        summary = redact_video(red, str(src), out, progress=False, **kw)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    busy = s.busy or [0.0]
    n = len(busy)
    return {
        "frames": summary.frames,
        "import_s": round(t_import, 3),
        "build_s": round(build.wall, 3), "build_cpu_s": round(sum(build.groups().values()), 3),
        "redact_s": round(s.wall, 3),
        "redact_cpu_s": round(sum(s.groups().values()), 3),
        "redact_user_sys_s": [round(ru1.ru_utime - ru0.ru_utime, 2), round(ru1.ru_stime - ru0.ru_stime, 2)],
        "redact_minflt": ru1.ru_minflt - ru0.ru_minflt,
        "detect_s": round(summary.detect_seconds, 3),
        "wait_decode_s": round(getattr(summary, "wait_decode_seconds", -1.0), 3),
        "wait_finish_s": round(getattr(summary, "wait_finish_seconds", -1.0), 3),
        "wait_build_s": round(getattr(summary, "wait_build_seconds", -1.0), 3),
        "cpu_by_thread": s.groups(),
        "busy_cores_share": {"<0.5": round(sum(b < 0.5 for b in busy) / n, 3),
                             "0.5-1.5": round(sum(0.5 <= b < 1.5 for b in busy) / n, 3),
                             ">=1.5": round(sum(b >= 1.5 for b in busy) / n, 3)},
        "core_idle_s": [round(x, 3) for x in s.idle],
        "masks": summary.masks_per_class,
        "rss_mib": {"after_import": round(rss_import, 1), "after_build": round(rss_build, 1),
                    "end": round(_rss_mib(), 1)},
        "peak_rss_mib": round(_peak_mib(), 1),
        **({"frames_sha": h["frames"].hexdigest()[:16], "boxes_sha": h["boxes"].hexdigest()[:16],
                "boxes_geometry_sha": h["geometry"].hexdigest()[:16]} if h else {}),
        **({"timeline": [(th, st, round(a, 3), round(b, 3)) for th, st, a, b in log]} if log else {}),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--input", type=Path, default=None, help="a 720p input made before (default: make one)")
    ap.add_argument("--env", action="append", default=[], metavar="K=V",
                    help="environment of the child runs (repeatable)")
    ap.add_argument("--hash", action="store_true", help="hash the output frames of each run")
    ap.add_argument("--timeline", action="store_true", help="log each stage call (thread, stage, start, end)")
    ap.add_argument("--in-flight", type=int, default=None,
                    help="redact_video's chunks_in_flight (default: its own default)")
    ap.add_argument("--deferred", action="store_true",
                    help="pass a DeferredRedactor (the CLI's way: detectors built beside decoding)")
    ap.add_argument("--child", nargs=2, metavar=("SRC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]), args.interval, args.timeline,
                               {} if args.in_flight is None else {"chunks_in_flight": args.in_flight},
                               args.hash, args.deferred)))
        return 0
    from load_tests.bench_redact import make_720p_input

    tmp = Path(tempfile.mkdtemp(prefix="veil-prof-"))
    src = args.input or make_720p_input(tmp / "input_720p.mp4", args.seconds)
    env = dict(os.environ, **dict(kv.split("=", 1) for kv in args.env))
    for i in range(args.rounds):
        out = tmp / f"out{i}.mp4"
        r = subprocess.run([sys.executable, __file__, "--interval", str(args.interval), "--child", str(src), str(out)]
                           + (["--timeline"] if args.timeline else []) + (["--hash"] if args.hash else [])
                           + (["--deferred"] if args.deferred else [])
                           + ([] if args.in_flight is None else ["--in-flight", str(args.in_flight)]),
                           env=env, capture_output=True, text=True, check=False)
        if r.returncode:
            raise SystemExit(f"child failed (rc {r.returncode}):\n{r.stderr[-2000:]}")
        rep = json.loads(r.stdout.strip().splitlines()[-1])
        if args.hash:
            rep["output_file_sha"] = output_hash(out)
        rep["load1"] = os.getloadavg()[0]
        print(json.dumps(rep), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
