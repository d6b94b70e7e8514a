"""``veilstream redact INPUT -o OUT --keep-subject X,Y,W,H[@FRAME]``: a subject copy of a local file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from schemas.errors import InputError


def redact_file_keep_subject(src: str, output: Path, spec: str, *, style: str = "mosaic", model_dir: str | None = None,
                             max_pixels: int | None = None) -> dict[str, Any]:
    """Mask everyone but the subject in a video file; writes ``output`` (H.264 MP4, the
    source timestamps) and ``output`` with ``.json`` (the report). Returns the report."""
    from operators.subject import redact_keep_subject, subject_redactor
    from operators.video import VideoReader, VideoWriter
    from pipeline.redact_file import output_path_for

    from .clips import too_long
    from .export import parse_subject

    subject = parse_subject(spec, time_ok=False)
    reader = VideoReader(src)
    info = reader.info
    if max_pixels and info.width * info.height > max_pixels:
        reader.close()
        raise InputError(f"video {src!r}: {info.width}x{info.height} frames exceed --max-pixels {max_pixels}")
    subject.check_inside(info.width, info.height)
    frames: list[Any] = []
    pts: list[int] = []
    with reader:
        for chunk in reader.chunks(64):
            frames.extend(chunk.frames)
            pts.extend(int(p) for p in chunk.pts)
            err = too_long(len(frames), int(frames[0].nbytes) if frames else 0, info.fps or 25.0, repr(src))
            if err is not None:
                raise err
    if not frames:
        raise InputError(f"{src!r}: no decodable video frames")
    start = subject.frame or 0
    if not 0 <= start < len(frames):
        raise InputError(f"--keep-subject @{start}: the video has frames 0..{len(frames) - 1}")
    kw: dict[str, Any] = {"model_dir": model_dir} if model_dir else {}
    res = redact_keep_subject(np.stack(frames), subject.xyxy, start, redactor=subject_redactor(style, **kw))
    dst = output_path_for(Path(src), output)
    tmp = dst.with_name(dst.name + ".part.mp4")
    writer = VideoWriter(tmp, info.width, info.height, info.fps, info.time_base)
    try:
        writer.write(res.frames, np.asarray(pts, np.int64))
        writer.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dst)
    report = res.report()
    report.update(source=src, output=str(dst), subject={"box_xywh": [subject.x, subject.y, subject.w, subject.h],
                                                        "frame": start})
    rp = dst.with_suffix(".json")
    report["report"] = str(rp)
    rp.write_text(json.dumps(report, indent=2) + "\n")
    return report
