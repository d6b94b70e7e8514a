"""OpenVINO's CPU plugin behind the slice of :class:`onnxruntime.InferenceSession` the detectors use.

The detectors call ``session.run(output_names | None, {input_name: array})``,
``session.get_inputs()[0].name`` and ``session.get_providers()``; :class:`OpenVinoSession`
offers exactly those on the same ONNX graph (``openvino.Core.read_model`` reads ONNX, from a
path or from bytes), so each detector runs on either backend unchanged.

Choices, measured on the detector graphs (``load_tests/backend_bench.py``, docs/performance.md):

* ``INFERENCE_PRECISION_HINT: f32``. On a CPU with AMX or AVX-512 BF16 the plugin's default
  is bf16, which moves outputs by ~1e-2, not the ~1e-5 of fp32; precision is the
  detectors' ``precision`` setting, never a silent plugin default.
* One compiled model with dynamic input dims, kept for the session's life, plus one compiled
  for each of the first :data:`STATIC_SHAPES` input shapes called :data:`STATIC_AFTER` times.
  The detectors call the graph at many sizes (frame sizes, packed crop canvases cut to what
  they use); the dynamic model serves them all (the plugin builds and caches the kernels of
  each new shape on its first call: ``CPU_RUNTIME_CACHE_CAPACITY``), but a model compiled for
  one static shape runs it faster (YOLOX-nano at 416x416 x1.3 less CPU, PP-OCRv4 at 640x384
  x1.2: the plugin plans memory and picks kernels once). A camera's frame size recurs every
  frame, so it gets its static compile (~0.1-0.3 s, once) on its third call; shapes past the
  first :data:`STATIC_SHAPES` stay on the dynamic model, never evicting (no recompile churn).
* ``PERFORMANCE_HINT: LATENCY`` and one stream: one inference at a time, on
  ``INFERENCE_NUM_THREADS`` threads (the configured intra-op thread count; ``None``: the
  plugin's default, all cores, as onnxruntime's).
* No CPU pinning: several detector processes (Ray actors) share a node's cores; threads
  pinned by each of them to the same cores would fight.
* A static compile in flight when the process exits is waited for (it is bounded: one
  compile per shape, at most :data:`STATIC_SHAPES` per session), never abandoned: the compile
  threads are not daemons, and an :mod:`atexit` hook stops new ones and joins the rest. A
  daemon compile thread that outlived the main thread crashed the exit (``veilstream eval``
  on 3 images: rc 134, "terminate called without an active exception"): when
  ``compile_model`` returned during interpreter finalization, pybind11 took the GIL back,
  CPython ended the thread with ``pthread_exit`` and its forced unwind hit a ``noexcept``
  C++ frame of ``_pyopenvino``: ``std::terminate``, SIGABRT.

* Compiled models are cached on disk (:class:`BlobCache`, ``$VEILSTREAM_CACHE_DIR/openvino``):
  the dynamic compile and each static-shape compile are exported once and imported by later
  sessions (in this process or any other), ~0.05-0.1 s instead of 0.15-0.2 s per compile, and
  the graph is not even read when every compile hits. Not OpenVINO's own ``CACHE_DIR``: it
  writes ``<hash>.blob`` in place with no temporary file and no lock across processes (Ray
  actors and CLI runs start together), so a reader can see a half-written blob, and it keys
  the CPU plugin's blob without the inference precision (an f32 and a bf16 compile shared
  one file). Here the key is ours (the graph's sha256, the full compile config, the static
  shape, the OpenVINO version and the CPU's name and capabilities), a blob is written to a
  temporary file and renamed into place, read whole, and an unreadable one is compiled anew.

``openvino`` is imported when a session is built, never at module import: ``operators``
imports without it.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

STATIC_AFTER = 3
"""Calls at one input shape before the session compiles a static-shape model for it."""
STATIC_SHAPES = 12
"""Input shapes per session that get a static-shape model (the first ones to recur)."""

OPENVINO = "openvino"
"""The backend's name: the config / CLI value, and what :meth:`OpenVinoSession.get_providers` reports."""

_compiles: set[threading.Thread] = set()
"""Static-compile threads now running, in every session of the process."""
_compiles_lock = threading.Lock()
_closing = False
"""Set at exit: no static compile starts any more."""
_exit_hook = False
_synchronous_default = False


def set_synchronous_compiles(on: bool) -> None:
    """Whether sessions built from now on compile their static shapes in the calling thread
    (:attr:`OpenVinoSession.synchronous_compile`). Off by default: a compile never stalls a
    detection call. ``veilstream eval`` turns it on, so which compiled model (dynamic or static,
    whose outputs differ in the last bits) serves a call depends on the call count only, not on
    when a background compile finished: two runs of one tree score the same."""
    global _synchronous_default
    _synchronous_default = bool(on)


def synchronous_compiles() -> bool:
    """What :func:`set_synchronous_compiles` last set (``False`` unless set)."""
    return _synchronous_default


def _join_compiles_at_exit() -> None:
    """At exit, before the interpreter tears modules down: start no static compile any more
    and wait for those in flight (normally none are left: the threads are not daemons, so
    ``threading`` has joined them already; this covers one started after that join)."""
    global _closing
    with _compiles_lock:
        _closing = True
        threads = list(_compiles)
    for thread in threads:
        thread.join()


def _run_compile(target: Any, key: Any) -> None:
    try:
        target(key)
    finally:
        with _compiles_lock:
            _compiles.discard(threading.current_thread())


def _start_compile(target: Any, key: Any) -> threading.Thread | None:
    """Run ``target(key)`` on a new non-daemon thread, or return ``None`` when the process is
    exiting. The exit hook is registered on the first start, after ``openvino`` was imported."""
    global _exit_hook
    with _compiles_lock:
        if _closing:
            return None
        if not _exit_hook:
            atexit.register(_join_compiles_at_exit)
            _exit_hook = True
        thread = threading.Thread(target=_run_compile, args=(target, key), name="openvino-static-compile",
                                  daemon=False)
        _compiles.add(thread)
        thread.start()
    return thread


CACHE_RECIPE = 1
"""Version of :class:`BlobCache`'s key and blob format; bump it when either changes."""
CACHE_MAX_BYTES = 512 << 20
"""Blobs kept in the cache directory; past this the least recently used go (each is 4-8 MB for
the detector graphs; a session compiles at most 1 + :data:`STATIC_SHAPES`)."""

_warned_dirs: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(directory: Path, exc: BaseException) -> None:
    with _warned_lock:
        if str(directory) in _warned_dirs:
            return
        _warned_dirs.add(str(directory))
    logger.warning("openvino compiled models not cached: %s is not writable (%s); set $VEILSTREAM_CACHE_DIR",
                   directory, exc)


_device: list[str] = []


def _device_id(core: Any) -> str:
    """What a blob is only valid for besides its graph and config: the runtime and the CPU."""
    if not _device:
        import openvino as ov

        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        _device.append(json.dumps([str(ov.__version__), str(core.get_property("CPU", "FULL_DEVICE_NAME")),
                                   sorted(str(c) for c in caps)]))
    return _device[0]


class BlobCache:
    """Compiled OpenVINO models on disk, one file per (graph, config, shape), shared by processes.

    Args:
        directory: where blobs go (``None``: ``<model cache>/openvino``, the cache root of
            :func:`operators.registry.default_cache_dir`). A directory that cannot be created
            or written disables the cache with one warning per process, never an error.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        if directory is None:
            from .registry import default_cache_dir

            directory = default_cache_dir() / "openvino"
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def key(self, core: Any, graph_sha256: str, config: Mapping[str, Any], shape: object) -> str:
        """The blob name of ``graph_sha256`` compiled by ``core`` with ``config`` for ``shape``."""
        text = json.dumps({"graph": graph_sha256, "config": {k: str(v) for k, v in sorted(config.items())},
                           "shape": shape, "device": _device_id(core), "recipe": CACHE_RECIPE}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def load(self, core: Any, key: str, config: Mapping[str, Any]) -> Any | None:
        """The compiled model cached under ``key``, or ``None`` (absent or unreadable)."""
        path = self.directory / f"{key}.blob"
        try:
            data = path.read_bytes()  # whole: a blob replaced or pruned meanwhile stays intact here
        except OSError:
            return None
        try:
            compiled = core.import_model(data, "CPU", dict(config))
        except Exception as exc:  # noqa: BLE001 - a bad blob costs a compile, never the session
            logger.warning("openvino cached blob %s unreadable (%s): compiling the model", path.name, exc)
            return None
        try:
            os.utime(path)  # least recently used goes first when pruning
        except OSError:
            pass
        with self._lock:
            self.hits += 1
        return compiled

    def store(self, compiled: Any, key: str) -> None:
        """Write ``compiled``'s export under ``key`` atomically (temporary file, then rename)."""
        with self._lock:
            self.misses += 1
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            data = compiled.export_model()
            data = data.getvalue() if hasattr(data, "getvalue") else bytes(data)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)  # as the other cached models (mkstemp makes it 0600)
                os.replace(tmp, self.directory / f"{key}.blob")
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            _warn_once(self.directory, exc)
            return
        self._prune()

    def _prune(self) -> None:
        try:
            stale = time.time() - 3600  # a writer killed mid-write left its temporary file
            for p in self.directory.glob(".*.tmp"):
                try:
                    if p.stat().st_mtime < stale:
                        p.unlink()
                except OSError:
                    continue
            blobs = []
            for p in self.directory.glob("*.blob"):
                try:
                    st = p.stat()
                except OSError:
                    continue
                blobs.append((st.st_mtime, st.st_size, p))
            total = sum(b[1] for b in blobs)
            for _mtime, size, p in sorted(blobs, key=lambda b: b[0]):
                if total <= CACHE_MAX_BYTES:
                    break
                p.unlink(missing_ok=True)
                total -= size
        except OSError as exc:
            logger.debug("openvino cache prune in %s: %s", self.directory, exc)


def _sha256(model: str | os.PathLike[str] | bytes) -> str:
    if isinstance(model, bytes):
        return hashlib.sha256(model).hexdigest()
    h = hashlib.sha256()
    with open(model, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.cache
def bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (AMX or AVX-512 BF16)."""
    if not available():
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def available() -> bool:
    """Whether the ``openvino`` package can be imported here (it is not imported)."""
    import importlib.util

    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class NodeArg:
    """What ``InferenceSession.get_inputs()`` items offer: a name and a shape (``None`` = dynamic)."""

    name: str
    shape: tuple[int | None, ...]


def _node(port: Any) -> NodeArg:
    ps = port.get_partial_shape()
    dims = tuple(d.get_length() if d.is_static else None for d in ps) if ps.rank.is_static else ()
    return NodeArg(port.get_any_name(), dims)


class OpenVinoSession:
    """One ONNX graph compiled for OpenVINO's CPU plugin.

    Args:
        model: path to an ``.onnx`` file, or its serialised bytes.
        threads: inference threads (``None``: the plugin's default, all cores).
        inference_precision: ``f32`` (default: outputs as onnxruntime's within ~1e-5) or
            ``bf16`` (AMX / AVX-512 BF16 CPUs: :func:`bf16_supported`; changes outputs by
            ~1e-2, see the detectors' ``precision``).

    Thread safety: :meth:`run` may be called from several threads (each gets its own
    infer request), as ``InferenceSession.run`` may.
    """

    def __init__(self, model: str | os.PathLike[str] | bytes, threads: int | None = None,
                 inference_precision: str = "f32", cache: BlobCache | None | bool = True) -> None:
        import openvino as ov

        if threads is not None and threads < 1:
            from .types import ProviderError

            raise ProviderError(f"threads must be >= 1, got {threads}")
        core = ov.Core()
        self._core = core
        self._model = model
        self._graph_obj: Any = None
        self._graph_lock = threading.Lock()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                                  "INFERENCE_PRECISION_HINT": inference_precision,
                                  "ENABLE_CPU_PINNING": False}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self._config = config
        self.cache: BlobCache | None = BlobCache() if cache is True else cache or None
        """Where compiled models are looked up and stored (``None``: compiled every time)."""
        self._sha256 = _sha256(model) if self.cache is not None else ""
        self._compiled = self._compile(None)
        self._seen: dict[tuple[tuple[str, tuple[int, ...]], ...], int] = {}
        self._static: dict[tuple[tuple[str, tuple[int, ...]], ...], Any] = {}
        self._pending: set[tuple[tuple[str, tuple[int, ...]], ...]] = set()
        self._compile_lock = threading.Lock()
        self.static_compile_s = 0.0
        self.synchronous_compile = _synchronous_default
        """Compile static shapes in the calling thread (evaluation, tests, benchmarks;
        :func:`set_synchronous_compiles` sets it for every session built later)."""
        self.threads = threads
        self.inference_precision = inference_precision
        self.version = str(ov.__version__)
        self._inputs = [_node(p) for p in self._compiled.inputs]
        self._outputs = [_node(p) for p in self._compiled.outputs]
        self._out_index: dict[str, int] = {}
        for i, port in enumerate(self._compiled.outputs):
            for name in port.get_names():
                self._out_index.setdefault(name, i)
        self._local = threading.local()

    @property
    def _graph(self) -> Any:
        """The ``openvino.Model`` read from the graph, on first use (a session whose compiles all
        come from the cache never reads it)."""
        with self._graph_lock:
            if self._graph_obj is None:
                model = self._model
                self._graph_obj = self._core.read_model(model if isinstance(model, bytes) else os.fspath(model))
            return self._graph_obj

    def _compile(self, key: tuple[tuple[str, tuple[int, ...]], ...] | None) -> Any:
        """The model compiled for the static input shapes ``key`` (``None``: dynamic), from the
        cache when it holds it, else compiled (and stored)."""
        blob = None
        if self.cache is not None:
            blob = self.cache.key(self._core, self._sha256, self._config, None if key is None else [list(k) for k in key])
            compiled = self.cache.load(self._core, blob, self._config)
            if compiled is not None:
                return compiled
        graph = self._graph
        if key is not None:
            graph = graph.clone()
            graph.reshape({name: list(shape) for name, shape in key})
        compiled = self._core.compile_model(graph, "CPU", self._config)
        if self.cache is not None and blob is not None:
            self.cache.store(compiled, blob)
        return compiled

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [OPENVINO]

    def _model_for(self, key: tuple[tuple[str, tuple[int, ...]], ...]) -> Any:
        """The static-shape compiled model for ``key`` once built, else the dynamic one. The
        STATIC_AFTER-th call at a shape, while slots are free, starts its compile on a
        background thread: a compile (0.2 s quiet, seconds on a loaded node) never stalls a
        detection call; the dynamic model serves the shape until it is ready."""
        compiled = self._static.get(key)
        if compiled is not None:
            return compiled
        with self._compile_lock:
            if key in self._seen and self._seen[key] < 0:  # compiling
                return self._compiled
            if len(self._static) + len(self._pending) >= STATIC_SHAPES:
                return self._compiled
            n = self._seen[key] = self._seen.get(key, 0) + 1
            if len(self._seen) > 64 * STATIC_SHAPES:  # many one-off shapes: forget the counts
                self._seen = {k: v for k, v in self._seen.items() if v < 0 or k == key}
            if n < STATIC_AFTER:
                return self._compiled
            self._seen[key] = -1
            self._pending.add(key)
        thread = _start_compile(self._compile_static, key)
        if thread is None:  # exiting: the dynamic model serves the shape
            with self._compile_lock:
                self._pending.discard(key)
            return self._compiled
        if self.synchronous_compile:
            thread.join()
            return self._static.get(key, self._compiled)
        return self._compiled

    def _compile_static(self, key: tuple[tuple[str, tuple[int, ...]], ...]) -> None:
        try:
            t0 = time.perf_counter()
            compiled = self._compile(key)
            dt = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - the dynamic model keeps serving the shape
            logger.warning("openvino static compile shape=%s failed (%s): the dynamic model serves it", key, exc)
            return
        finally:
            with self._compile_lock:
                self._pending.discard(key)
        with self._compile_lock:
            self.static_compile_s += dt
            self._static[key] = compiled
        logger.info("openvino static compile shape=%s in %.2fs (%d of %d)", key, dt, len(self._static),
                    STATIC_SHAPES)

    def _request(self, compiled: Any) -> Any:
        reqs: dict[int, Any] | None = getattr(self._local, "requests", None)
        if reqs is None:
            reqs = self._local.requests = {}
        req = reqs.get(id(compiled))
        if req is None:
            req = reqs[id(compiled)] = compiled.create_infer_request()
        return req

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Infer like ``InferenceSession.run``: outputs in ``output_names`` order (``None``: the
        graph's output order), as new arrays (the request's buffers are reused by the next call)."""
        feed = {k: np.ascontiguousarray(v) for k, v in input_feed.items()}
        compiled = self._model_for(tuple((k, tuple(v.shape)) for k, v in feed.items()))
        res = self._request(compiled).infer(feed)
        idx = range(len(self._outputs)) if output_names is None else [self._out_index[n] for n in output_names]
        return [res[compiled.outputs[i]] for i in idx]


__all__ = ["OPENVINO", "BlobCache", "NodeArg", "OpenVinoSession", "available", "bf16_supported",
           "set_synchronous_compiles", "synchronous_compiles"]
