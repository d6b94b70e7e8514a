"""INT8 versions of the CPU detector models: static quantization from shipped calibration ranges.

``precision: int8`` (the default) runs a model on CPU on an 8-bit copy of it only where that
copy was measured to hold quality: the PP-OCRv4 text detector (``text_model: ppocr_det``, x0.60
CPU per input). Not shipped (README "INT8 detectors and CPU cost"): PP-OCRv5, the default text
model (its int8 copy lost most plates: the fp32 net is fragile to one grey level of noise),
CenterFace (more faces leaked), YuNet and YOLOX-nano (no real gain: depthwise convolutions,
SiLU between QDQ pairs). GPU providers always keep the published fp32 graph. On CPU the PP-OCR
text models otherwise run their fp32 graph as prepared below (:func:`folded_fp32_model`).

The int8 model is derived deterministically, on first use, from

* the fp32 graph the detector would load (the registry's verified file, dims made dynamic),
  prepared: initializers removed from the graph inputs, opset >= 13 (per-channel
  DequantizeLinear), onnxruntime's ``quant_pre_process`` (shape inference, constant
  folding, Conv+BN fusion), then every scalar affine (``Mul`` by a constant, ``Add`` of a
  constant: PP-LCNetV3's learnable affine blocks) folded into the convolution before or after
  it where that is exact (fp32 output changes by < 1e-4; without it the int8 text detector's
  probability map was wrong by > 0.5 on 0.1 % of pixels);
* the calibration ranges shipped beside this module (``calibration/<model>.json``: the min /
  max of every activation over frames of the load-test footage with synthetic plates drawn
  on them, never eval data, computed by ``load_tests/quantize_models.py --calibrate``);
* the recipe :data:`RECIPE` (QDQ, uint8 activations, int8 weights per output channel, no
  reduced range: the CPU has VNNI; measured fastest of the variants tried),

and cached under ``<model cache>/int8/<model>-<key>.onnx``, ``key`` a sha256 of the fp32
graph, the ranges, the recipe and the onnxruntime version: a changed input builds a new file,
never serves a stale one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .registry import default_cache_dir
from .types import ConfigError, ModelNotFoundError

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8", "bf16")
"""``bf16``: inference in bfloat16 on OpenVINO sessions on a CPU with native bf16 (AMX, AVX-512
BF16: :func:`operators.ovsession.bf16_supported`); onnxruntime sessions and other CPUs run fp32
(:mod:`operators.ovsession`)."""
DEFAULT_PRECISION = "int8"
"""On CPU, models with a shipped calibration run int8; the others, and GPU providers, fp32."""

RECIPE: dict[str, Any] = {"format": "QDQ", "activations": "QUInt8", "weights": "QInt8", "per_channel": True,
                          "reduce_range": False, "prepare": "strip-inputs,opset13,quant_pre_process,fold-affine",
                          "version": 1}
CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"


def check_precision(value: object, key: str = "precision") -> str:
    """``value`` when it is one of :data:`PRECISIONS`, else a one-line :class:`ConfigError`."""
    if value not in PRECISIONS:
        raise ConfigError(f"{key}: expected one of {', '.join(PRECISIONS)}, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class Calibration:
    """Activation ranges of one fp32 model (``calibration/<model>.json``)."""

    model: str
    model_sha256: str
    source: str
    ranges: dict[str, tuple[float, float]]
    path: Path
    fp32_after: str | None = None
    """Every node downstream of this tensor stays fp32 (the detection head: its output is
    thresholded low, where int8 steps moved boxes across the threshold)."""

    @property
    def digest(self) -> str:
        text = json.dumps({"model_sha256": self.model_sha256, "ranges": sorted(self.ranges.items()),
                           "fp32_after": self.fp32_after, "recipe": RECIPE}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@cache
def calibrations() -> dict[str, Calibration]:
    """Shipped calibrations keyed by the sha256 of the fp32 model file they belong to."""
    out: dict[str, Calibration] = {}
    for p in sorted(CALIBRATION_DIR.glob("*.json")):
        d = json.loads(p.read_text())
        out[d["model_sha256"]] = Calibration(d["model"], d["model_sha256"], d["source"],
                                             {k: (float(v[0]), float(v[1])) for k, v in d["ranges"].items()}, p,
                                             d.get("fp32_after"))
    return out


def calibration_for(model_sha256: str) -> Calibration | None:
    """The shipped calibration of the fp32 model with this file digest (``None``: stays fp32)."""
    return calibrations().get(model_sha256)


FOLDED = ("ppocr_det", "ppocr_det_v5")
"""Registry models whose fp32 graph runs folded on CPU (:func:`folded_fp32_model`): PP-LCNetV3
backbones, whose learnable affine blocks are scalar ``Mul``/``Add`` pairs onnxruntime does not
fold itself (x0.85 CPU per input for PP-OCRv5, probabilities within 4e-5)."""


def _on_cpu(providers: object) -> bool:
    from .providers import choose_providers, on_cpu

    return on_cpu(choose_providers(providers))  # type: ignore[arg-type]


def graph_tag(precision: str, providers: object, model_name: str) -> str | None:
    """What identifies the graph registry model ``model_name`` runs under ``precision`` and
    ``providers`` when it is not the published one: ``int8-<calibration digest>``,
    ``fold-v<recipe version>``, or ``None``: the evaluation keys its detection cache by it."""
    from .registry import get_spec

    sha = get_spec(model_name).sha256
    cal = calibration_for(sha) if sha else None
    if not _on_cpu(providers):
        return None
    if precision == "int8" and cal is not None:
        return f"int8-{cal.digest[:16]}"
    return f"fold-v{RECIPE['version']}" if model_name in FOLDED else None


def folded_fp32_model(model: bytes, model_sha256: str,
                      cache_dir: str | os.PathLike[str] | None = None) -> Path | bytes | None:
    """The fp32 graph of ``model`` prepared as for quantization (scalar affines folded into the
    convolutions, constants folded), cached like :func:`int8_model`; ``None`` for models
    not in :data:`FOLDED`."""
    from .registry import MODELS

    name = next((n for n in FOLDED if MODELS[n].sha256 == model_sha256), None)
    if name is None:
        return None
    return _cached(model, name, "fp32", {"fold": RECIPE["version"]}, lambda tmp: prepare_fp32(model, tmp),
                   cache_dir)


def _cached(model: bytes | None, name: str, kind: str, salt: dict[str, Any], build: Any,
            cache_dir: str | os.PathLike[str] | None = None, *, digest: str | None = None) -> Path | bytes:
    """``build(workdir) -> Path`` once into ``<cache>/<kind>/<name>-<key>.onnx``; its bytes when
    the cache cannot be written. ``key`` hashes the source model (``digest``, its sha256 hex,
    when given: the caller has it already, and the model is then not read), ``salt``,
    :data:`RECIPE` and the onnxruntime version."""
    import onnxruntime as ort

    if digest is None:
        if model is None:
            raise ValueError("_cached needs the model bytes or their digest")
        digest = hashlib.sha256(model).hexdigest()
    key = hashlib.sha256(digest.encode() + json.dumps(salt, sort_keys=True).encode()
                         + json.dumps(RECIPE, sort_keys=True).encode() + ort.__version__.encode()).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache / kind / f"{name}-{key}.onnx"
    if dest.is_file():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{kind}.", dir=dest.parent) as tmp:
            os.replace(build(Path(tmp)), dest)
    except OSError as exc:
        # An unwritable cache (read-only home in an image) costs the derivation at every
        # start, never the detector: build in a temp dir and load from memory.
        logger.warning("model=%s %s not cached: %s is not writable (%s); set $VEILSTREAM_CACHE_DIR",
                       name, kind, dest.parent, exc)
        with tempfile.TemporaryDirectory(prefix=f"{kind}.") as tmp:
            return Path(build(Path(tmp))).read_bytes()
    logger.info("model=%s %s derived into %s", name, kind, dest)
    return dest


def _strip_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    names = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    if model.opset_import[0].version < 13:
        from onnx import version_converter

        model = version_converter.convert_version(model, 13)
    return model


def fold_affine(model: onnx.ModelProto) -> int:
    """Fold scalar ``Mul``-then-``Add`` pairs into a neighbouring ``Conv`` in place, where
    exact: ``Conv -> Mul(a) -> Add(c)`` always (``W*a``, ``b*a + c``); ``Mul(a) -> Add(c) ->
    Conv`` only for convolutions without padding (a padded border would see ``c``, not 0).
    Returns the number of pairs folded."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}

    def const(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def scalar(node: onnx.NodeProto, other: str) -> float | None:
        names = [i for i in node.input if i != other]
        v = const(names[0]) if len(names) == 1 else None
        return float(v.reshape(())) if v is not None and v.size == 1 else None

    def add_init(arr: np.ndarray, name: str) -> str:
        g.initializer.append(numpy_helper.from_array(arr.astype(np.float32), name))
        inits[name] = g.initializer[-1]
        return name

    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_out = {o.name for o in g.output}
    removed: set[int] = set()

    def affine_after(x: str) -> tuple[onnx.NodeProto, onnx.NodeProto, float, float] | None:
        c1 = consumers.get(x, [])
        if len(c1) != 1 or c1[0].op_type != "Mul" or x in graph_out or id(c1[0]) in removed:
            return None
        mul = c1[0]
        a = scalar(mul, x)
        c2 = consumers.get(mul.output[0], [])
        if a is None or len(c2) != 1 or c2[0].op_type != "Add" or mul.output[0] in graph_out:
            return None
        c = scalar(c2[0], mul.output[0])
        return None if c is None else (mul, c2[0], a, c)

    def weights(conv: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
        w = const(conv.input[1])
        if w is None:
            return None
        b = const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0], np.float32)
        return None if b is None else (w, b)

    def set_weights(conv: onnx.NodeProto, w: np.ndarray, b: np.ndarray, tag: str) -> None:
        conv.input[1] = add_init(w, f"{conv.input[1]}_{tag}_{len(inits)}")
        bname = add_init(b, f"{conv.output[0]}_{tag}_b_{len(inits)}")
        if len(conv.input) < 3:
            conv.input.append(bname)
        else:
            conv.input[2] = bname

    folded = 0
    for conv in list(g.node):  # Conv -> Mul(a) -> Add(c)
        found = affine_after(conv.output[0]) if conv.op_type == "Conv" else None
        wb = weights(conv) if found else None
        if found is None or wb is None:
            continue
        mul, add, a, c = found
        set_weights(conv, wb[0] * a, wb[1] * a + c, "affine")
        conv.output[0] = add.output[0]
        removed.update((id(mul), id(add)))
        folded += 1
    for mul in list(g.node):  # Mul(a) -> Add(c) -> Conv without padding
        if mul.op_type != "Mul" or id(mul) in removed:
            continue
        xs = [i for i in mul.input if const(i) is None]
        if len(xs) != 1:
            continue
        a_in = scalar(mul, xs[0])
        after = consumers.get(mul.output[0], [])
        if a_in is None or len(after) != 1 or after[0].op_type != "Add" or id(after[0]) in removed:
            continue
        c_in = scalar(after[0], mul.output[0])
        if c_in is None:
            continue
        add = after[0]
        convs = consumers.get(add.output[0], [])
        if not convs or add.output[0] in graph_out or any(
                q.op_type != "Conv" or weights(q) is None
                or any(at.name == "pads" and any(at.ints) for at in q.attribute)
                or any(at.name == "auto_pad" and at.s not in (b"", b"NOTSET", b"VALID") for at in q.attribute)
                for q in convs):
            continue
        for q in convs:
            w, b = weights(q)  # type: ignore[misc]
            set_weights(q, w * a_in, b + c_in * w.reshape(w.shape[0], -1).sum(1), "inaffine")
            q.input[0] = xs[0]
        consumers.setdefault(xs[0], []).extend(convs)
        removed.update((id(mul), id(add)))
        folded += 1
    keep = [n for n in g.node if id(n) not in removed]
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    return folded


@contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization logs warnings through the root logger; keep them out."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def prepare_fp32(model: bytes, workdir: Path) -> Path:
    """The fp32 graph the quantizer and the calibration see (module docstring), as a file."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw, pre = workdir / "raw.onnx", workdir / "pre.onnx"
    onnx.save(_strip_initializer_inputs(onnx.load_from_string(model)), str(raw))
    with _quiet():
        quant_pre_process(str(raw), str(pre), skip_symbolic_shape=True)
    m = onnx.load(str(pre))
    fold_affine(m)
    for i, n in enumerate(m.graph.node):  # nodes_to_exclude goes by name
        if not n.name:
            n.name = f"{n.op_type}_{i}_{n.output[0]}"
    onnx.save(m, str(pre))
    return pre


def downstream(model: onnx.ModelProto, tensor: str) -> list[str]:
    """Names of the nodes that (transitively) consume ``tensor``."""
    seen: set[str] = set()
    live = {tensor}
    out: list[str] = []
    for n in model.graph.node:  # nodes are topologically sorted
        if live & set(n.input) and n.name not in seen:
            seen.add(n.name)
            out.append(n.name)
            live.update(n.output)
    return out


def quantize_prepared(prepared: Path, ranges: dict[str, tuple[float, float]], out: Path,
                      fp32_after: str | None = None) -> None:
    """Static QDQ quantization of ``prepared`` with the activation ``ranges`` (:data:`RECIPE`);
    the nodes downstream of tensor ``fp32_after`` stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data

    table = out.with_suffix(".ranges.json")
    data = TensorsData(CalibrationMethod.MinMax,
                       {k: (np.array(lo, np.float32), np.array(hi, np.float32)) for k, (lo, hi) in ranges.items()})
    save_tensors_data(data, table)
    try:
        with _quiet():
            quantize_static(str(prepared), str(out), None, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True, reduce_range=False, calibration_cache_path=str(table),
                            nodes_to_exclude=downstream(onnx.load(str(prepared)), fp32_after) if fp32_after else None)
    finally:
        table.unlink(missing_ok=True)


def int8_model(model: bytes, model_sha256: str,
               cache_dir: str | os.PathLike[str] | None = None) -> Path | bytes | None:
    """The int8 model derived from ``model`` (the fp32 graph a detector loads; its file's
    digest is ``model_sha256``), built once into the cache (its bytes when the cache cannot be
    written); ``None`` when no calibration ships for that model (the detector stays fp32).

    Raises:
        ModelNotFoundError: the prepared graph does not match the shipped calibration (another
            onnxruntime prepares it differently); the message says how to recalibrate or to
            run ``precision: fp32``.
    """
    cal = calibration_for(model_sha256)
    if cal is None:
        return None
    return _cached(model, cal.model, "int8", {"calibration": cal.digest}, lambda tmp: _derive(model, cal, tmp),
                   cache_dir)


def _derive(model: bytes, cal: Calibration, workdir: Path) -> Path:
    import onnx
    import onnxruntime as ort

    prepared = prepare_fp32(model, workdir)
    graph = onnx.load(str(prepared)).graph
    names = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    missing = sorted(set(cal.ranges) - names)
    if missing:
        raise ModelNotFoundError(
            f"int8 {cal.model}: the calibration {cal.path.name} names {len(missing)} tensors "
            f"(e.g. {missing[0]!r}) that onnxruntime {ort.__version__} does not produce when it prepares "
            f"the fp32 graph; recompute it (load_tests/quantize_models.py --calibrate) or set precision: fp32")
    out = workdir / "int8.onnx"
    quantize_prepared(prepared, cal.ranges, out, cal.fp32_after)
    return out


__all__ = ["DEFAULT_PRECISION", "FOLDED", "PRECISIONS", "RECIPE", "Calibration", "calibration_for", "check_precision",
           "fold_affine", "folded_fp32_model", "graph_tag", "int8_model", "prepare_fp32", "quantize_prepared"]
