"""A deterministic crowded 1280x720 clip for the load tests (issue "Throughput": 3 cameras of
crowded 720p, not only vtest's few pedestrians).

    .venv/bin/python load_tests/crowd_source.py [--out out/load/sources]   # builds and prints the path

Built on first use from the shared eval set ``faces_wider_hard`` (``$VEILSTREAM_EVAL_DIR`` or
``../shared/eval``): the first :data:`IMAGES` images by file name with 30 to 80 labelled faces
(parades, rallies, meetings: about 40 people a frame), each shown for :data:`SECONDS_PER_IMAGE`
seconds as a camera would see it: cropped to 16:9, scaled to cover 1280x720, slowly zooming
(x1.00 -> x1.15) and panning across the picture, written at 15 fps with PyAV's libx264
(crf 16). The same inputs give the same frames; the file is cached under the build directory
(``out/load/sources/crowd-master-1280x720.mp4``), never committed (the eval images are for
internal measurement only: shared/eval/README.md). ``pipeline_load.py --source crowd`` then
re-encodes it like any source (size, fps, keyframe every 2 s).
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGES = 6
"""How many crowd images the clip shows, one after the other."""
SECONDS_PER_IMAGE = 4.0
FPS = 15
MIN_FACES, MAX_FACES = 30, 80
"""Labelled faces per image chosen: a crowded hall, not a stadium."""
WIDTH, HEIGHT = 1280, 720


def crowd_images(eval_dir: Path | None = None, count: int = IMAGES) -> list[Path]:
    """The ``count`` crowd images of ``faces_wider_hard`` the clip shows (first by name)."""
    from operators.evaldata import default_eval_dir

    base = (eval_dir or default_eval_dir()) / "faces_wider_hard"
    labels = base / "labels.json"
    if not labels.is_file():
        raise SystemExit(f"crowd source needs the shared eval set: {labels} not found "
                         f"(set VEILSTREAM_EVAL_DIR or put shared/eval beside the project)")
    doc = json.loads(labels.read_text())
    names = sorted(im["file"] for im in doc["images"] if MIN_FACES <= len(im["boxes"]) <= MAX_FACES)
    if len(names) < count:
        raise SystemExit(f"crowd source: only {len(names)} images with {MIN_FACES}-{MAX_FACES} faces in {labels}")
    return [base / "images" / n for n in names[:count]]


def crowd_frames(images: list[Path], fps: int = FPS, seconds: float = SECONDS_PER_IMAGE,
                 width: int = WIDTH, height: int = HEIGHT):  # type: ignore[no-untyped-def]
    """Yield the clip's BGR frames (``height x width x 3`` uint8), deterministically."""
    import cv2

    per = max(1, int(round(fps * seconds)))
    for idx, path in enumerate(images):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"crowd source: cannot read {path}")
        ih, iw = img.shape[:2]
        cover = max(width / iw, height / ih)
        for k in range(per):
            t = k / max(1, per - 1)
            z = cover * (1.0 + 0.15 * t)
            # the view (in image px) pans left -> right on even images, right -> left on odd ones
            vw, vh = width / z, height / z
            fx = t if idx % 2 == 0 else 1.0 - t
            cx = vw / 2 + fx * (iw - vw)
            cy = vh / 2 + 0.5 * (ih - vh)
            m = np.array([[z, 0.0, width / 2 - z * cx], [0.0, z, height / 2 - z * cy]], np.float64)
            yield cv2.warpAffine(img, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def build_crowd_clip(cache: Path, eval_dir: Path | None = None) -> Path:
    """The crowd clip's path under ``cache``, built once (PyAV, libx264)."""
    import av

    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"crowd-master-{WIDTH}x{HEIGHT}.mp4"
    if out.is_file():
        return out
    images = crowd_images(eval_dir)
    tmp = out.with_suffix(".tmp.mp4")
    rate = Fraction(FPS)
    with av.open(str(tmp), "w") as dst:
        st = dst.add_stream("libx264", rate=rate)
        st.width, st.height, st.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        st.options = {"preset": "veryfast", "crf": "16", "bf": "0", "threads": "1"}
        for n, bgr in enumerate(crowd_frames(images)):
            f = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
            f.pts, f.time_base = n, 1 / rate
            for pkt in st.encode(f):
                dst.mux(pkt)
        for pkt in st.encode(None):
            dst.mux(pkt)
    tmp.rename(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "load" / "sources")
    args = ap.parse_args()
    print(build_crowd_clip(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
