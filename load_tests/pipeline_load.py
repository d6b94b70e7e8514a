"""N simulated cameras through the real pipeline on the local stack; prints throughput,
end-to-end latency, drops and what landed in the bucket, as a table and one JSON line.

    .venv/bin/python load_tests/pipeline_load.py --cameras 4 --seconds 60

Never pass/fail on absolute numbers: compare runs on the same machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()

    from pipeline import runner

    captured: dict[str, dict] = {}
    real_report = runner.report

    def report(cfg, t_start, out=print, download_dir=None):  # noqa: ANN001 - wraps runner.report
        per_cam = real_report(cfg, t_start, out, download_dir)
        captured.update(per_cam)
        return per_cam

    runner.report = report  # type: ignore[assignment]
    t0 = time.time()
    rc = runner.run_local(cameras=args.cameras, seconds=args.seconds,
                          state_dir=ROOT / ".veilstream" / "load", segment_seconds=20.0)
    wall = time.time() - t0
    frames = sum(c["frames"] for c in captured.values())
    dropped = sum(c["dropped"] for c in captured.values())
    lat = [c["latency_p50_s"] for c in captured.values() if c.get("latency_p50_s") is not None]
    result = {
        "cameras": args.cameras, "stream_seconds": args.seconds, "wall_seconds": round(wall, 1),
        "frames_stored": frames, "frames_dropped": dropped,
        "stored_fps_over_stream": round(frames / args.seconds, 1) if args.seconds else None,
        "segments": sum(c["segments"] for c in captured.values()),
        "latency_p50_s_per_camera": {k: round(v["latency_p50_s"], 2) for k, v in captured.items()
                                     if v.get("latency_p50_s") is not None},
        "latency_p50_s_worst_camera": round(max(lat), 2) if lat else None,
        "exit_code": rc,
    }
    print(json.dumps(result))
    return rc


if __name__ == "__main__":
    sys.exit(main())
