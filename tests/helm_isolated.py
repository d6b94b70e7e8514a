"""The Helm v4 SDK (``helm_python``, a Go shared library) in a child process of its own.

Go's runtime, loaded into the test process, installs signal handlers for the whole process; a
signal (SIGCHLD of a finished subprocess, say) that lands on a thread Go does not own and that
has no alternate signal stack (OpenVINO's and onnxruntime's worker threads, which the detector
tests leave running) crashes the interpreter with a segmentation fault. The chart tests run
after such tests in one ``pytest`` process, so every Helm call goes to one spawned child that
never loads a detector. The object returned by :func:`helm` has the part of the SDK's API the
tests use: ``Chart.load(path)`` as a context manager with ``render`` and ``schema``, ``lint``,
and the SDK's exception classes by name (raised here with the child's message).
"""

from __future__ import annotations

import atexit
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_POOL: ProcessPoolExecutor | None = None


def _pool() -> ProcessPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        atexit.register(_POOL.shutdown, wait=False, cancel_futures=True)
    return _POOL


# ---------------------------------------------------------------- in the child


def _child_render(chart_dir: str, values: Any, kwargs: dict[str, Any]) -> tuple[str | None, Any]:
    import helm_python

    try:
        with helm_python.Chart.load(chart_dir) as chart:
            return None, chart.render(values, **kwargs)
    except helm_python.HelmError as exc:
        return type(exc).__name__, str(exc)


def _child_schema(chart_dir: str) -> Any:
    import helm_python

    with helm_python.Chart.load(chart_dir) as chart:
        return chart.schema


def _child_lint(chart_dir: str, values: Any, kwargs: dict[str, Any]) -> tuple[str | None, Any]:
    import helm_python

    try:
        return None, helm_python.lint(chart_dir, values, **kwargs)
    except helm_python.HelmError as exc:
        return type(exc).__name__, str(exc)


# ---------------------------------------------------------------- in the tests


class HelmError(Exception):
    """Base of the SDK's errors as the tests see them (same names, the child's message)."""


_ERRORS: dict[str, type[HelmError]] = {}


def _error(name: str) -> type[HelmError]:
    if name not in _ERRORS:
        _ERRORS[name] = type(name, (HelmError,), {})
    return _ERRORS[name]


def _unwrap(result: tuple[str | None, Any]) -> Any:
    err, value = result
    if err is not None:
        raise _error(err)(value)
    return value


class _LoadedChart:
    def __init__(self, chart_dir: str) -> None:
        self.chart_dir = chart_dir

    def __enter__(self) -> _LoadedChart:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @property
    def schema(self) -> Any:
        return _pool().submit(_child_schema, self.chart_dir).result()

    def render(self, values: Any = None, **kwargs: Any) -> Any:
        return _unwrap(_pool().submit(_child_render, self.chart_dir, values, kwargs).result())


class _Chart:
    @staticmethod
    def load(chart_dir: str) -> _LoadedChart:
        return _LoadedChart(str(chart_dir))


class _Helm:
    Chart = _Chart

    @staticmethod
    def lint(chart_dir: str, values: Any = None, **kwargs: Any) -> Any:
        return _unwrap(_pool().submit(_child_lint, str(chart_dir), values, kwargs).result())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("Helm") and name.endswith("Error"):
            return HelmError if name == "HelmError" else _error(name)
        raise AttributeError(name)


def helm() -> Any:
    """The SDK, run in the child. Never imported here: loading it installs Go's signal handlers
    in this process. Raises ImportError when it is not installed."""
    import importlib.util

    if importlib.util.find_spec("helm_python") is None:
        raise ImportError("No module named 'helm_python'")
    return _Helm()
