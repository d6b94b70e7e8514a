"""Node-local processing: each detector replica and its share of the chunk actors are one
placement group packed onto one node, so decoded frames never cross the network."""

from __future__ import annotations

import pytest

from pipeline.process.worker import node_local_groups


@pytest.mark.parametrize(("replicas", "workers", "sizes"), [
    (1, 1, [2]),
    (1, 4, [5]),
    (2, 4, [3, 3]),
    (3, 4, [3, 2, 2]),  # the first group gets the odd one out
    (4, 2, [2, 2, 1, 1]),  # more detectors than chunk actors: some groups hold a detector only
])
def test_every_chunk_actor_has_a_bundle_in_its_detectors_group(replicas, workers, sizes):
    groups = node_local_groups(replicas, workers, det_cpus=1, det_gpus=0, worker_cpus=0.5)
    assert [len(g.bundles) for g in groups] == sizes
    # chunk actor w -> group w % replicas, bundle 1 + w // replicas: every index exists
    for w in range(workers):
        assert 1 + w // replicas < len(groups[w % replicas].bundles)
    assert all(g.bundles[0] == {"CPU": 1.0} for g in groups)
    assert all(b == {"CPU": 0.5} for g in groups for b in g.bundles[1:])


def test_gpu_detectors_and_zero_cpu_actors_make_valid_bundles():
    (g,) = node_local_groups(1, 2, det_cpus=0, det_gpus=0.25, worker_cpus=0)
    assert g.bundles[0] == {"GPU": 0.25}
    assert g.bundles[1:] == [{"CPU": 0.01}, {"CPU": 0.01}]  # a bundle may not be empty


def test_placement_is_one_setting_with_node_local_the_default():
    from schemas.config import parse_config
    from schemas.errors import ConfigError

    assert parse_config({}).ray.placement == "node_local"
    assert parse_config({"ray": {"placement": "spread"}}).ray.placement == "spread"
    with pytest.raises(ConfigError, match="ray.placement"):
        parse_config({"ray": {"placement": "anywhere"}})
