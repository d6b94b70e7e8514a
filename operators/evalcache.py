"""Cached detections for ``veilstream eval``: detect once, score many settings.

Each detector a :class:`~operators.redactor.RedactionConfig` uses is run ONCE per image at
a low "floor" score threshold and its raw boxes and scores are stored on disk
(``out/eval_cache/<dataset>/<component>-<signature>.npz``). A setting's thresholds are
then applied to the cached boxes: that gives exactly the boxes the detector would have
returned at that threshold (the NMS of every detector here is greedy by score, so boxes
below a threshold never suppress boxes above it), and a sweep over thresholds costs only
the masking geometry, not the networks.

Components (one cache file each):

* ``centerface`` / ``yunet``: the face detectors;
* ``yolox``: persons (head-region fallback) and, when plates use vehicle crops, vehicles;
* ``text_full``: the text detector's full-frame pass;
* ``text_crops``: its vehicle-crop pass on the vehicles ``yolox`` found at the
  configured vehicle threshold (part of the signature: not swept).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .evaluation import DatasetReport, Scorer
from .types import Boxes, Label

FLOORS = {"centerface": 0.03, "yunet": 0.15, "yolox": 0.05, "text_full": 0.15, "text_crops": 0.15}
"""Score thresholds the cache is filled at; sweeps go no lower."""


def default_threshold(factory: Any, name: str = "threshold") -> float:
    return float(inspect.signature(factory).parameters[name].default)


@dataclass
class Component:
    """One cached detector pass.

    Attributes:
        key: component name (``centerface``, ``yunet``, ``yolox``, ``text_full``, ``text_crops``).
        params: what decides its output besides the image (goes into the cache signature).
        build: returns ``run(frame_bgr, priors) -> Boxes`` (builds the model on first use).
        needs: keys of components whose boxes ``run`` takes as priors.
    """

    key: str
    params: dict[str, Any]
    build: Callable[[], Callable[[np.ndarray, Boxes], Boxes]]
    needs: tuple[str, ...] = ()

    @property
    def signature(self) -> str:
        text = json.dumps({"key": self.key, **self.params}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def components(cfg: Any) -> dict[str, Component]:
    """The detector passes ``cfg`` (a RedactionConfig) runs, at floor thresholds."""
    from .detectors import (
        CenterFaceDetector,
        TextDetector,
        YoloxPersonDetector,
        YuNetDetector,
        litplate,
    )
    from .providers import backend_tag, runs_bf16
    from .quantize import graph_tag

    providers = list(cfg.providers) if cfg.providers else None
    common: dict[str, Any] = {"providers": providers, "precision": cfg.precision}
    if cfg.model_dir:
        common["model_dir"] = cfg.model_dir
    out: dict[str, Component] = {}
    classes = set(cfg.classes)
    # int8 and folded fp32 graphs get their own signature (recipe, calibration digest); a model
    # that runs its published graph under both precisions shares one cache.
    model_of = {CenterFaceDetector: "centerface", YuNetDetector: "yunet_n", YoloxPersonDetector: "yolox_nano",
                TextDetector: cfg.text_model}

    def int8(factory: Any) -> dict[str, str]:
        tag = graph_tag(cfg.precision, providers, model_of[factory])
        # The backend too, when it is not onnxruntime: OpenVINO's boxes agree closely, not
        # bit for bit, and a comparison of the two must not read one's boxes for the other's.
        name = model_of[factory] + ("_int8" if tag and tag.startswith("int8") else "")
        bf16 = runs_bf16(providers, name, cfg.precision)
        backend = backend_tag(providers, f"{name}_bf16" if bf16 else name)
        if backend and bf16:
            backend += "-bf16"
        return {**({"graph": tag} if tag else {}), **({"backend": backend} if backend else {})}

    def simple(key: str, factory: Any, params: dict[str, Any], method: str = "detect") -> Component:
        def build() -> Callable[[np.ndarray, Boxes], Boxes]:
            det = factory(**params, **common)
            return lambda img, _priors: getattr(det, method)(img[None])[0]
        return Component(key, {"cls": factory.__name__, **params, **int8(factory)}, build)

    if "face" in classes:
        if cfg.face_model in ("centerface", "centerface+yunet"):
            out["centerface"] = simple("centerface", CenterFaceDetector,
                                       {"threshold": FLOORS["centerface"], "max_side": cfg.face_max_side})
        if cfg.face_model == "yunet":
            out["yunet"] = simple("yunet", YuNetDetector, {"threshold": FLOORS["yunet"],
                                                             "max_side": cfg.face_max_side})
        elif cfg.face_model == "centerface+yunet":
            out["yunet"] = simple("yunet", YuNetDetector, {"threshold": FLOORS["yunet"],
                                                             "max_side": cfg.yunet_max_side,
                                                             "min_side": cfg.yunet_min_side})
    crops = "plate" in classes and cfg.plate_crops
    vthr = cfg.vehicle_threshold if cfg.vehicle_threshold is not None else \
        default_threshold(YoloxPersonDetector, "vehicle_threshold")
    if classes & {"face", "person"} or crops:
        # Vehicles whenever the config searches plates on vehicles, whatever the class swept:
        # the person boxes are the same, so a face-only sweep shares the full config's cache.
        out["yolox"] = simple("yolox", YoloxPersonDetector, {"threshold": FLOORS["yolox"],
                                                             "vehicles": bool(cfg.plate_crops),
                                                             "vehicle_threshold": vthr,
                                                             "max_side": cfg.person_max_side,
                                                             # None (the sizing before the cap) keeps
                                                             # the signature detections were cached under
                                                             **_unless_none(max_upscale=cfg.person_max_upscale,
                                                                            native_max_side=getattr(
                                                                                cfg, "small_frame_side", None))})
    if classes & {"plate", "text"}:
        text_params = {"model": cfg.text_model, "threshold": FLOORS["text_full"], "max_side": cfg.text_max_side,
                       "min_side": cfg.text_min_side, "tile": cfg.text_tile,
                       **_unless_none(max_upscale=cfg.text_max_upscale,
                                      native_max_side=getattr(cfg, "small_frame_side", None))}
        lit = "plate" in classes and bool(getattr(cfg, "plate_lit_pass", False))
        if lit:
            text_params["lit_pass"] = True
        if getattr(cfg, "text_full_precision", None) == "bf16":
            text_params["full_precision"] = "bf16"
            # since session 9 a dark frame's native pass has its own precision (fp32 unless asked)
            text_params["dark_precision"] = getattr(cfg, "text_dark_precision", None) or "fp32"
        out["text_full"] = simple("text_full", TextDetector, text_params)
        if lit:  # the lit-plate pass's constants sign its boxes too (off: the signature before it)
            out["text_full"].params["lit"] = litplate.params()
        if crops:
            # None (no budget) keeps the signature detections were cached under before it
            budget = _unless_none(crop_budget=getattr(cfg, "text_crop_budget", None))

            def build_crops() -> Callable[[np.ndarray, Boxes], Boxes]:
                det = TextDetector(cfg.text_model, threshold=FLOORS["text_crops"], crops=True, **budget, **common)
                return lambda img, priors: det.detect_crops(img[None], [priors])[0]
            out["text_crops"] = Component("text_crops", {"cls": "TextDetector.crops", "model": cfg.text_model,
                                                         "vehicle_threshold": vthr, **int8(TextDetector),
                                                         "yolox": out["yolox"].signature,
                                                         "crop": {**_crop_params(TextDetector), **budget},
                                                         "code": _code_digest(TextDetector.detect_crops)},
                                          build_crops, needs=("yolox",))
    return out


def _unless_none(**params: Any) -> dict[str, Any]:
    """``params`` without the ``None`` values (a parameter added later, at its old behaviour)."""
    return {k: v for k, v in params.items() if v is not None}


def _code_digest(*funcs: Any) -> str:
    """Digest of the source of the modules defining ``funcs``: a changed crop pass
    (packing, box mapping) must not be served stale from the cache."""
    mods = {m for m in (inspect.getmodule(f) for f in funcs) if m is not None}
    text = "".join(inspect.getsource(m) for m in sorted(mods, key=lambda m: m.__name__))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _crop_params(factory: Any) -> dict[str, Any]:
    sig = inspect.signature(factory).parameters
    return {k: sig[k].default for k in ("crop_width", "crop_height", "crop_lower", "crop_max_zoom", "max_crops",
                                         "min_vehicle_px", "pad", "bin_threshold", "unclip_ratio",
                                         "crop_pack", "crop_gap", "crop_bonus", "crop_reuse")}


def thresholds(cfg: Any) -> dict[str, float]:
    """Per component, the score a box needs under ``cfg`` (explicit or the detector default)."""
    from .detectors import CenterFaceDetector, TextDetector, YoloxPersonDetector, YuNetDetector

    def pick(v: float | None, factory: Any) -> float:
        return float(v) if v is not None else default_threshold(factory)

    if cfg.face_model == "centerface+yunet":
        from .detectors import FaceUnionDetector

        cf = float(cfg.face_threshold) if cfg.face_threshold is not None else default_threshold(FaceUnionDetector)
        yn = float(cfg.yunet_threshold) if cfg.yunet_threshold is not None else \
            default_threshold(FaceUnionDetector, "yunet_threshold")
    else:
        cf = pick(cfg.face_threshold, CenterFaceDetector)
        yn = pick(cfg.face_threshold if cfg.face_model == "yunet" else cfg.yunet_threshold, YuNetDetector)
    return {"centerface": cf, "yunet": yn,
            "yolox": pick(cfg.person_threshold, YoloxPersonDetector),
            "text_full": pick(cfg.text_threshold, TextDetector), "text_crops": pick(cfg.text_threshold, TextDetector)}


@dataclass
class Cached:
    """One component's boxes for every image of a data set (``per_image[i]``), its
    frame sizes and the seconds it took."""

    per_image: list[Boxes]
    seconds: float


def _save(path: Path, c: Cached, names: Sequence[str]) -> None:
    idx = np.concatenate([np.full(len(b), i, np.int32) for i, b in enumerate(c.per_image)] or [np.zeros(0, np.int32)])
    allb = Boxes.concat(c.per_image)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, idx=idx, xyxy=allb.xyxy, score=allb.score, label=allb.label,
                        seconds=np.float64(c.seconds), names=np.asarray(list(names)))
    tmp.replace(path)


def _load(path: Path, names: Sequence[str]) -> Cached | None:
    try:
        z = np.load(path, allow_pickle=False)
        if list(z["names"]) != list(names):
            return None
        idx = z["idx"]
        all_b = Boxes(z["xyxy"].astype(np.float32), z["score"].astype(np.float32), z["label"].astype(np.int16))
        per = [all_b.select(idx == i) for i in range(len(names))]
        return Cached(per, float(z["seconds"]))
    except (OSError, KeyError, ValueError):
        return None


class DetectionCache:
    """Fills and serves the cached components of one data set."""

    def __init__(self, root: Path | None, dataset: str, items: Sequence[Any], *, progress: bool = False) -> None:
        self.root = root
        self.dataset = dataset
        self.items = list(items)
        self.names = [str(Path(it.image_path).name) for it in self.items]
        self.progress = progress
        self.hw: list[tuple[int, int]] | None = None
        self._mem: dict[str, Cached] = {}

    def _path(self, comp: Component) -> Path | None:
        if self.root is None:
            return None
        return self.root / self.dataset / f"{comp.key}-{comp.signature}-n{len(self.names)}.npz"

    def get(self, comps: dict[str, Component]) -> dict[str, Cached]:
        """Every component's cached boxes, computing (and storing) the missing ones."""
        from .video import read_image

        todo: list[Component] = []
        got: dict[str, Cached] = {}
        for key, comp in comps.items():
            mem_key = f"{key}-{comp.signature}"
            path = self._path(comp)
            hit = self._mem.get(mem_key) or (_load(path, self.names) if path is not None and path.is_file() else None)
            if hit is not None:
                got[key] = self._mem[mem_key] = hit
            else:
                todo.append(comp)
        hw_path = self.root / self.dataset / f"hw-n{len(self.names)}.json" if self.root is not None else None
        if self.hw is None and hw_path is not None and hw_path.is_file():
            doc = json.loads(hw_path.read_text())
            if doc.get("names") == self.names:
                self.hw = [tuple(x) for x in doc["hw"]]
        if not todo and self.hw is not None:
            return got
        # Components that need priors come after those they need.
        todo.sort(key=lambda c: len(c.needs))
        runs = {c.key: c.build() for c in todo}
        results: dict[str, list[Boxes]] = {c.key: [] for c in todo}
        secs = {c.key: 0.0 for c in todo}
        hw: list[tuple[int, int]] = []
        for n, item in enumerate(self.items):
            img = read_image(item.image_path)
            hw.append((int(img.shape[0]), int(img.shape[1])))
            for c in todo:
                priors = Boxes.concat([(results[k][n] if k in results else got[k].per_image[n]) for k in c.needs])
                t0 = time.perf_counter()
                results[c.key].append(runs[c.key](img, priors))
                secs[c.key] += time.perf_counter() - t0
            if self.progress:
                print(f"\r{self.dataset}: detecting {n + 1}/{len(self.items)} ({', '.join(runs)})", end="",
                      flush=True, file=__import__("sys").stderr)
        if self.progress:
            print(file=__import__("sys").stderr)
        self.hw = hw
        if hw_path is not None:
            hw_path.parent.mkdir(parents=True, exist_ok=True)
            hw_path.write_text(json.dumps({"names": self.names, "hw": hw}))
        for c in todo:
            cached = Cached(results[c.key], secs[c.key])
            path = self._path(c)
            if path is not None:
                _save(path, cached, self.names)
            got[c.key] = self._mem[f"{c.key}-{c.signature}"] = cached
        return got


def combine(cached: dict[str, Cached], th: dict[str, float], i: int) -> Boxes:
    """Image ``i``'s raw boxes under thresholds ``th`` (component key -> min score; a
    missing key drops that component). Vehicles are kept whatever the person threshold."""
    parts = []
    for key, c in cached.items():
        if key not in th:
            continue
        b = c.per_image[i]
        if key == "yolox":
            keep = (b.label == Label.VEHICLE) | (b.score >= th[key])
        else:
            keep = b.score >= th[key]
        parts.append(b.select(keep))
    return Boxes.concat(parts)



def _image_is_dark(item: Any, _i: int) -> bool:
    """An eval image is dark by the lit-plate pass's gate (the redactor's loose-text rule)."""
    from .detectors.litplate import is_dark
    from .video import read_image

    return is_dark(read_image(item.image_path))


def score_setting(dataset: str, items: Sequence[Any], cache: DetectionCache, cached: dict[str, Cached],
                  cfg: Any, th: dict[str, float], *, person_class: bool = False) -> DatasetReport:
    """A :class:`~operators.evaluation.DatasetReport` for one setting from cached boxes."""
    from .redactor import Redactor

    # Thresholds were applied by `combine`: the planning redactor must not filter again.
    plan_cfg = replace(cfg, face_threshold=None, person_threshold=None, text_threshold=None)
    red = Redactor(plan_cfg, detectors={})
    small = getattr(cfg, "text_full_min_side", None)
    scorer = Scorer(dataset, person_class=person_class)
    assert cache.hw is not None
    t0 = time.perf_counter()
    for i, item in enumerate(items):
        hw = cache.hw[i]
        # A frame below the full-frame pass's size gets the vehicle-crop pass only (as the
        # detector does: RedactionConfig.text_full_min_side; small_frame_side frames keep the pass).
        th_i = th if not (small and "text_crops" in cached and max(hw) < small) else \
            {k: v for k, v in th.items() if k != "text_full"}
        # Darkness is read from the pixels, and only for an image with loose-text candidates.
        boxes = red.plan_from([combine(cached, th_i, i)], [], hw, dark=functools.partial(_image_is_dark, item))[0]
        sources = red.coverage_by_source(hw, boxes)
        cov = np.zeros(hw, bool)
        for part in sources.values():
            cov |= part
        scorer.add(item, cov, sources=sources)
    rep = scorer.report()
    rep.seconds = (time.perf_counter() - t0) + sum(c.seconds for c in cached.values())
    return rep
