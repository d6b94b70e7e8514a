"""Inference backend choice (onnxruntime execution providers, or OpenVINO on CPU) and session construction.

``None`` / ``"auto"`` picks TensorRT and CUDA when this onnxruntime build has them, then
CPU; on CPU, per model, OpenVINO (:mod:`operators.ovsession`) where it was measured faster
than onnxruntime (:data:`OPENVINO_WINS`), else onnxruntime's CPU provider. ``openvino`` asks
for OpenVINO for every model (alone: it is not combined with onnxruntime providers). An
explicitly requested backend that is missing is a :class:`ProviderError` that lists the
available ones: a GPU node silently running on CPU would fall behind its cameras without
anyone noticing. The automatic choice on a build that offers GPU providers but a machine
that cannot start them (the GPU image on a pod without a GPU or driver) runs on CPU and
logs one warning naming why; onnxruntime alone would raise a CUDA error there.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

import onnxruntime as ort

from .ovsession import OPENVINO, OpenVinoSession, bf16_supported
from .ovsession import available as openvino_available
from .types import ProviderError

logger = logging.getLogger(__name__)

ALIASES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    # Our own OpenVINO backend (the `openvino` package's API), not onnxruntime-openvino's
    # OpenVINOExecutionProvider: that wheel ships its own `onnxruntime` module and would
    # replace the one every other provider comes from.
    "openvino": OPENVINO,
    "ov": OPENVINO,
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU = "CPUExecutionProvider"

OPENVINO_WINS: frozenset[str] = frozenset({"ppocr_det_v5", "ppocr_det", "centerface_bf16", "yunet_n_bf16"})
"""Registry models (``<name>_int8`` / ``<name>_bf16`` for the int8 graph / a bf16 run) that
``auto`` runs on OpenVINO when no GPU provider is present: those measured to cost less CPU
there than on onnxruntime's CPU provider at the sizes the detectors call them, outputs equal
within 1e-4 and eval unchanged (load_tests/backend_bench.py, docs/performance.md "CPU inference
backend"; Xeon with AVX-512 + AMX, 1 and 2 threads): the PP-OCR text detectors (v5 x1.25-1.43
less CPU, v4 fp32 x1.57-1.70). Not: CenterFace (x0.88-1.04), YuNet (x0.70-0.77), YOLOX-nano
(x0.75-0.91), and the PP-OCRv4 int8 graph (x1.6, but OpenVINO's int8 kernels move its
probabilities by up to 0.99 against onnxruntime's: not evaluated). With ``precision: bf16`` on a
CPU with native bf16, CenterFace and YuNet run bf16 on OpenVINO (x1.93-2.07 and x1.60 less CPU;
``veilstream eval all`` leaks unchanged on every set, masked area within 0.1 point); PP-OCRv5 and
YOLOX-nano do not (all-bf16 leaked 23 vs 16 of 398 plates_traffic plates) and run as in fp32.
The others, and models given by path that match no registry digest, stay on onnxruntime."""


def available_backends() -> list[str]:
    """onnxruntime's available providers, then ``openvino`` when that package is installed."""
    return list(ort.get_available_providers()) + ([OPENVINO] if openvino_available() else [])


def on_cpu(chosen: Sequence[str]) -> bool:
    """Whether resolved providers (:func:`choose_providers`) run on the CPU, by either backend."""
    return list(chosen) in ([CPU], [OPENVINO])


def _cpu_choice(model: str | None) -> list[str]:
    return [OPENVINO] if model in OPENVINO_WINS and openvino_available() else [CPU]


def _canonical(name: str) -> str:
    key = name.strip()
    return ALIASES.get(key.lower(), key)


def _is_auto(requested: Sequence[str] | str | None) -> bool:
    if isinstance(requested, str):
        requested = [p for p in requested.split(",") if p.strip()]
    return not requested or [r.strip().lower() for r in requested] == ["auto"]


def _reason(exc: BaseException) -> str:
    """The useful part of an onnxruntime provider error (they run to kilobytes of C++ signature)."""
    text = str(exc)
    m = re.search(r"CUDA failure \d+: [^;]+", text) or re.search(r"[^/\n]*(?:cannot open shared object|Failed to)[^\n]*",
                                                                  text)
    return (m.group(0) if m else text.strip().splitlines()[-1] if text.strip() else type(exc).__name__).strip()[:300]


def choose_providers(requested: Sequence[str] | str | None, model: str | None = None) -> list[str]:
    """Resolve requested backend names to onnxruntime provider names in order, or ``["openvino"]``.

    Args:
        requested: ``None``, ``"auto"`` or ``["auto"]`` for automatic choice, else names
            such as ``"cpu"``, ``"cuda"``, ``"tensorrt"``, ``"CUDAExecutionProvider"`` or
            ``"openvino"`` (alone).
        model: registry name of the graph to run (``<name>_int8`` for an int8 one): the
            automatic choice on CPU is per model (:data:`OPENVINO_WINS`); ``None``: onnxruntime.

    Returns:
        Provider names for :class:`onnxruntime.InferenceSession`, CPU last when auto; or
        ``["openvino"]`` for an :class:`~operators.ovsession.OpenVinoSession`.

    Raises:
        ProviderError: a requested backend is not available (message lists the available),
            or ``openvino`` combined with other providers.
    """
    available = list(ort.get_available_providers())
    if isinstance(requested, str):
        requested = [p for p in requested.split(",") if p.strip()]
    if requested is None or _is_auto(requested):
        chosen = [p for p in AUTO_ORDER if p in available]
        return chosen + [CPU] if chosen else _cpu_choice(model)
    chosen = []
    missing = []
    for r in requested:
        if r.strip().lower() == "auto":
            raise ProviderError("'auto' cannot be combined with explicit providers")
        name = _canonical(r)
        if name not in available and not (name == OPENVINO and openvino_available()):
            missing.append(f"{r!r} ({name})" if name != r else repr(r))
        elif name not in chosen:
            chosen.append(name)
    if missing:
        raise ProviderError(
            f"execution provider(s) {', '.join(missing)} not available in this onnxruntime build; "
            f"available: {', '.join(available_backends())} (GPU needs the onnxruntime-gpu wheel and drivers; "
            f"openvino the openvino package)"
        )
    if OPENVINO in chosen and len(chosen) > 1:
        raise ProviderError(f"'openvino' runs a model alone: it cannot be combined with onnxruntime providers "
                            f"({', '.join(p for p in chosen if p != OPENVINO)}); request one backend")
    return chosen


def runs_bf16(requested: Sequence[str] | str | None, model: str | None, precision: str) -> bool:
    """Whether ``model`` infers in bf16: ``precision`` bf16, a CPU with native bf16, and OpenVINO
    chosen for ``<model>_bf16`` (``openvino``: every model; ``auto``: the ``_bf16`` entries of
    :data:`OPENVINO_WINS`; the others run fp32, on the backend :func:`choose_providers` gives ``model``)."""
    if precision != "bf16" or not openvino_available() or not bf16_supported():
        return False
    return choose_providers(requested, f"{model}_bf16" if model else None) == [OPENVINO]


def backend_tag(requested: Sequence[str] | str | None, model: str | None) -> str | None:
    """``openvino-<version>`` when ``model`` runs on OpenVINO under ``requested``, else ``None``
    (onnxruntime): the evaluation keys its detection cache by it."""
    if choose_providers(requested, model) != [OPENVINO]:
        return None
    from importlib import metadata

    try:
        return f"{OPENVINO}-{metadata.version('openvino')}"
    except metadata.PackageNotFoundError:
        return OPENVINO


def make_session(model: str | os.PathLike[str] | bytes, providers: Sequence[str] | str | None = None,
                 threads: int | None = None, model_name: str | None = None,
                 inference_precision: str = "f32") -> ort.InferenceSession | OpenVinoSession:
    """Build an :class:`onnxruntime.InferenceSession` with sensible options, or an
    :class:`~operators.ovsession.OpenVinoSession` (same ``run`` / ``get_inputs`` /
    ``get_providers``) when the choice is OpenVINO.

    Args:
        model: path to an ``.onnx`` file, or its serialised bytes.
        providers: as for :func:`choose_providers`.
        threads: intra-op threads (``None`` = the backend's default, all cores).
        model_name: as ``model`` of :func:`choose_providers` (the automatic per-model choice).
        inference_precision: an OpenVINO session's (``f32`` or ``bf16``); onnxruntime runs
            the graph as it is.

    Raises:
        ProviderError: a requested provider is missing, or the session did not get it.
    """
    chosen = choose_providers(providers, model_name)
    if chosen == [OPENVINO]:
        session = OpenVinoSession(model, threads, inference_precision)
        logger.info("onnx session providers=%s threads=%s model=%s precision=%s", OPENVINO, threads, model_name,
                    inference_precision)
        return session
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # silence "unused initializer" warnings of exported graphs
    # No spin-waiting: by default onnxruntime's pool threads busy-wait between ops, burning the
    # CPU the decoders, encoders and other detectors of the same node need. Measured with the
    # default detectors on 720p frames, 2 vCPU shared with other work (load average 8): 0.69
    # CPU-s and 1.04 s wall per frame spinning, 0.36 CPU-s and 0.43 s not spinning.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads is not None:
        if threads < 1:
            raise ProviderError(f"threads must be >= 1, got {threads}")
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    src = model if isinstance(model, bytes) else os.fspath(model)
    auto = _is_auto(providers)
    try:
        sess = ort.InferenceSession(src, sess_options=so, providers=chosen)
    except Exception as exc:  # onnxruntime raises RuntimeError / its own Fail for a provider
        if not auto or chosen == ["CPUExecutionProvider"]:
            raise
        cpu = _cpu_choice(model_name)
        logger.warning("execution providers %s could not start (%s): running on %s "
                       "(automatic choice; request providers explicitly to make this an error)",
                       ",".join(p for p in chosen if p != "CPUExecutionProvider"), _reason(exc), cpu[0])
        if cpu == [OPENVINO]:
            return OpenVinoSession(model, threads, inference_precision)
        sess = ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])
    else:
        if auto and sess.get_providers()[0] == "CPUExecutionProvider" and chosen[0] != "CPUExecutionProvider":
            logger.warning("execution providers %s did not start (onnxruntime logged why): running on "
                           "CPUExecutionProvider (automatic choice)",
                           ",".join(p for p in chosen if p != "CPUExecutionProvider"))
    got = sess.get_providers()
    # onnxruntime drops a provider that fails to initialise (e.g. CUDA libs missing) with
    # only a log line; an explicit request must not degrade silently.
    if providers and chosen and chosen[0] not in got:
        raise ProviderError(f"provider {chosen[0]} failed to initialise; session got {', '.join(got)}")
    logger.info("onnx session providers=%s threads=%s", ",".join(got), threads)
    return sess
