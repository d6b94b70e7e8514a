"""Loaders for the labelled evaluation sets in ``shared/eval`` (see its README).

Each loader returns a list of :class:`EvalItem`, one per image, with every target in
ORIGINAL image pixels:

* ``face_boxes``: ``(K, 4)`` float32 xyxy (faces_dlib: tight eyes-nose-mouth boxes).
* ``face_points``: one ``(P, 2)`` float32 array per COCO face target: the nose first, then
  every labelled eye (P = 2 or 3). A face is protected when all of them are masked.
* ``head_points``: parallel to ``face_points``: nose, labelled eyes, then labelled ears;
  for estimating face size (ears span most of a face's width).
* ``plate_boxes`` / ``person_boxes``: ``(K, 4)`` float32 xyxy.
* ``ignore_boxes``: ``(K, 4)`` float32 xyxy of faces_wider_hard ``ignore`` faces (< 10 px or
  flagged invalid): they count neither as a leak nor as a find.
* ``tags``: per-image facts for breakdowns (plates_traffic ``source`` prefix ``ro``/``kg``,
  ``night``, ``blank``; faces_wider_hard ``event``). ``blank`` is ``"1"`` for an image whose
  pixels are all zero (plates_traffic ``ro_dayride_type1_001_t0558.jpg``, a bad frame of its
  source video, per the set's README): its labels cannot be scored by pixel difference, so
  the scorer reports them apart (``plate_blank``) and out of every leak rate.

The data is for measurement only (licences in the README): nothing here copies it.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

EVAL_DIR_ENV = "VEILSTREAM_EVAL_DIR"

BoxArray = npt.NDArray[np.float32]


def _no_boxes() -> BoxArray:
    return np.zeros((0, 4), np.float32)


@dataclass
class EvalItem:
    """One labelled image."""

    image_path: Path
    face_boxes: BoxArray = field(default_factory=_no_boxes)
    face_points: list[npt.NDArray[np.float32]] = field(default_factory=list)
    head_points: list[npt.NDArray[np.float32]] = field(default_factory=list)
    plate_boxes: BoxArray = field(default_factory=_no_boxes)
    person_boxes: BoxArray = field(default_factory=_no_boxes)
    plate_texts: list[str] = field(default_factory=list)
    ignore_boxes: BoxArray = field(default_factory=_no_boxes)
    tags: dict[str, str] = field(default_factory=dict)


def default_eval_dir() -> Path:
    """``$VEILSTREAM_EVAL_DIR``, else ``../shared/eval`` next to the project root."""
    env = os.environ.get(EVAL_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "eval"


def _boxes(rows: list[list[float]]) -> BoxArray:
    return np.asarray(rows, np.float32).reshape(-1, 4)


def load_faces_dlib(directory: str | os.PathLike[str] | None = None) -> list[EvalItem]:
    """faces_dlib: ``training.xml`` + ``testing.xml`` boxes (``top left width height``)."""
    d = Path(directory) if directory is not None else default_eval_dir() / "faces_dlib"
    items: list[EvalItem] = []
    for xml_name in ("training.xml", "testing.xml"):
        root = ET.parse(d / xml_name).getroot()
        for img in root.iter("image"):
            rows = []
            for b in img.iter("box"):
                x, y = float(b.get("left", 0)), float(b.get("top", 0))
                rows.append([x, y, x + float(b.get("width", 0)), y + float(b.get("height", 0))])
            items.append(EvalItem(image_path=d / str(img.get("file")), face_boxes=_boxes(rows)))
    return items


def load_coco(directory: str | os.PathLike[str] | None = None) -> list[EvalItem]:
    """coco_val2017: face targets from keypoints, persons from instances (crowds ignored)."""
    d = Path(directory) if directory is not None else default_eval_dir() / "coco_val2017"
    ann_dir = d / "annotations"
    inst = json.loads((ann_dir / "instances_val2017.json").read_text())
    kps = json.loads((ann_dir / "person_keypoints_val2017.json").read_text())
    images = {im["id"]: im for im in inst["images"]}
    images.update({im["id"]: im for im in kps["images"]})
    persons: dict[int, list[list[float]]] = {i: [] for i in images}
    for a in inst["annotations"]:
        if a.get("category_id") == 1 and not a.get("iscrowd", 0):
            x, y, w, h = a["bbox"]
            persons.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    faces: dict[int, list[npt.NDArray[np.float32]]] = {i: [] for i in images}
    heads: dict[int, list[npt.NDArray[np.float32]]] = {i: [] for i in images}
    for a in kps["annotations"]:
        if a.get("iscrowd", 0):
            continue
        k = np.asarray(a.get("keypoints", []), np.float32).reshape(-1, 3)
        if len(k) < 5 or k[0, 2] <= 0 or (k[1, 2] <= 0 and k[2, 2] <= 0):
            continue
        face_idx = [0] + [i for i in (1, 2) if k[i, 2] > 0]
        head_idx = face_idx + [i for i in (3, 4) if k[i, 2] > 0]
        faces.setdefault(a["image_id"], []).append(k[face_idx, :2].copy())
        heads.setdefault(a["image_id"], []).append(k[head_idx, :2].copy())
    items = []
    for image_id in sorted(images, key=lambda i: images[i]["file_name"]):
        items.append(EvalItem(
            image_path=d / "images" / images[image_id]["file_name"],
            face_points=faces.get(image_id, []),
            head_points=heads.get(image_id, []),
            person_boxes=_boxes(persons.get(image_id, [])),
        ))
    return items


def load_plates_eu(directory: str | os.PathLike[str] | None = None) -> list[EvalItem]:
    """plates_eu: one ``<name>.txt`` per image: ``image_file x y w h plate_text``."""
    d = Path(directory) if directory is not None else default_eval_dir() / "plates_eu"
    items = []
    for txt in sorted(d.glob("*.txt"), key=lambda p: (len(p.stem), p.stem)):
        rows, texts = [], []
        image_file = None
        for line in txt.read_text().splitlines():
            parts = line.split()
            if len(parts) < 5:
                continue
            image_file = parts[0]
            x, y, w, h = (float(v) for v in parts[1:5])
            rows.append([x, y, x + w, y + h])
            texts.append(" ".join(parts[5:]))
        if image_file is None:
            continue
        items.append(EvalItem(image_path=d / image_file, plate_boxes=_boxes(rows), plate_texts=texts))
    return items


def _labels_json(d: Path) -> list[dict[str, Any]]:
    path = d / "labels.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(path)!r} not found: expected the shared eval set (see shared/eval/README.md)") \
            from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{str(path)!r}: expected {{\"images\": [...]}}")
    return images


def blank_image(path: str | os.PathLike[str]) -> bool:
    """Whether every pixel of the image at ``path`` is zero (an unreadable file is not
    blank: reading it later fails with its own error). A 1/8-scale decode rules out almost
    every image; only a candidate is decoded in full."""
    import cv2

    small = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if small is None or small.any():
        return False
    full = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return full is not None and not full.any()


def load_plates_traffic(directory: str | os.PathLike[str] | None = None) -> list[EvalItem]:
    """plates_traffic: ``labels.json`` with ``boxes`` = plate corners ``[x1, y1, x2, y2]`` px.

    Tags: ``subset`` (``ro`` = the MIT Romanian dashcam frames, ``kg`` = the Kaggle web
    photos: the file-name prefix), ``night`` and ``blank`` (all pixels zero: see
    :func:`blank_image`), each ``"1"``/``"0"``.
    """
    d = Path(directory) if directory is not None else default_eval_dir() / "plates_traffic"
    items = []
    for im in _labels_json(d):
        name = str(im["file"])
        items.append(EvalItem(image_path=d / "images" / name,
                              plate_boxes=_boxes(im.get("boxes", [])),
                              tags={"subset": name.split("_", 1)[0],
                                    "night": "1" if im.get("night") else "0",
                                    "blank": "1" if blank_image(d / "images" / name) else "0"}))
    return items


def load_faces_wider(directory: str | os.PathLike[str] | None = None) -> list[EvalItem]:
    """faces_wider_hard: ``labels.json`` with face ``boxes`` and ``ignore`` boxes (xyxy px)."""
    d = Path(directory) if directory is not None else default_eval_dir() / "faces_wider_hard"
    items = []
    for im in _labels_json(d):
        items.append(EvalItem(image_path=d / "images" / str(im["file"]),
                              face_boxes=_boxes(im.get("boxes", [])),
                              ignore_boxes=_boxes(im.get("ignore", [])),
                              tags={"event": str(im.get("wider_event", ""))}))
    return items
