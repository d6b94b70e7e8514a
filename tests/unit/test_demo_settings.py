"""``make demo``'s process-stage layout: detector replicas with a core's share of threads each,
merged into the run config so that the config still validates and its Ray groups fit the cores."""

from __future__ import annotations

import pytest

from pipeline.demo import DEMO_DETECTOR_REPLICAS, demo_detectors, main
from pipeline.process.worker import node_local_groups
from pipeline.runner import _flat, _merge
from schemas.config import parse_config


@pytest.mark.parametrize("cores", [1, 2, 3, 8])
def test_demo_detectors_fit_the_cores_and_use_them(cores: int) -> None:
    ray = demo_detectors(DEMO_DETECTOR_REPLICAS, cpus=cores)
    det = ray["detector"]
    assert det["replicas"] == min(DEMO_DETECTOR_REPLICAS, cores)
    assert ray["chunk_workers"] == det["replicas"]
    # every core has a detector thread, no core two (2 vCPU: two detectors of one thread)
    assert det["replicas"] * det["threads"] == cores - cores % det["replicas"]
    groups = node_local_groups(det["replicas"], ray["chunk_workers"], det_cpus=det["num_cpus"], det_gpus=0.0,
                               worker_cpus=ray["worker_num_cpus"])
    # Ray's local head has one logical CPU per core: the groups must fit or the stage never starts
    assert sum(b.get("CPU", 0.0) for g in groups for b in g.bundles) <= cores
    assert all(len(g.bundles) == 2 for g in groups)  # one detector and one chunk actor per group


def test_zero_replicas_keeps_the_config() -> None:
    assert demo_detectors(0, cpus=2) == {}


def test_merged_into_a_run_config_it_still_validates() -> None:
    raw = {"kafka": {"bootstrap_servers": "127.0.0.1:9092"}, "object_store": {"endpoint": "127.0.0.1:9000"},
           "ray": {"detector": {"batch_size": 16, "replicas": 1}}}
    _merge(raw["ray"], demo_detectors(2, cpus=2))
    cfg = parse_config(raw)
    assert cfg.ray.detector.replicas == 2 and cfg.ray.detector.threads == 1
    assert cfg.ray.detector.batch_size == 16  # a key the demo does not set survives the merge
    assert cfg.ray.chunk_workers == 2
    assert dict(_flat({"detector": {"replicas": 2}, "chunk_workers": 2})) == {"detector.replicas": 2,
                                                                               "chunk_workers": 2}


def test_split_min_frames_reaches_the_run_config_and_zero_turns_the_split_off() -> None:
    raw = {"kafka": {"bootstrap_servers": "127.0.0.1:9092"}, "object_store": {"endpoint": "127.0.0.1:9000"}}
    assert parse_config(raw).ray.detector.split_min_frames == 2  # the process stage's default
    for n in (2, 0):
        merged = {**raw, "ray": {}}
        _merge(merged["ray"], demo_detectors(2, cpus=2, split_min_frames=n))
        assert parse_config(merged).ray.detector.split_min_frames == n
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="split_min_frames"):
        parse_config({**raw, "ray": {"detector": {"split_min_frames": -1}}})


def test_bad_replicas_value_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--detector-replicas", "two"])
    assert exc.value.code == 2
    assert "--detector-replicas" in capsys.readouterr().err


def test_lag_counts_what_the_group_has_not_committed() -> None:
    from types import SimpleNamespace

    from pipeline.runner import _lag

    class _C:
        def committed(self, parts: list[object], timeout: float) -> list[object]:
            # partition 0 committed up to 7 of 10, partition 1 never committed (offset -1001) of 4
            return [SimpleNamespace(partition=0, offset=7), SimpleNamespace(partition=1, offset=-1001)]

        def get_watermark_offsets(self, tp: SimpleNamespace, timeout: float, cached: bool) -> tuple[int, int]:
            return (0, 10) if tp.partition == 0 else (0, 4)

    assert _lag(_C(), [object(), object()]) == 3 + 4
