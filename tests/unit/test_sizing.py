"""`veilstream plan`: the sizing model (pipeline/sizing) and its command line."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from operators.temporal import detection_schedule
from pipeline.cli import main
from pipeline.sizing import (
    FOOTAGE_KINDS,
    GIB,
    PlanInput,
    SizingError,
    detected_frames,
    divisor_at_least,
    footage_costs,
    load_costs,
    merge,
    partitions_for,
    plan,
    render_table,
    to_values,
)

CITY = PlanInput(cameras=5000, fps=15, node="gpu", plates_share=0.3)
REQUIRED_KEYS = ("vcpu", "gpus", "kafka_partitions", "kafka_bytes_retained", "s3_bytes_per_day", "network_gbps",
                 "ingest_replicas", "sink_replicas", "sink_memory_gib")


@pytest.mark.parametrize(("frames", "every"), [(0, 4), (1, 4), (2, 4), (4, 4), (5, 4), (30, 4), (20, 4), (30, 1),
                                               (30, 30), (31, 30), (600, 7)])
def test_detected_frames_follow_the_detection_schedule(frames, every):
    assert detected_frames(frames, every) == sum(detection_schedule(frames, every))


@pytest.mark.parametrize(("minimum", "expected"), [(0, 6), (1, 6), (6, 6), (7, 12), (125, 180), (5040, 5040),
                                                   (5041, 10080)])
def test_partitions_come_from_counts_with_many_divisors(minimum, expected):
    assert partitions_for(minimum) == expected


@pytest.mark.parametrize(("n", "minimum", "expected"), [(1, 0, 1), (180, 50, 60), (180, 19, 20), (7, 3, 7),
                                                        (180, 181, 180)])
def test_divisor_at_least(n, minimum, expected):
    assert divisor_at_least(n, minimum) == expected


def test_every_cost_says_how_it_was_obtained():
    costs = load_costs()
    for name, c in costs["costs"].items():
        assert set(c) >= {"value", "unit", "status", "what", "source"}, name
        assert c["status"] in ("measured", "derived", "assumed", "choice"), name
        assert c["source"], name
    # the per-frame CPU costs: one row per kind of footage, each measured at its own size, one
    # source (date, commands) for the table
    table = costs["footage"]
    assert tuple(table["kinds"]) == FOOTAGE_KINDS and table["default"] == FOOTAGE_KINDS[0] == "crowd"
    assert table["measured"]["date"] and {"process", "detect"} <= set(table["measured"]["commands"])
    for kind, row in table["kinds"].items():
        assert {"what", "source", "width", "height", "fps"} <= set(row), kind
        for key in ("process_cpu_s_per_frame", "detect_cpu_s_faces", "detect_cpu_s_plates"):
            assert 0 < row[key] < 1, (kind, key)
        assert f"--source {row['source']}" in table["measured"]["commands"]["process"].replace("SOURCE", row["source"])
    for gone in ("process_cpu_s_per_frame", "detect_cpu_s_faces", "detect_cpu_s_plates"):
        assert gone not in costs["costs"]  # one table, not a second copy that drifts
    # the GPU detector actor's CPU was measured on an H100 (gpu_bench.py, 2026-12-05); its GPU
    # time was not (one actor was host-bound, GPU utilisation not sampled): the file must say so
    on_node = costs["costs"]["detect_cpu_s_on_gpu_node"]
    assert on_node["status"] == "measured" and "NOT MEASURED" not in on_node["source"]
    assert all(w in on_node["source"] for w in ("gpu_bench.py", "H100", "CUDA", "2026-12-05", "batch 32"))
    for name in ("detect_gpu_s_faces", "detect_gpu_s_plates"):
        assert costs["costs"][name]["status"] == "assumed" and "NOT MEASURED" in costs["costs"][name]["source"]
        assert "H100 run of 2026-12-05" in costs["costs"][name]["source"]


def test_city_plan_counts_every_topic_s3_and_network():
    s = plan(CITY).summary
    assert set(REQUIRED_KEYS) <= set(s)
    b = 5000 * 2e6 / 8  # bytes/s of all cameras at 2 Mbit/s
    kb = s["kafka_bytes_retained"]
    assert kb["raw"] == pytest.approx(b * 6 * 3600 * 3, rel=1e-6)  # 81 TB
    assert kb["redacted"] == pytest.approx(b * 72 * 3600 * 3, rel=1e-6)  # ~1 PB: the SRE's figure
    assert 0.9e15 < kb["redacted"] < 1.0e15
    assert kb["dlq"] > 0 and kb["audit"] > 0 and kb["total"] == sum(v for k, v in kb.items() if k != "total")
    assert s["s3_bytes_per_day"] == pytest.approx(108e12, rel=0.01)  # ~108 TB/day
    assert s["s3_bytes_at_retention"] == pytest.approx(30 * s["s3_bytes_per_day"], rel=1e-6)  # ~3.2 PB
    net = s["network_gbps"]
    assert net["cameras_to_ingest"] == pytest.approx(10.0)
    assert net["kafka_replication"] == pytest.approx(40.0)  # (RF 3 - 1) x (raw + redacted)
    assert net["ray_frames_to_detectors"] == 0  # node-local: decoded frames stay on their GPU pod
    assert s["placement"] == "node_local" and s["ray_worker_replicas"].get("cpu", 0) == 0
    assert s["kafka_replication_factor"] == 3
    spread = plan(dataclasses.replace(CITY, placement="spread")).summary
    assert spread["network_gbps"]["ray_frames_to_detectors"] > 400  # raw BGR frames to the GPU pods
    assert spread["gpus"] < s["gpus"]  # the trade: fewer GPUs, frames on the network


def test_node_local_gpu_pods_hold_their_chunk_actors():
    pl = plan(CITY)
    r, gpu = pl.ray, pl.pods["gpu"]
    det = r["detector"]
    k = math.floor(1 / det["num_gpus"] + 1e-9)  # node-local groups (detectors) per GPU pod
    assert r["placement"] == "node_local" and k * det["num_gpus"] <= 1
    group_cpus = det["num_cpus"] + (r["chunk_workers"] / det["replicas"]) * r["worker_num_cpus"]
    assert k * group_cpus <= gpu["vcpu"] - 1  # k groups per GPU pod, a CPU left for the consumer actors
    assert gpu["replicas"] * k == r["consumers"] * det["replicas"] and gpu["replicas"] == pl.summary["gpus"]
    # a GPU detector actor keeps about one core busy (measured): the detector CPU is spread over
    # enough actors, never given to one actor as threads it cannot use
    costs = load_costs()
    actor = costs["costs"]["detect_actor_cpus_on_gpu"]["value"]
    det_need = next(ln.value for ln in pl.lines if ln.name == "detector actors' CPU (on GPU pods)")
    assert k > 1 and r["consumers"] * det["replicas"] * min(det["num_cpus"], actor) >= det_need
    busy = next(line for line in pl.to_dict()["lines"] if line["name"] == "GPU busy share")
    assert 0 < busy["value"] <= 100


@pytest.mark.parametrize(("node", "placement"), [("gpu", "node_local"), ("gpu", "spread"), ("cpu", "node_local")])
@pytest.mark.parametrize("cameras", [1, 7, 100, 999, 5000, 22000])
def test_what_the_actors_reserve_fits_what_the_plan_provisions(node, placement, cameras):
    """The SRE's bug: GPUs counted once per job while every consumer starts its own detectors."""
    pl = plan(PlanInput(cameras=cameras, fps=15, node=node, plates_share=0.3, placement=placement))
    r, pods, s = pl.ray, pl.pods, pl.summary
    det = r["detector"]
    consumers = r["consumers"]
    assert s["kafka_partitions"] % consumers == 0 and s["kafka_partitions"] % s["sink_replicas"] == 0
    assert s["kafka_partitions"] % s["ingest_replicas"] == 0 and consumers <= s["kafka_partitions"]
    cpu_reserved = consumers * (r["chunk_workers"] * r["worker_num_cpus"] + 0.25 + det["replicas"] * det["num_cpus"])
    ray_cpus = pods["cpu"]["replicas"] * pods["cpu"]["vcpu"]
    if node == "gpu" and placement == "node_local":
        ray_cpus += pods["gpu"]["replicas"] * pods["gpu"]["vcpu"]  # the GPU pods offer their CPUs to Ray
    assert cpu_reserved <= ray_cpus
    if node == "gpu":  # a GPU detector actor keeps about one core busy (measured on an H100)
        actor = load_costs()["costs"]["detect_actor_cpus_on_gpu"]["value"]
        det_need = next(ln.value for ln in pl.lines if ln.name == "detector actors' CPU (on GPU pods)")
    if node == "gpu" and placement == "node_local":
        assert consumers * det["replicas"] * min(det["num_cpus"], actor) >= det_need
        k = math.floor(1 / det["num_gpus"] + 1e-9)  # groups (detectors) per GPU pod
        assert r["placement"] == "node_local" and 0 < k * det["num_gpus"] <= 1
        assert consumers * det["replicas"] == k * s["gpus"] and s["gpus"] == pods["gpu"]["replicas"]
        need = next(ln.value for ln in pl.lines if ln.name == "GPU time for detection")
        assert s["gpus"] >= need
        # k groups (a detector and its chunk actors) per GPU pod, a CPU left for consumers
        group = det["num_cpus"] + math.ceil(r["chunk_workers"] / det["replicas"]) * r["worker_num_cpus"]
        assert k * group <= pods["gpu"]["vcpu"] - 1
        assert s["network_gbps"]["ray_frames_to_detectors"] == 0
    elif node == "gpu":
        assert det["num_cpus"] == 0 and 0 < det["num_gpus"] <= 1
        detectors = consumers * det["replicas"]
        per_gpu = math.floor(1 / det["num_gpus"] + 1e-9)  # how many fit on one GPU
        # each keeps about one core of its GPU pod busy: enough of them, and no more per pod than cores
        assert detectors * actor >= det_need and per_gpu * actor <= pods["gpu"]["vcpu"]
        assert math.ceil(detectors / per_gpu) <= s["gpus"] == pods["gpu"]["replicas"]
        assert consumers * det["replicas"] * det["num_gpus"] <= s["gpus"]
        need = next(ln.value for ln in pl.lines if ln.name == "GPU time for detection")
        assert s["gpus"] >= need  # rounding never drops below the GPU time
        assert r["placement"] == "spread"  # GPU pods offer no CPUs: only detectors land there
    else:
        assert s["gpus"] == 0 and det["num_gpus"] == 0
        # node_local: a detector and its share of the chunk actors fit one pod, with room for consumers
        assert r["placement"] == "node_local"
        group = det["num_cpus"] + math.ceil(r["chunk_workers"] / det["replicas"]) * r["worker_num_cpus"]
        assert group <= pods["cpu"]["vcpu"] - 1 and consumers * det["replicas"] <= pods["cpu"]["replicas"]
        assert s["network_gbps"]["ray_frames_to_detectors"] == 0
        det_need = next(ln.value for ln in pl.lines if ln.name == "detector actors (CPU)")
        assert consumers * det["replicas"] * det["num_cpus"] >= det_need
    chunk_need = next(ln.value for ln in pl.lines if ln.name.startswith("chunk actors"))
    assert consumers * r["chunk_workers"] * r["worker_num_cpus"] >= chunk_need
    assert s["sink_memory_gib"] <= 8.0 and math.ceil(cameras / s["sink_replicas"]) <= 1024


def test_more_cameras_never_need_less():
    prev = None
    for n in (10, 100, 1000, 5000, 10000):
        s = plan(PlanInput(cameras=n, fps=15)).summary
        if prev:
            assert s["vcpu"] >= prev["vcpu"] and s["gpus"] >= prev["gpus"]
            assert s["s3_bytes_per_day"] > prev["s3_bytes_per_day"]
        prev = s


def test_sink_memory_and_spool_hold_its_cameras_open_segments():
    s = plan(CITY).summary
    per_sink = math.ceil(5000 / s["sink_replicas"])
    segment = 2e6 / 8 * 60
    # open segments: 256 MiB in memory (sink.max_buffered_bytes), the rest in the spool on disk
    assert s["sink_memory_gib"] * GIB >= 0.5 * GIB + 256 * 2**20 + 2 * segment
    assert s["sink_spool_gib"] * GIB >= per_sink * segment - 256 * 2**20
    v = to_values(plan(CITY))
    assert v["pipeline"]["sink"]["max_buffered_bytes"] == 256 * 2**20
    assert v["tmpSizeLimit"] == f"{s['sink_spool_gib']}Gi"


def test_the_default_footage_costs_the_most_per_720p_frame_and_each_kind_is_sized_from_its_own_row():
    costs = load_costs()
    per_px = {k: (footage_costs(costs, k)["process_cpu_s_per_frame"], footage_costs(costs, k)["detect_cpu_s_faces"]
                  + footage_costs(costs, k)["detect_cpu_s_plates"]) for k in FOOTAGE_KINDS}
    assert per_px["crowd"][0] >= per_px["street"][0] and per_px["crowd"][1] >= per_px["street"][1]
    assert PlanInput(cameras=1, fps=15).footage == "crowd"
    cpu = {k: plan(PlanInput(cameras=500, fps=15, node="cpu", footage=k)).summary["vcpu"] for k in ("crowd", "street")}
    assert cpu["crowd"] > cpu["street"]
    # a snapshot camera at its own size: the measured row as it is, no pixel scaling; every frame detected
    snap = footage_costs(costs, "snapshot")
    pl = plan(PlanInput(cameras=100, fps=0.5, width=320, height=180, node="cpu", footage="snapshot"))
    line = {ln.name: ln for ln in pl.lines}
    assert line["decode + mask + encode"].value == pytest.approx(snap["process_cpu_s_per_frame"])
    assert line["pixel scale vs the snapshot footage"].value == 1.0
    assert line["detected frames/s"].value == line["frames/s"].value == 50
    # the same cameras sized as if they were 720p vtest scaled down: less than measured (small frames
    # cost more per pixel), which is why the table has its own row for them
    scaled = plan(PlanInput(cameras=100, fps=0.5, width=320, height=180, node="cpu", footage="street"))
    assert next(ln.value for ln in scaled.lines if ln.name == "decode + mask + encode") < snap["process_cpu_s_per_frame"]


def test_gpu_plan_pays_the_measured_detector_cpu_on_its_gpu_pods():
    costs = load_costs()
    gpu_plan = plan(CITY)
    gpu, cpu = gpu_plan.summary, plan(PlanInput(cameras=5000, fps=15, node="cpu", plates_share=0.3)).summary
    line = {ln.name: ln for ln in gpu_plan.lines}
    util = costs["costs"]["target_utilization"]["value"]
    need = line["detected frames/s"].value * costs["costs"]["detect_cpu_s_on_gpu_node"]["value"] / util
    det = line["detector actors' CPU (on GPU pods)"]
    assert det.value == pytest.approx(need) and det.basis == "measured"
    # node-local: the GPU pods hold the detectors' CPU and the chunk actors'
    pod_vcpu = costs["pods"]["gpu"]["vcpu"]
    assert gpu["gpus"] * (pod_vcpu - 1) >= need + line["chunk actors (decode, mask, encode)"].value
    assert gpu["gpus"] > 0 == cpu["gpus"]
    # measured on an H100 (2026-12-05): the host's share of detection on a GPU node is about what
    # detection costs on CPU nodes, so GPUs do not buy back vCPU (the assumed 0.005 CPU-s did)
    assert gpu["vcpu"] >= 0.9 * cpu["vcpu"]


@pytest.mark.parametrize(("kw", "needle"), [
    ({"cameras": 0}, "--cameras"), ({"fps": 0}, "--fps"), ({"width": 8}, "--size"), ({"node": "tpu"}, "--node"),
    ({"plates_share": 1.5}, "--plates-share"), ({"replication_factor": 0}, "--replication"),
    ({"footage": "forest"}, "--footage"),
])
def test_bad_input_is_reported(kw, needle):
    args = {"cameras": 10, "fps": 15, **kw}
    with pytest.raises(SizingError, match=needle):
        plan(PlanInput(**args))


def test_merge_overrides_and_deletes():
    assert merge({}, {"a": 1}) == {"a": 1}
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}
    assert merge({"a": {"b": 1}, "g": {"x": 1}}, {"g": None}) == {"a": {"b": 1}}
    assert merge({"l": [1, 2]}, {"l": [3]}) == {"l": [3]}
    assert merge({}, {"a": {"b": None, "c": 1}}) == {"a": {"c": 1}}  # no null reaches Helm


def test_values_carry_the_plan():
    pl = plan(CITY)
    v = to_values(pl)
    assert v["ray"]["consumers"] == pl.ray["consumers"]
    assert v["pipeline"]["ray"]["detector"]["providers"] == ["CUDAExecutionProvider"]  # no TensorRT in the image
    assert v["priorityClasses"]["create"] is True
    cpu = to_values(plan(PlanInput(cameras=50, fps=10, node="cpu")))
    assert cpu["ray"]["workerGroups"]["gpu-h100"] is None  # dropped from a site file


def test_table_has_every_line_and_marks_assumptions():
    pl = plan(CITY)
    text = render_table(pl)
    for ln in pl.lines:
        assert ln.name in text
    assert "assumed" in text and "measured" in text and "detect_gpu_s_faces" in text


# ---------------------------------------------------------------- CLI


def test_cli_json_has_the_keys(capsys):
    assert main(["plan", "--cameras", "5000", "--fps", "15", "--size", "1280x720", "--node", "gpu",
                 "--plates-share", "0.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(REQUIRED_KEYS) <= set(out) and out["gpus"] == plan(CITY).summary["gpus"]
    assert set(out["kafka_bytes_retained"]) >= {"raw", "redacted", "dlq"}


def test_cli_table(capsys):
    assert main(["plan", "--cameras", "100", "--fps", "10", "--node", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "vCPU provisioned" in out and "redacted topic retained" in out and "sinks -> S3" in out


@pytest.mark.parametrize("args", [
    ["--cameras", "0", "--fps", "15"],
    ["--cameras", "10", "--fps", "15", "--size", "1280"],
    ["--cameras", "10", "--fps", "15", "--node", "tpu"],
    ["--cameras", "10", "--fps", "15", "--plates-share", "2"],
    ["--cameras", "10", "--fps", "15", "--footage", "forest"],
    ["--cameras", "ten", "--fps", "15"],
    ["--fps", "15"],
])
def test_cli_bad_arguments_exit_2_with_one_line(capsys, args):
    assert main(["plan", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("veilstream: error:") and "\n" not in err, err


def test_cli_unwritable_values_out_is_one_line(capsys, tmp_path):
    (tmp_path / "f").write_text("")
    assert main(["plan", "--cameras", "10", "--fps", "15", "--values-out", str(tmp_path / "f" / "v.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert "--values-out" in err and "\n" not in err


def test_operations_doc_sizing_is_the_plans_output(capsys):
    """docs/operations.md section 2 shows `veilstream plan`'s own output, not hand arithmetic."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    blocks = re.findall(r"<!-- veilstream (plan [^>]*?) -->\n```\n(.*?)\n```", doc, flags=re.S)
    assert {"gpu", "cpu"} == {re.search(r"--node (\w+)", cmd).group(1) for cmd, _ in blocks}
    for cmd, shown in blocks:
        assert main(cmd.split()) == 0
        assert capsys.readouterr().out.rstrip("\n") == shown, f"docs/operations.md is stale for `veilstream {cmd}`"


@pytest.mark.parametrize("node", ["gpu", "cpu"])
def test_values_out_is_the_plans_values_with_a_description_on_every_key(tmp_path, capsys, node):
    import yaml
    from test_deploy import undocumented_keys

    out = tmp_path / "v.yaml"
    assert main(["plan", "--cameras", "700", "--fps", "10", "--node", node, "--values-out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# GENERATED by `veilstream plan`") and f"--values-out {out}" in text.splitlines()[1]
    assert yaml.safe_load(text) == merge({}, to_values(plan(PlanInput(cameras=700, fps=10, node=node))))
    assert not undocumented_keys(text)
