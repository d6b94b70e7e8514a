"""Base class holding what every ONNX detector builds once in ``__init__``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..ovsession import OPENVINO
from ..providers import choose_providers, make_session, on_cpu, runs_bf16
from ..quantize import DEFAULT_PRECISION, check_precision, folded_fp32_model, int8_model
from ..registry import name_of, sha256_of
from ..types import Boxes, Frames, Label
from ._common import ModelRef, check_frames, locate

CPU_WARMUP_HW = (64, 64)
"""The warm-up frame's (height, width) on CPU providers (GPU providers warm up at the
detector's own ``warmup_hw``, where first calls build kernels and engines)."""


class OnnxDetector:
    """Session + provider choice + warm-up; subclasses implement ``_detect_batch``.

    Attributes:
        name: detector id (goes into segment manifests with ``model_sha256``).
        labels: labels this detector emits.
        providers: providers the session actually runs on (``["openvino"]``: OpenVINO on CPU).
        model_name: the registry name of the graph the session runs (``<name>_int8`` for
            the int8 one; ``None`` for a model file that is not a registry model): the
            automatic backend choice on CPU is per model (:data:`operators.providers.OPENVINO_WINS`).
        model_path / model_sha256: the resolved model file and its digest (of the int8
            model derived from it when ``precision`` is int8).
        precision: ``int8`` when the session runs the int8 model derived from the fp32 one
            (asked for, calibrated, on CPU: :mod:`operators.quantize`), ``bf16`` when an
            OpenVINO session infers in bfloat16 (asked for, on a CPU with native bf16), else
            ``fp32``.
        fp32_sha256: the digest of the fp32 model file.
    """

    name: str = "onnx"
    labels: tuple[Label, ...] = ()
    batch_size: int = 8
    _gpu_batch: int = 8

    def _open(self, model: ModelRef, model_dir: ModelRef | None, precision: str = DEFAULT_PRECISION) -> Path:
        self._precision = check_precision(precision)
        self.model_path = locate(model, model_dir)
        self.model_sha256 = self.fp32_sha256 = sha256_of(self.model_path)
        self.precision = "fp32"
        self.model_name = name_of(self.fp32_sha256)
        return self.model_path

    def _start(self, model: bytes | Path, providers: Sequence[str] | str | None, threads: int | None,
               warmup_hw: tuple[int, int]) -> None:
        if on_cpu(choose_providers(providers)):
            # GPU providers keep the published fp32 graph; on CPU (either backend) a calibrated
            # model runs int8 (precision int8), PP-LCNetV3 text models run their folded fp32
            # graph otherwise.
            data = model if isinstance(model, bytes) else Path(model).read_bytes()
            q = int8_model(data, self.fp32_sha256) if getattr(self, "_precision", "fp32") == "int8" else None
            if q is not None:
                self.precision = "int8"
            else:
                q = folded_fp32_model(data, self.fp32_sha256)
            if q is not None:
                self.model_sha256 = hashlib.sha256(q).hexdigest() if isinstance(q, bytes) else sha256_of(q)
                model = q
        name = getattr(self, "model_name", None)
        if name is not None and self.precision == "int8":
            name = f"{name}_int8"
        # the automatic backend choice is per model and precision: <name>_bf16 where bf16 runs
        bf16 = runs_bf16(providers, name, getattr(self, "_precision", "fp32"))
        run_name = f"{name}_bf16" if bf16 and name is not None else name
        self.session = make_session(model, providers, threads, model_name=run_name,
                                    inference_precision="bf16" if bf16 else "f32")
        self._graph = model
        """The graph ``session`` runs (the folded or int8 copy when one was derived)."""
        self.providers = list(self.session.get_providers())
        if bf16 and self.providers == [OPENVINO]:
            self.precision = "bf16"
            name = run_name
        self.model_name = name
        self.input_name = self.session.get_inputs()[0].name
        if getattr(self, "batch_size", None) is None:
            # On CPU, one frame per call is faster for large inputs (it stays in cache:
            # CenterFace at 960x544 is 129 ms/frame alone, 190 ms/frame in batches of 8);
            # on a GPU, batches keep the device busy.
            self.batch_size = 1 if on_cpu(self.providers) else int(getattr(self, "_gpu_batch", 8))
        # Warm-up on zeros: the first inference allocates arenas and (on GPU) builds
        # kernels/engines, taking 10-100x a normal call; doing it here keeps that cost out
        # of the first real chunk, where it would trip detection timeouts and fail closed.
        # On CPU a tiny frame is enough (it still runs the graph once, so a broken model
        # fails at start): the per-shape preparation happens at the real frame size anyway,
        # and a full 360x640 pass cost the text detector ~0.25 CPU-s per session at start
        # for ~0.04 s saved on its first 720p call.
        self._warmup_hw = CPU_WARMUP_HW if on_cpu(self.providers) else warmup_hw
        self._warm_up()

    def _warm_up(self) -> None:
        """One pass on a zero frame of ``_warmup_hw`` (see ``_start``)."""
        h, w = self._warmup_hw
        self.detect(np.zeros((1, h, w, 3), np.uint8))

    def detect(self, frames: Frames) -> list[Boxes]:
        """Detect on ``(N, H, W, 3)`` uint8 BGR frames (not mutated).

        Returns:
            One :class:`Boxes` per frame in original-frame pixels, clipped to the frame;
            ``Boxes.empty()`` where nothing is found.
        """
        check_frames(frames)
        out: list[Boxes] = []
        n = frames.shape[0]
        for i in range(0, n, self.batch_size):
            out.extend(self._detect_batch(frames[i:i + self.batch_size]))
        return out

    def _detect_batch(self, frames: Frames) -> list[Boxes]:
        raise NotImplementedError
