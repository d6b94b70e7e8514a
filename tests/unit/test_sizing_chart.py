"""The chart tells the truth about a city: `veilstream plan`'s values render into manifests that
provide what it computed (validated like every other render: kubernetes-validate and the CRDs in
../shared/crds), PriorityClasses exist for the names pods use, TensorRT is required only of an
image that has it, and the city values spread every pod over zones."""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy import (
    CHART,
    ROOT,
    _rendered,
    by_kind,
    config_of,
    deployment,
    one,
    render,
    render_error,
    validate_all,
)

from pipeline.sizing import PlanInput, merge, plan, to_values

CITY_CMD = ["plan", "--cameras", "5000", "--fps", "15", "--size", "1280x720", "--footage", "crowd", "--node", "gpu",
            "--plates-share", "0.3", "--values-base", "helm/sites/city.yaml", "--values-out",
            "helm/veilstream/ci/city.yaml"]
ZONE = "topology.kubernetes.io/zone"


def cpus(q: str | int) -> float:
    s = str(q)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def gib(q: str) -> float:
    units = {"Gi": 1.0, "Mi": 1 / 1024, "Ki": 1 / 1024**2}
    for u, f in units.items():
        if q.endswith(u):
            return float(q[: -len(u)]) * f
    return float(q) / 1024**3


@functools.cache
def _planned(node: str) -> tuple[Any, tuple[dict[str, Any], ...]]:
    pl = plan(PlanInput(cameras=5000, fps=15, node=node, plates_share=0.3))
    return pl, tuple(render(merge({}, to_values(pl))))


@pytest.mark.parametrize("node", ["gpu", "cpu"])
def test_plan_values_render_valid_manifests_that_provide_the_plan(node):
    pl, docs = _planned(node)
    docs = list(docs)
    assert not validate_all(docs), validate_all(docs)
    s, r = pl.summary, pl.ray
    (rc,) = by_kind(docs, "RayCluster")
    ray_cpus = ray_gpus = 0.0
    for g in rc["spec"]["workerGroupSpecs"]:
        (c,) = g["template"]["spec"]["containers"]
        lim = c["resources"]["limits"]
        offered = g.get("rayStartParams", {}).get("num-cpus")
        ray_cpus += g["minReplicas"] * (cpus(offered) if offered is not None else cpus(lim["cpu"]))
        ray_gpus += g["minReplicas"] * int(lim.get("nvidia.com/gpu", 0))
    vcpu = sum(g["minReplicas"] * cpus(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
               for g in rc["spec"]["workerGroupSpecs"])
    cfg = config_of(docs)
    det = cfg["ray"]["detector"]
    # what the job's actors reserve (every consumer starts its own chunk and detector actors) fits
    assert cfg["ray"]["consumers"] == r["consumers"]
    reserved_cpu = cfg["ray"]["consumers"] * (cfg["ray"]["chunk_workers"] * cfg["ray"]["worker_num_cpus"] + 0.25
                                              + det["replicas"] * det["num_cpus"])
    assert reserved_cpu <= ray_cpus
    assert cfg["ray"]["consumers"] * det["replicas"] * det["num_gpus"] <= ray_gpus
    # and the rendered totals are at least the plan's
    assert ray_gpus >= s["gpus"]
    ingest, sink = deployment(docs, "ingest"), deployment(docs, "sink")
    assert ingest["spec"]["replicas"] == s["ingest_replicas"]
    sink_c = sink["spec"]["template"]["spec"]["containers"][0]
    assert gib(sink_c["resources"]["limits"]["memory"]) >= s["sink_memory_gib"]
    assert gib(sink_c["resources"]["limits"]["ephemeral-storage"]) >= s["sink_spool_gib"]
    tmp = next(v for v in sink["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")
    assert gib(tmp["emptyDir"]["sizeLimit"]) >= s["sink_spool_gib"]  # the spool is under /tmp
    assert cfg["sink"]["max_buffered_bytes"] == 256 * 2**20
    scaled = one(docs, "ScaledObject", "-sink")["spec"]
    assert scaled["minReplicaCount"] == s["sink_replicas"] and scaled["maxReplicaCount"] <= s["kafka_partitions"]
    rendered_vcpu = (vcpu + ingest["spec"]["replicas"] * cpus(
        ingest["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"])
        + scaled["minReplicaCount"] * cpus(sink_c["resources"]["requests"]["cpu"]))
    assert rendered_vcpu >= s["vcpu"]
    assert cfg["kafka"]["partitions"] == s["kafka_partitions"]
    assert cfg["kafka"]["provisioning"]["replication_factor"] == s["kafka_replication_factor"]
    assert "TensorrtExecutionProvider" not in det.get("providers", [])
    if cfg["ray"]["placement"] == "node_local":  # one pod holds a whole detector group
        group = det["num_cpus"] + math.ceil(cfg["ray"]["chunk_workers"] / det["replicas"]) * cfg["ray"]["worker_num_cpus"]
        assert any(cpus(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]) >= group
                   for g in rc["spec"]["workerGroupSpecs"])


def test_ci_city_values_are_what_the_plan_generates(tmp_path):
    """helm/veilstream/ci/city.yaml is generated: regenerating it changes nothing."""
    out = tmp_path / "city.yaml"
    cmd = [a if a != "helm/veilstream/ci/city.yaml" else str(out) for a in CITY_CMD]
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *cmd], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    committed = (CHART / "ci" / "city.yaml").read_text()
    assert committed.startswith("# GENERATED by `veilstream plan`")
    assert " ".join(CITY_CMD) in committed.splitlines()[1]
    assert out.read_text().replace(str(out), "helm/veilstream/ci/city.yaml") == committed, (
        "helm/veilstream/ci/city.yaml is stale: regenerate it with `veilstream " + " ".join(CITY_CMD) + "`")


def test_city_spreads_every_pod_over_zones_and_creates_its_priority_classes():
    docs = list(_rendered("city"))
    for comp in ("ingest", "sink", "process"):
        spec = deployment(docs, comp)["spec"]["template"]["spec"]
        if comp != "process":
            assert spec["topologySpreadConstraints"][0]["topologyKey"] == ZONE, comp
        assert spec["priorityClassName"] == "veilstream-critical"
    (rc,) = by_kind(docs, "RayCluster")
    for g in rc["spec"]["workerGroupSpecs"]:
        tsc = g["template"]["spec"]["topologySpreadConstraints"][0]
        assert tsc["topologyKey"] == ZONE
        assert tsc["labelSelector"]["matchLabels"] == {"veilstream.dev/ray-group": g["groupName"]}
    classes = {d["metadata"]["name"]: d for d in by_kind(docs, "PriorityClass")}
    assert set(classes) == {"veilstream-critical", "veilstream-batch"}
    assert classes["veilstream-critical"]["value"] > classes["veilstream-batch"]["value"]


# ---------------------------------------------------------------- PriorityClasses


def _used_priority_classes(docs: list[dict[str, Any]]) -> set[str]:
    names = set()
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            names.add(d["spec"]["template"]["spec"].get("priorityClassName"))
        if d["kind"] == "RayCluster":
            names.add(d["spec"]["headGroupSpec"]["template"]["spec"].get("priorityClassName"))
            names |= {g["template"]["spec"].get("priorityClassName") for g in d["spec"]["workerGroupSpecs"]}
    return names - {None}


@pytest.mark.parametrize(("values", "expected"), [
    ({}, {}),
    ({"ingest": {"priorityClassName": "city-high"}}, {"city-high": 100000}),
    ({"ingest": {"priorityClassName": "a"}, "sink": {"priorityClassName": "a"},
      "ray": {"head": {"priorityClassName": "b"}, "workerGroups": {"cpu": {"priorityClassName": "c"}}},
      "priorityClasses": {"values": {"a": 5000, "b": 7}}}, {"a": 5000, "b": 7, "c": 100000}),
    ({"ingest": {"priorityClassName": "system-cluster-critical"}}, {}),  # Kubernetes' own
    ({"ingest": {"priorityClassName": "a"}, "priorityClasses": {"create": False}}, {}),
])
def test_priority_classes_are_created_for_the_names_pods_use(values, expected):
    docs = render(values)
    assert not validate_all(docs), validate_all(docs)
    made = {d["metadata"]["name"]: d["value"] for d in by_kind(docs, "PriorityClass")}
    assert made == expected
    if values.get("priorityClasses", {}).get("create", True):
        assert _used_priority_classes(docs) - set(made) <= {"system-cluster-critical"}
    for d in by_kind(docs, "PriorityClass"):
        assert d["globalDefault"] is False and "namespace" not in d["metadata"]


# ---------------------------------------------------------------- TensorRT, GPUs per job


GPU_GROUP = {"gpu": {"replicas": 1, "minReplicas": 1, "maxReplicas": 2, "gpu": 1,
                     "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi"}}}}


def test_tensorrt_is_required_only_of_an_image_that_has_it():
    values = {"ray": {"workerGroups": GPU_GROUP},
              "pipeline": {"ray": {"detector": {"num_gpus": 0.5, "providers": ["TensorrtExecutionProvider",
                                                                               "CUDAExecutionProvider"]}}}}
    msg = render_error(values, "HelmRenderError")
    assert "pipeline.ray.detector.providers: TensorrtExecutionProvider is required, but image.tensorrt is false" in msg
    docs = render({**values, "image": {"tensorrt": True}})
    assert not validate_all(docs)
    cuda = {**values, "pipeline": {"ray": {"detector": {"num_gpus": 0.5, "providers": ["CUDAExecutionProvider"]}}}}
    assert not validate_all(render(cuda))


def test_chart_default_does_not_require_tensorrt():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tensorrt"] is False
    assert "TensorrtExecutionProvider" not in values["pipeline"]["ray"]["detector"].get("providers", [])
    for path in sorted((CHART / "ci").glob("*.yaml")):
        v = yaml.safe_load(path.read_text())
        providers = (((v.get("pipeline") or {}).get("ray") or {}).get("detector") or {}).get("providers", [])
        if "TensorrtExecutionProvider" in providers:
            assert v.get("image", {}).get("tensorrt") is True, path.name


def test_gpus_are_counted_per_consumer():
    """consumers x replicas x num_gpus must fit the GPU groups' maximum."""
    values = {"ray": {"consumers": 4, "workerGroups": GPU_GROUP},
              "pipeline": {"ray": {"detector": {"num_gpus": 0.5, "replicas": 2}}}}
    msg = render_error(values, "HelmRenderError")
    assert "ray.consumers (4) x replicas (2) x num_gpus (0.5) = 4 GPUs, but the worker groups have at most 2" in msg
    ok = {"ray": {"consumers": 2, "workerGroups": GPU_GROUP}, "pipeline": {"ray": {"detector": {"num_gpus": 0.5}}}}
    assert not validate_all(render(ok))


def test_node_local_groups_must_fit_one_pod():
    """placement node_local packs a detector and its chunk actors onto one pod: the chart says when none fits."""
    group = {"replicas": 1, "minReplicas": 1, "maxReplicas": 4,
             "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}}

    def values(chunk_workers: int, placement: str | None = None) -> dict[str, Any]:
        ray: dict[str, Any] = {"chunk_workers": chunk_workers, "worker_num_cpus": 1,
                               "detector": {"replicas": 2, "num_cpus": 1}}
        if placement:
            ray["placement"] = placement
        return {"ray": {"consumers": 1, "workerGroups": {"cpu": group}}, "pipeline": {"ray": ray}}

    msg = render_error(values(8), "HelmRenderError")  # 1 + 8 / 2 = 5 CPUs on a 4-CPU pod
    assert ("pipeline.ray.placement: node_local packs each detector (1 CPUs, 0 GPUs) and its 4 chunk actors "
            "(1 CPUs each) onto one pod: 5 CPUs and 0 GPUs, but no worker group's pod offers that (cpu 4 CPUs") in msg
    assert not validate_all(render(values(6)))  # 1 + 3 = 4: fits
    assert not validate_all(render(values(8, "spread")))  # actors placed one by one
    assert not validate_all(render({}))  # the chart's defaults fit their own worker


def test_site_file_holds_no_sizing():
    """The city's site file carries what a plan cannot know; sizing comes only from the plan."""
    site = yaml.safe_load((ROOT / "helm" / "sites" / "city.yaml").read_text())
    assert "ingest" not in site and "sink" not in site and "consumers" not in site["ray"]
    assert set(site["ray"]["workerGroups"]["gpu-h100"]) <= {"nodeSelector", "env", "tolerations"}
    assert Path(ROOT / "helm" / "veilstream" / "ci" / "city.yaml").read_text().count("GENERATED") == 1
