"""Process-stage actors that ask more than the Ray cluster can ever offer are a one-line error at
start (a fixed cluster) or a warning naming the same numbers while they wait (a cluster that may
grow), never a silent hang: Ray would keep them pending forever while the stage polls and submits."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from pipeline.process import worker as worker_mod
from pipeline.process.worker import (
    ProcessWorker,
    capacity_problem,
    cluster_can_grow,
    demand_summary,
)
from schemas.config import parse_config
from schemas.errors import VeilStreamError

# the `make load` run that stored 0 of 2700 frames: 2 x 0.5 + 2 x 1.0 = 3 CPUs of a 2-CPU node
LOAD = {"chunk_workers": 2, "worker_num_cpus": 0.5, "detector": {"replicas": 2, "num_cpus": 1.0}}
LOAD_MESSAGE = ("ray: chunk_workers 2 x worker_num_cpus 0.5 + detector.replicas 2 x detector.num_cpus 1.0 = 3.0 CPUs, "
                "the cluster has 2.0: lower ray.detector.num_cpus or replicas, or ray.chunk_workers or worker_num_cpus")


def ray_cfg(**ray: Any) -> Any:
    return parse_config({"ray": ray}).ray


@pytest.mark.parametrize("ray, nodes, expected", [
    ({}, [], "= 2.0 CPUs, the cluster has 0.0"),  # no node at all
    ({}, [{"CPU": 2.0}], None),  # the defaults fit the 2-CPU machine exactly
    (LOAD, [{"CPU": 2.0}], LOAD_MESSAGE),
    (LOAD, [{"CPU": 3.0}], None),
    ({"detector": {"num_gpus": 1.0, "replicas": 2}}, [{"CPU": 8.0, "GPU": 1.0}],
     "ray: detector.replicas 2 x detector.num_gpus 1.0 = 2.0 GPUs, the cluster has 1.0: lower ray.detector.num_gpus"),
    ({"detector": {"num_gpus": 1.0}}, [{"CPU": 8.0, "GPU": 1.0}], None),
    # node_local: a detector and its chunk actors on ONE node; 3 CPUs in all, but 1.5 per node
    ({"chunk_workers": 1, "worker_num_cpus": 1.0, "detector": {"num_cpus": 1.0}}, [{"CPU": 1.5}, {"CPU": 1.5}],
     "ray: placement node_local packs each detector (detector.num_cpus 1.0) with up to 1 chunk actors x "
     "worker_num_cpus 1.0 = 2.0 CPUs onto one node, 1 such groups; the nodes have 1.5, 1.5 CPUs"),
    # spread: the same actors may sit on different nodes
    ({"placement": "spread", "chunk_workers": 1, "worker_num_cpus": 1.0, "detector": {"num_cpus": 1.0}},
     [{"CPU": 1.5}, {"CPU": 1.5}], None),
    ({"placement": "spread", "chunk_workers": 1, "worker_num_cpus": 0.5, "detector": {"num_cpus": 2.0}},
     [{"CPU": 1.5}, {"CPU": 1.5}], "do not fit the nodes (1.5, 1.5 CPUs; an actor runs on one node)"),
    # two groups of 1.5 onto nodes of 2 + 1: the second group has no node left
    ({"chunk_workers": 2, "worker_num_cpus": 0.5, "detector": {"replicas": 2, "num_cpus": 1.0}},
     [{"CPU": 2.0}, {"CPU": 1.0}], "2 such groups; the nodes have 2.0, 1.0 CPUs"),
    ({"chunk_workers": 2, "worker_num_cpus": 0.5, "detector": {"replicas": 2, "num_cpus": 1.0}},
     [{"CPU": 1.5}, {"CPU": 1.5}], None),
])
def test_capacity_problem_names_the_keys_and_numbers(ray: dict[str, Any], nodes: list[dict[str, float]],
                                                     expected: str | None) -> None:
    got = capacity_problem(ray_cfg(**ray), nodes)
    if expected is None:
        assert got is None
    else:
        assert got is not None and expected in got and "\n" not in got


def test_demand_summary_counts_gpus_only_when_asked():
    assert demand_summary(ray_cfg(**LOAD)) == ("chunk_workers 2 x worker_num_cpus 0.5 + detector.replicas 2 x "
                                               "detector.num_cpus 1.0 = 3.0 CPUs")
    assert demand_summary(ray_cfg(detector={"num_gpus": 0.25})).endswith(
        "detector.replicas 1 x detector.num_gpus 0.25 = 0.25 GPUs")


@pytest.mark.parametrize("address, grows", [
    (None, False), ("", False), ("127.0.0.1:6379", False), ("localhost:6379", False),
    ("auto", True), ("veilstream-ray-head:6379", True), ("ray://10.0.0.5:10001", True),
])
def test_only_a_cluster_address_may_grow(address: str | None, grows: bool) -> None:
    assert cluster_can_grow(address) is grows


class FakeRay:
    """``ray.nodes()``, ``ray.wait`` and ``ray.get`` of actors that never start."""

    def __init__(self, nodes: list[dict[str, float]]) -> None:
        self._nodes = nodes
        self.waits = 0

    def nodes(self) -> list[dict[str, Any]]:
        return [{"Alive": True, "Resources": n} for n in self._nodes] + [{"Alive": False, "Resources": {"CPU": 64.0}}]

    def wait(self, refs: list[Any], num_returns: int, timeout: float) -> tuple[list[Any], list[Any]]:
        self.waits += 1
        time.sleep(timeout)
        return [], list(refs)

    def get(self, refs: list[Any], timeout: float | None = None) -> list[Any]:
        assert refs == []
        return []


def bare_worker(**ray: Any) -> ProcessWorker:
    w = ProcessWorker.__new__(ProcessWorker)  # no Kafka, no plan: the start-up checks only
    w.cfg = parse_config({"ray": ray, "metrics": {"startup_budget_s": 0.3}})
    return w


def test_a_fixed_cluster_that_cannot_place_the_actors_fails_at_start_in_one_line():
    with pytest.raises(VeilStreamError) as err:
        bare_worker(**LOAD)._check_capacity(FakeRay([{"CPU": 2.0}]))
    assert str(err.value) == LOAD_MESSAGE
    bare_worker(**LOAD)._check_capacity(FakeRay([{"CPU": 4.0}]))  # fits: nothing said


def test_a_cluster_that_may_grow_is_warned_about_not_failed(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="pipeline.process.worker"):
        bare_worker(address="auto", **LOAD)._check_capacity(FakeRay([{"CPU": 2.0}]))
    assert [r.getMessage() for r in caplog.records] == [f"{LOAD_MESSAGE} (now; waiting for the cluster to add nodes)"]


def test_pending_actors_are_reported_while_they_wait_then_fail_at_the_budget(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    monkeypatch.setattr(worker_mod, "PENDING_WARN_S", 0.1)
    ray = FakeRay([{"CPU": 2.0}])
    w = bare_worker(address="auto", **LOAD)
    with caplog.at_level(logging.WARNING, logger="pipeline.process.worker"), pytest.raises(VeilStreamError) as err:
        w._wait_ready(ray, ["d0", "d1", "w0", "w1"], 0.3)
    pending = [r.getMessage() for r in caplog.records]
    assert len(pending) >= 1 and ray.waits >= 2
    assert pending[0].startswith("ray: 4 of 4 process actors still pending after ")
    assert pending[0].endswith(f"{demand_summary(w.cfg.ray)}; the cluster has 2.0 CPUs, 0.0 GPUs on 1 nodes")
    assert str(err.value) == (f"ray: 4 of 4 process actors not started after 0.3s (metrics.startup_budget_s): "
                              f"{demand_summary(w.cfg.ray)}; the cluster has 2.0 CPUs, 0.0 GPUs on 1 nodes")


def test_an_actor_that_failed_to_start_is_reported_at_once():
    class Broken(FakeRay):
        def wait(self, refs: list[Any], num_returns: int, timeout: float) -> tuple[list[Any], list[Any]]:
            return list(refs), []

        def get(self, refs: list[Any], timeout: float | None = None) -> list[Any]:
            raise RuntimeError("ModelNotFoundError: model 'yunet_n' not found")

    with pytest.raises(VeilStreamError, match="^process actors failed to start: .*yunet_n"):
        bare_worker()._wait_ready(Broken([{"CPU": 2.0}]), ["d0"], 5.0)


def test_the_probe_server_first_answers_in_the_start_up_phase(monkeypatch: pytest.MonkeyPatch):
    """/healthz's very first answer says "starting": the start-up phase is entered before the
    server starts (before, a probe racing the two read "running" and the integration test
    test_running_workers_probe_first... failed now and then)."""
    from pipeline.metrics import WorkerMetrics

    w = bare_worker()
    w.metrics = WorkerMetrics("process")
    phases: list[str] = []

    def serve(metrics: Any, cfg: Any) -> None:
        phases.append(metrics.phase())
        return None

    def start_ray() -> None:
        raise VeilStreamError("stop here")

    monkeypatch.setattr(worker_mod, "serve_config", serve)
    monkeypatch.setattr(w, "_start_ray", start_ray)
    monkeypatch.setattr(w, "_release_actors", lambda ray: None)
    with pytest.raises(VeilStreamError):
        w.run()
    assert phases == ["starting"]
