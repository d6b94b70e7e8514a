"""Ray's settings for the stage's own Ray (pipeline.process.raysettings): the names are real
settings of the installed Ray, and they reach both the in-process ``ray.init`` and the local head."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import pipeline.devstack.raylocal as raylocal
import pipeline.process.worker as worker_mod
from pipeline.devstack import DevStackError
from pipeline.process.raysettings import (
    QUIET_RAY_CONFIG,
    QUIET_RAY_ENV,
    apply_quiet_ray_env,
    quiet_ray_env,
)
from pipeline.raynet import is_loopback_address
from schemas.config import parse_config
from tests.fakes import DeadProcess

# Ray ignores an unknown RAY_<name> variable; its config parser aborts the process on an unknown key.
_CHECK = "import sys, ray._raylet as r; r.Config.initialize(sys.argv[1]); print('accepted')"


def _ray_accepts(config: Mapping[str, object]) -> bool:
    done = subprocess.run([sys.executable, "-c", _CHECK, json.dumps(dict(config))], capture_output=True, text=True,
                          timeout=120)
    return done.returncode == 0 and "accepted" in done.stdout


def test_the_environment_spells_the_config_as_rays_cpp_reads_it() -> None:
    assert QUIET_RAY_CONFIG
    for key, value in QUIET_RAY_CONFIG.items():
        want = {True: "1", False: "0"}[value] if isinstance(value, bool) else str(value)
        assert QUIET_RAY_ENV[f"RAY_{key}"] == want
    assert len(QUIET_RAY_ENV) == len(QUIET_RAY_CONFIG)


def test_every_setting_is_a_setting_of_the_installed_ray() -> None:
    assert _ray_accepts(QUIET_RAY_CONFIG)


def test_a_misspelt_setting_is_refused_by_the_check() -> None:
    # the check above can fail: Ray would silently ignore RAY_task_event_report_interval_ms
    assert not _ray_accepts({"task_event_report_interval_ms": 0})
    assert not _ray_accepts({"enable_timeline": 0})  # a bool given as a number


def test_apply_fills_in_only_what_the_environment_does_not_set() -> None:
    assert apply_quiet_ray_env({k: "x" for k in QUIET_RAY_ENV}) == {}
    env = {"RAY_event_stats": "1", "HOME": "/home/x"}
    added = apply_quiet_ray_env(env)
    assert env["RAY_event_stats"] == "1" and "RAY_event_stats" not in added  # the operator's value wins
    assert env == {**QUIET_RAY_ENV, "RAY_event_stats": "1", "HOME": "/home/x"}
    assert quiet_ray_env() == dict(QUIET_RAY_ENV) and quiet_ray_env() is not QUIET_RAY_ENV


class _Stop(Exception):
    pass


def _clear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset the settings for this test, and unset them again after it (the code under test sets them)."""
    for k in QUIET_RAY_ENV:
        monkeypatch.setenv(k, "unset")
        monkeypatch.delenv(k)


def _env_at_ray_init(monkeypatch: pytest.MonkeyPatch, address: str | None) -> dict[str, str]:
    import ray

    seen: dict[str, str] = {}

    def fake_init(*args: Any, **kw: Any) -> None:
        seen.update(os.environ)
        raise _Stop

    _clear(monkeypatch)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    # the real one also sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER for good; its answer is what matters here
    monkeypatch.setattr("pipeline.raynet.keep_ray_on_loopback", lambda a: a is None or is_loopback_address(a))
    w = worker_mod.ProcessWorker(parse_config({"ray": {"address": address}, "metrics": {"enabled": False}}))
    with pytest.raises(_Stop):
        w._start_ray()
    return seen


def test_the_stages_local_ray_starts_with_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for address in (None, "127.0.0.1:6379"):  # in-process Ray, `veilstream up`'s head
        env = _env_at_ray_init(monkeypatch, address)
        assert {k: env.get(k) for k in QUIET_RAY_ENV} == dict(QUIET_RAY_ENV)


def test_a_cluster_driver_is_left_as_the_cluster_is(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env_at_ray_init(monkeypatch, "veilstream-ray-head-svc:6379")
    assert not any(k in env for k in QUIET_RAY_ENV)


_Dead = DeadProcess


def _head_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **kw: Any) -> dict[str, str]:
    seen: dict[str, str] = {}

    def fake_spawn(name: str, argv: list[str], log: Any, marker: str, env: dict[str, str], **_: Any) -> _Dead:
        seen.update(env)
        return _Dead()

    monkeypatch.setattr(raylocal, "spawn", fake_spawn)
    monkeypatch.setattr(raylocal, "_ray_bin", lambda: "ray")
    with pytest.raises(DevStackError):  # the fake head "exits" at once
        raylocal.start_ray_head(tmp_path, num_cpus=1, **kw)
    return seen


def test_the_local_head_starts_with_the_settings_and_the_callers_value_wins(monkeypatch: pytest.MonkeyPatch,
                                                                            tmp_path: Path) -> None:
    _clear(monkeypatch)
    env = _head_env(monkeypatch, tmp_path)
    assert {k: env.get(k) for k in QUIET_RAY_ENV} == dict(QUIET_RAY_ENV)
    monkeypatch.setenv("RAY_event_stats", "1")
    assert _head_env(monkeypatch, tmp_path)["RAY_event_stats"] == "1"
    assert _head_env(monkeypatch, tmp_path, env_extra={"RAY_enable_timeline": "1"})["RAY_enable_timeline"] == "1"
