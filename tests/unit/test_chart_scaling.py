"""The chart's side of "detection scales on lag" and "upgrades without a processing gap": the
consumer bounds rendered into the config, the capacity checks, and the submitter's surge-first roll.

Rendering and validation helpers come from test_deploy.py (same directory).
"""

from __future__ import annotations

import copy

import pytest
from test_deploy import (
    CI_SETS,
    _rendered,
    ci_values,
    config_of,
    deployment,
    render,
    render_error,
    validate_all,
)

from schemas.config import parse_config


def test_defaults_render_no_bounds_and_keep_a_fixed_count():
    for which in ("default", *CI_SETS):
        cfg = config_of(list(_rendered(which)))
        assert "autoscale" not in cfg["ray"], which
        parsed = parse_config(cfg)
        assert parsed.ray.autoscale.bounds(parsed.ray.consumers) == (parsed.ray.consumers,) * 2


def test_bounds_from_values_windows_from_pipeline_and_the_config_parses():
    values = ci_values()  # GPU autoscaling values
    values["ray"] = {**values.get("ray", {}), "consumers": 1, "minConsumers": 1, "maxConsumers": 2}
    values.setdefault("pipeline", {}).setdefault("ray", {})["autoscale"] = {
        "lag_chunks_per_consumer": 300, "scale_down_after_s": 900}
    docs = render(values)
    assert not validate_all(docs)
    cfg = config_of(docs)
    assert cfg["ray"]["autoscale"] == {"min_consumers": 1, "max_consumers": 2, "lag_chunks_per_consumer": 300,
                                       "scale_down_after_s": 900}
    a = parse_config(cfg).ray.autoscale
    assert (a.min_consumers, a.max_consumers, a.lag_chunks_per_consumer, a.scale_up_after_s) == (1, 2, 300, 60)
    # only one bound set: the other is ray.consumers
    values["ray"] = {**values["ray"], "consumers": 2, "minConsumers": None}
    assert config_of(render(values))["ray"]["autoscale"]["min_consumers"] == 2


def problems(values: dict) -> str:
    return render_error(values, "HelmRenderError")


def test_the_worker_groups_must_hold_the_most_consumers_actors():
    gpu = ci_values()
    cap = sum(int(g["maxReplicas"]) * int(g.get("gpu") or 0) for g in gpu["ray"]["workerGroups"].values() if g)
    too_many = copy.deepcopy(gpu)
    too_many["ray"] = {**too_many.get("ray", {}), "maxConsumers": cap + 1}
    msg = problems(too_many)
    assert f"pipeline.ray.detector: ray.maxConsumers ({cap + 1}) x replicas" in msg
    assert f"but the worker groups have at most {cap} (maxReplicas x gpu)" in msg
    # CPUs: the default chart (1 CPU group of 4 pods) holds 2 consumers, not 8
    msg = problems({"ray": {"maxConsumers": 8}})
    assert "ray.workerGroups: ray.maxConsumers (8) x " in msg and "CPUs, but the worker groups offer at most" in msg
    assert "ray.minConsumers" not in msg


def test_the_starting_count_lies_within_the_bounds_and_the_chart_owns_them():
    msg = problems({"ray": {"consumers": 3, "minConsumers": 1, "maxConsumers": 2}})
    assert "ray.consumers: 3 starts the job and must lie within [ray.minConsumers 1, ray.maxConsumers 2]" in msg
    msg = problems({"pipeline": {"ray": {"autoscale": {"max_consumers": 4}}}})
    assert "pipeline.ray.autoscale.max_consumers: set by the chart from ray.maxConsumers" in msg


@pytest.mark.parametrize("which", ["default", *CI_SETS])
def test_the_submitter_rolls_surge_first_with_its_own_job(which):
    """Gapless rollout of the process job: the new submitter pod comes up beside the old one
    (maxUnavailable 0) and submits a job of its own revision (pod-template-hash in the id)."""
    docs = list(_rendered(which))
    proc = deployment(docs, "process")
    assert proc["spec"]["strategy"] == {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    (c,) = proc["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["VEILSTREAM_JOB_REVISION"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['pod-template-hash']"}}
    assert c["args"][-2:] == ["--job-revision", "$(VEILSTREAM_JOB_REVISION)"]
    for comp in ("ingest", "sink"):  # the others keep rolling one pod at a time
        assert deployment(docs, comp)["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 1


def test_a_code_rollout_with_the_ray_image_pinned_leaves_the_ray_pods_alone():
    """image.tag moves, ray.image.tag stays: the RayCluster is rendered identically (KubeRay's
    Recreate has nothing to do), while the submitter's pod template changes (a new revision, a
    new job that ships the new code with it: py_modules)."""
    def docs(tag: str) -> list:
        values = ci_values()
        values["image"] = {**values.get("image", {}), "tag": tag}
        values["ray"] = {**values.get("ray", {}), "image": {"repository": "", "tag": "0.1.0"}}
        return render(values)

    old, new = docs("0.1.0"), docs("0.2.0")
    rc_old, rc_new = ([d for d in ds if d["kind"] == "RayCluster"] for ds in (old, new))
    assert rc_old == rc_new and len(rc_old) == 1
    sub_old, sub_new = (deployment(ds, "process")["spec"]["template"] for ds in (old, new))
    assert sub_old != sub_new and sub_new["spec"]["containers"][0]["image"].endswith(":0.2.0")
