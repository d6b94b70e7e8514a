"""The local stack keeps Ray on 127.0.0.1 (Ray has no authentication): the head's command
and environment, the drivers' address resolution, and the worker config ``veilstream up``
writes (metrics on loopback too). The listening sockets themselves are checked against a
real head in tests/integration/test_devstack.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

import pipeline.devstack.raylocal as raylocal
from pipeline.devstack import DevStackError
from pipeline.devstack.stack import worker_config
from pipeline.raynet import LOOPBACK_ENV, is_loopback_address, keep_ray_on_loopback
from schemas.config import parse_config
from tests.fakes import DeadProcess

_Dead = DeadProcess


def _head_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **kw: Any) -> tuple[list[str], dict[str, str]]:
    seen: dict[str, Any] = {}

    def fake_spawn(name: str, argv: list[str], log: Any, marker: str, env: dict[str, str], **_: Any) -> _Dead:
        seen.update(argv=list(argv), env=dict(env))
        return _Dead()

    monkeypatch.setattr(raylocal, "spawn", fake_spawn)
    monkeypatch.setattr(raylocal, "_ray_bin", lambda: "ray")
    with pytest.raises(DevStackError):  # the fake head "exits" at once
        raylocal.start_ray_head(tmp_path, num_cpus=1, **kw)
    return seen["argv"], seen["env"]


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_the_local_head_keeps_every_listener_on_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    argv, env = _head_command(monkeypatch, tmp_path, dashboard_port=18265)
    assert _flag(argv, "--node-ip-address") == "127.0.0.1"
    assert _flag(argv, "--dashboard-host") == "127.0.0.1"
    # without it `ray start` swaps 127.0.0.1 for the routable address and GCS/raylet bind 0.0.0.0
    assert env[LOOPBACK_ENV] == "0"
    argv, env = _head_command(monkeypatch, tmp_path)
    assert "--include-dashboard=false" in argv and env[LOOPBACK_ENV] == "0"


def test_up_writes_loopback_metrics_and_ray_addresses(tmp_path: Path) -> None:
    cfg = worker_config("127.0.0.1:9092", "127.0.0.1:9000", "127.0.0.1:6379", tmp_path)
    assert cfg["metrics"]["host"] == "127.0.0.1" and cfg["metrics"]["port"] == 0
    assert parse_config(cfg).metrics.host == "127.0.0.1"
    assert "0.0.0.0" not in repr(cfg)


@pytest.mark.parametrize("address, loopback", [
    (None, False), ("", False),
    ("127.0.0.1:6379", True), ("localhost:6379", True), ("[::1]:6379", True), ("127.0.1.1:1", True),
    ("ray://127.0.0.1:10001", True), ("http://127.0.0.1:8265", True),
    ("auto", False), ("10.0.0.5:6379", False), ("veilstream-ray-head-svc:6379", False),
    ("http://veilstream-ray-head-svc:8265", False), ("127.example.com:6379", False),
])
def test_loopback_addresses(address: str | None, loopback: bool) -> None:
    assert is_loopback_address(address) is loopback


def test_a_driver_resolves_a_loopback_head_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOOPBACK_ENV, raising=False)
    consts: Any = type(sys)("ray._private.ray_constants")
    consts.ENABLE_RAY_CLUSTER = True
    monkeypatch.setitem(sys.modules, "ray._private.ray_constants", consts)
    assert keep_ray_on_loopback("veilstream-ray-head-svc:6379") is False
    assert LOOPBACK_ENV not in os.environ and consts.ENABLE_RAY_CLUSTER is True
    assert keep_ray_on_loopback("127.0.0.1:6379") is True
    assert os.environ[LOOPBACK_ENV] == "0" and consts.ENABLE_RAY_CLUSTER is False
