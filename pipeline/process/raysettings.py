"""Ray's own background work in the process stage, turned down where nothing reads it
(issue 19, session 12: docs/performance.md "Session 12: Ray's own CPU in the process stage").

Every Ray core worker (the stage's detector and chunk actors, and the driver) records a state
event for each task it submits or runs and ships them to GCS once a second: what ``ray list
tasks``, the dashboard's task view and ``ray.timeline`` read. Every Ray event loop also times
each handler it runs (``event_stats``: debug dumps and event-loop metrics). The stage reads none
of it (its metrics are its own, prometheus-client ``veil_process_*``; it never asks Ray's state
API for tasks), and turning it off took a no-op actor call from 1.29 to 1.10 CPU-ms and Ray's
idle tree from 0.059 to 0.055 CPU-s a second (load_tests/ray_idle_cost.py).

:data:`QUIET_RAY_CONFIG` holds those settings; :data:`QUIET_RAY_ENV` spells them as Ray's
environment variables (``RAY_<name>`` of ``ray_config_def.h``), which Ray reads in every
process it starts, so one mechanism serves the stage's in-process ``ray.init`` and the driver
of a loopback head (:meth:`pipeline.process.worker.ProcessWorker._start_ray`) and ``ray start``
of ``veilstream up``'s head (:mod:`pipeline.devstack.raylocal`, whose actors and job drivers
inherit it). A cluster's driver (KubeRay) is left alone: there the chart's env decides, and
operators may use the dashboard's task view. Ray ignores an unknown ``RAY_<name>`` silently,
so names and types are checked against the installed Ray in ``tests/unit/test_raysettings.py``
(``ray._raylet.Config.initialize`` aborts on an unknown key or a value of the wrong type).

Measured and left out (see the performance doc): ``RAY_enable_metrics_collection=0`` and a
slower dashboard-agent reporter (``REPORTER_UPDATE_INTERVAL_MS``) save ~0.004-0.008 CPU-s a
second idle and nothing measurable under load, while the chart's PodMonitor and
``load_tests/cluster_load.py`` read Ray's metrics; ``log_to_driver=False`` / no log monitor
would drop the actors' log lines from the stage's log.

An operator's own value of any of these variables wins (:func:`apply_quiet_ray_env` only
fills in what the environment does not set).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from types import MappingProxyType

__all__ = ["QUIET_RAY_CONFIG", "QUIET_RAY_ENV", "apply_quiet_ray_env", "quiet_ray_env"]

QUIET_RAY_CONFIG: Mapping[str, bool | int] = MappingProxyType({
    # Task state events: 0 turns recording and reporting off (ray_config_def.h: "The reported
    # data should only be used for observability"). Nothing in the stage lists tasks.
    "task_events_report_interval_ms": 0,
    # Profile events for ray.timeline(); without task events they go nowhere anyway.
    "enable_timeline": False,
    # Per-handler timing of every event loop (debug dumps and event-loop metrics).
    "event_stats": False,
})
"""Ray's settings for the stage's Ray processes (``ray_config_def.h`` name: typed value, as
``_system_config`` takes them)."""

_PREFIX = "RAY_"


def _env_value(value: bool | int) -> str:
    # Ray's C++ reads a bool variable as true for "1"/"true" only
    return ("1" if value else "0") if isinstance(value, bool) else str(value)


QUIET_RAY_ENV: Mapping[str, str] = MappingProxyType(
    {f"{_PREFIX}{k}": _env_value(v) for k, v in QUIET_RAY_CONFIG.items()})
""":data:`QUIET_RAY_CONFIG` as Ray's environment variables (``RAY_<name>``: value)."""


def quiet_ray_env() -> dict[str, str]:
    """A copy of :data:`QUIET_RAY_ENV`, for a child process's environment (``ray start``)."""
    return dict(QUIET_RAY_ENV)


def apply_quiet_ray_env(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Fill :data:`QUIET_RAY_ENV` into ``environ`` (e.g. ``os.environ`` before ``ray.init``, whose
    processes inherit it) where it does not set the variable already; returns what it set."""
    added = {k: v for k, v in QUIET_RAY_ENV.items() if k not in environ}
    environ.update(added)
    return added
