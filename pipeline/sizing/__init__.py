"""Sizing: what N cameras cost, from per-frame costs shipped as data (``costs.json``).

:func:`plan` is pure: :class:`PlanInput` and a costs mapping in, a :class:`Plan` out. Every
number in the plan is a :class:`Line` that says how it was computed and whether what it rests
on was measured or assumed, so the human table (:func:`render_table`), the JSON (``Plan.to_dict``)
and the Helm values (:func:`to_values`) all come from the same lines. ``veilstream plan`` is a
thin wrapper (:mod:`pipeline.sizing.cli`).

Model (one camera = one H.264 stream at ``fps``; chunks of ``chunk_seconds``):

* process CPU = frames/s x (decode + mask + encode) + detected frames/s x detection, where
  detected frames follow :func:`operators.temporal.detection_schedule` (every N-th frame of a
  chunk plus its last). Both CPU costs depend on the kind of footage (``--footage``: a crowd
  has ten times the boxes of a quiet street; a snapshot camera's frame costs more per pixel than
  a 720p one), so they come from ``costs.json``'s ``footage`` table, one row per kind measured at
  its own frame size and scaled with pixels from there; the default is the costliest (crowd).
  On GPU nodes detection runs on GPUs and its host side (pre/post-processing, the waits on the
  GPU: ``detect_cpu_s_on_gpu_node``, measured on an H100) stays on the GPU pods' CPUs; one GPU
  detector actor keeps about one core busy (``detect_actor_cpus_on_gpu``), so that CPU is spread
  over as many detector actors, several sharing a GPU at a fractional ``num_gpus``.
* the process job starts ``ray.consumers`` consumer actors and EACH starts its own
  ``chunk_workers`` chunk actors and ``detector.replicas`` detector actors
  (pipeline/process/worker.py): Ray CPUs = consumers x (chunk_workers x worker_num_cpus +
  replicas x detector.num_cpus + 0.25), GPUs = consumers x replicas x num_gpus.
* placement: plans use ``ray.placement: node_local`` by default (a detector and its share of the
  chunk actors per group, packed onto one pod, so decoded frames never cross the network; a GPU
  pod holds as many groups as the shape that needs the fewest pods); ``--placement spread`` on
  GPU nodes puts only detectors on the GPU pods (they offer Ray no CPUs) and the chunk actors on
  CPU pods, at the price of decoded frames on the network.
* one partition count for every chunk topic, from a list of numbers with many divisors, so
  consumers, sinks and ingest pods each get an equal share of partitions (and of cameras).
* Kafka bytes retained per topic = write rate x retention x replication factor.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

GIB = 1024**3
TB = 10**12
PIXELS_REF = 1280 * 720
# Partition counts with many divisors: consumers, sinks and ingest pods are chosen as divisors.
PARTITION_STEPS = (6, 12, 24, 36, 48, 60, 120, 180, 240, 360, 480, 720, 840, 1080, 1260, 1680, 2520, 5040)
ZONE_KEY = "topology.kubernetes.io/zone"


FOOTAGE_KINDS = ("crowd", "street", "snapshot")
"""``--footage``: the rows of ``costs.json``'s ``footage`` table (crowd first: the default)."""


class SizingError(ValueError):
    """Invalid plan input (the CLI turns it into exit code 2)."""


def load_costs() -> dict[str, Any]:
    """The costs shipped with the package (``pipeline/sizing/costs.json``)."""
    costs: dict[str, Any] = json.loads(resources.files(__package__).joinpath("costs.json").read_text())
    return costs


@dataclass(frozen=True)
class PlanInput:
    """What is being sized. Units in the names; defaults follow the chart's config defaults."""

    cameras: int
    fps: float
    width: int = 1280
    height: int = 720
    node: str = "gpu"  # gpu: detectors on GPU worker pods; cpu: everything on CPU pods
    plates_share: float = 1.0  # share of cameras whose policy masks plates (the rest faces only)
    camera_mbps: float | None = None  # None = costs.json camera_mbit_s scaled to width x height x fps
    chunk_seconds: float = 2.0
    detect_every: int = 4
    segment_seconds: float = 60.0
    replication_factor: int = 3
    min_insync_replicas: int = 2
    raw_retention_hours: float = 6.0  # kafka.raw_retention_ms default
    redacted_retention_hours: float = 72.0  # provisioning.retention_hours.redacted default
    dlq_retention_hours: float = 336.0
    audit_retention_hours: float = 8760.0
    s3_retention_days: int = 30  # the chart's default policy: retention.redacted_days
    raw_vault_days: int = 0  # policy retention.raw_days (0 = raw footage never stored)
    zones: int = 3
    gpu_group: str = "gpu-h100"
    # node_local: decode, detection, masking and encode of a chunk on one node (only compressed
    # chunks cross); spread: GPU pods hold only detectors and decoded frames travel to them
    placement: str = "node_local"
    # the kind of footage the per-frame CPU costs were measured on (costs.json "footage")
    footage: str = FOOTAGE_KINDS[0]

    def problems(self) -> list[str]:
        out = []
        if self.footage not in FOOTAGE_KINDS:
            out.append(f"--footage: expected one of {', '.join(FOOTAGE_KINDS)}, got {self.footage!r}")
        if not isinstance(self.cameras, int) or self.cameras < 1:
            out.append(f"--cameras: expected an integer >= 1, got {self.cameras!r}")
        if not (0 < self.fps <= 120):
            out.append(f"--fps: expected a number in (0, 120], got {self.fps!r}")
        if self.width < 16 or self.height < 16 or self.width * self.height > 16777216:
            out.append(f"--size: expected WIDTHxHEIGHT, each >= 16, at most 16.8 MP, got {self.width}x{self.height}")
        if self.node not in ("gpu", "cpu"):
            out.append(f"--node: expected gpu or cpu, got {self.node!r}")
        if self.placement not in ("node_local", "spread"):
            out.append(f"--placement: expected node_local or spread, got {self.placement!r}")
        if not (0.0 <= self.plates_share <= 1.0):
            out.append(f"--plates-share: expected a number in [0, 1], got {self.plates_share!r}")
        if self.camera_mbps is not None and not (0 < self.camera_mbps <= 100):
            out.append(f"--camera-mbps: expected a number in (0, 100], got {self.camera_mbps!r}")
        if self.detect_every < 1:
            out.append(f"--detect-every: expected an integer >= 1, got {self.detect_every!r}")
        if not (1 <= self.replication_factor <= 32):
            out.append(f"--replication: expected an integer in [1, 32], got {self.replication_factor!r}")
        if not (1 <= self.min_insync_replicas <= self.replication_factor):
            out.append(f"--min-insync: expected an integer in [1, replication], got {self.min_insync_replicas!r}")
        if self.zones < 1:
            out.append(f"--zones: expected an integer >= 1, got {self.zones!r}")
        for name in ("chunk_seconds", "segment_seconds", "raw_retention_hours", "redacted_retention_hours",
                     "dlq_retention_hours", "audit_retention_hours"):
            if getattr(self, name) <= 0:
                out.append(f"{name}: expected a number > 0, got {getattr(self, name)!r}")
        if self.s3_retention_days < 1 or self.raw_vault_days < 0:
            out.append("retention days: s3 >= 1, raw vault >= 0")
        return out


@dataclass(frozen=True)
class Line:
    """One cost line: a quantity, how it was computed, and what it rests on."""

    section: str
    name: str
    value: float
    unit: str
    how: str
    basis: str = "derived"  # measured | derived | assumed | choice | input


@dataclass
class Plan:
    inputs: PlanInput
    lines: list[Line] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    ray: dict[str, Any] = field(default_factory=dict)
    pods: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, name: str, value: float, unit: str, how: str, basis: str = "derived") -> float:
        self.lines.append(Line(section, name, value, unit, how, basis))
        return value

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary, "inputs": asdict(self.inputs), "ray": self.ray,
                "lines": [asdict(ln) for ln in self.lines]}


def detected_frames(frames: int, every: int) -> int:
    """How many of a chunk's ``frames`` run detection: every ``every``-th from 0 plus the last
    (the rule of :func:`operators.temporal.detection_schedule`, counted without importing it)."""
    if frames <= 0:
        return 0
    return len(range(0, frames, every)) + (0 if (frames - 1) % every == 0 else 1)


def partitions_for(minimum: int) -> int:
    """The smallest count in PARTITION_STEPS (or multiple of 5040) that is >= ``minimum``."""
    for p in PARTITION_STEPS:
        if p >= minimum:
            return p
    return 5040 * math.ceil(minimum / 5040)


def divisor_at_least(n: int, minimum: int) -> int:
    """The smallest divisor of ``n`` that is >= ``minimum`` (``n`` itself at worst)."""
    for d in range(max(1, minimum), n + 1):
        if n % d == 0:
            return d
    return n


def _c(costs: dict[str, Any], key: str) -> float:
    return float(costs["costs"][key]["value"])


def footage_costs(costs: dict[str, Any], kind: str) -> dict[str, Any]:
    """The row of ``costs["footage"]["kinds"]`` for ``kind`` (see :data:`FOOTAGE_KINDS`)."""
    kinds: dict[str, Any] = costs["footage"]["kinds"]
    if kind not in kinds:
        raise SizingError(f"--footage: expected one of {', '.join(kinds)}, got {kind!r}")
    row: dict[str, Any] = kinds[kind]
    return row


def _basis(costs: dict[str, Any], *keys: str) -> str:
    order = ["assumed", "choice", "derived", "measured"]
    found = [costs["costs"][k]["status"] for k in keys]
    return next(s for s in order if s in found) if found else "derived"


def _gib_up(x: float, step: float = 0.5) -> float:
    return math.ceil(x / step - 1e-9) * step


@dataclass(frozen=True)
class _Load:
    """The traffic all cameras send: frames, detected frames, bytes."""

    frames_s: float
    det_s: float
    scale: float  # pixels vs 1280x720
    mbps: float  # per camera
    raw_bps: float  # bytes/s per camera
    red_bps: float
    chunk_bytes: float


@dataclass(frozen=True)
class _Compute:
    """CPU and GPU the load needs, before it is cut into actors and pods."""

    chunk_cpu: float  # vCPU of the chunk actors (decode, mask, encode)
    det_vcpu: float  # vCPU of the detector actors (on GPU pods: pre/post-processing only)
    gpu_need: float  # GPUs of detection time (0 on CPU plans)
    gpus: int  # GPUs before the actors are placed (0 on CPU plans)


@dataclass(frozen=True)
class _Partitions:
    partitions: int
    consumers: int
    ingest_min: int
    sink_min: int
    sink_cams_max: int
    seg_bytes: float


@dataclass(frozen=True)
class _Actors:
    """The process job's actors per consumer and the Ray pods that hold them."""

    placement: str
    chunk_workers: int
    det_replicas: int
    num_gpus: float
    det_num_cpus: int
    det_threads: int
    gpus: int
    cpu_pods: int
    per_gpu: int = 1


_WORKER_CPUS = 1.0
"""``ray.worker_num_cpus``: Ray CPUs per chunk actor."""


def _plan_load(p: Plan, costs: dict[str, Any]) -> _Load:
    inp, ref = p.inputs, costs["reference"]
    n, fps = inp.cameras, inp.fps
    scale = inp.width * inp.height / PIXELS_REF
    frames_s = p.add("load", "frames/s", n * fps, "frames/s", f"{n} cameras x {fps:g} fps", "input")
    fpc = max(1, round(fps * inp.chunk_seconds))
    det = detected_frames(fpc, inp.detect_every)
    det_share = det / fpc
    det_s = p.add("load", "detected frames/s", frames_s * det_share, "frames/s",
                  f"{det} of every {fpc} frames per {inp.chunk_seconds:g} s chunk (detect_every {inp.detect_every}: "
                  "every N-th plus the last)")
    p.add("load", "pixel scale vs 1280x720", scale, "x", f"{inp.width}x{inp.height} / 1280x720: per-frame costs and "
          "bitrate scale with it", "assumed")
    if inp.camera_mbps is not None:
        mbps = p.add("load", "camera bitrate", inp.camera_mbps, "Mbit/s", "--camera-mbps", "input")
    else:
        mbps = p.add("load", "camera bitrate", _c(costs, "camera_mbit_s") * scale * fps / ref["fps"], "Mbit/s",
                     f"{_c(costs, 'camera_mbit_s'):g} Mbit/s at 720p@{ref['fps']} x pixels x fps", "assumed")
    raw_bps = mbps * 1e6 / 8  # bytes/s per camera
    return _Load(frames_s=frames_s, det_s=det_s, scale=scale, mbps=mbps, raw_bps=raw_bps,
                 red_bps=raw_bps * _c(costs, "redacted_bitrate_ratio"), chunk_bytes=raw_bps * inp.chunk_seconds)


def _plan_compute(p: Plan, costs: dict[str, Any], ld: _Load) -> _Compute:
    inp, util, scale, det_s = p.inputs, _c(costs, "target_utilization"), ld.scale, ld.det_s
    fk, when = footage_costs(costs, inp.footage), costs["footage"]["measured"]["date"]
    kscale = inp.width * inp.height / (fk["width"] * fk["height"])
    p.add("cost", f"pixel scale vs the {inp.footage} footage", kscale, "x",
          f"{inp.width}x{inp.height} / {fk['width']}x{fk['height']}, the size --footage {inp.footage} was measured "
          "at (costs.json footage): its per-frame CPU costs scale with it", "assumed" if abs(kscale - 1.0) > 1e-9
          else "input")
    proc = fk["process_cpu_s_per_frame"] * kscale
    p.add("cost", "decode + mask + encode", proc, "CPU-s/frame",
          f"{fk['process_cpu_s_per_frame']:g} on {inp.footage} {fk['width']}x{fk['height']} x {kscale:.3g} "
          f"(stage_cost.py --source {fk['source']}, {when})", "measured")
    det_faces = fk["detect_cpu_s_faces"] * kscale + _c(costs, "detect_cpu_s_batching") * scale
    det_plates = fk["detect_cpu_s_plates"] * kscale
    det_cpu = det_faces + inp.plates_share * det_plates
    chunk_cpu = p.add("compute", "chunk actors (decode, mask, encode)", ld.frames_s * proc / util, "vCPU",
                      f"{ld.frames_s:,.0f} frames/s x {proc:.4f} CPU-s / {util:g} utilisation", "measured")
    if inp.node != "gpu":
        p.add("cost", "detection on CPU", det_cpu, "CPU-s/detected frame",
              f"faces {det_faces:.4f} (incl. batching {_c(costs, 'detect_cpu_s_batching'):g} x {scale:.3g}) + "
              f"{inp.plates_share:g} x plates {det_plates:.4f} on {inp.footage} (pass_cost.py, {when})", "measured")
        det_vcpu = p.add("compute", "detector actors (CPU)", det_s * det_cpu / util, "vCPU",
                         f"{det_s:,.0f} detected frames/s x {det_cpu:.4f} CPU-s / {util:g}", "measured")
        return _Compute(chunk_cpu=chunk_cpu, det_vcpu=det_vcpu, gpu_need=0.0, gpus=0)
    gpu_s = (_c(costs, "detect_gpu_s_faces") + inp.plates_share * _c(costs, "detect_gpu_s_plates")) * scale
    p.add("cost", "detection on GPU", gpu_s, "GPU-s/detected frame",
          f"faces {_c(costs, 'detect_gpu_s_faces'):g} + {inp.plates_share:g} x plates "
          f"{_c(costs, 'detect_gpu_s_plates'):g} (design target, NOT measured)", "assumed")
    det_cpu_node = _c(costs, "detect_cpu_s_on_gpu_node") * scale
    cpu_basis = _basis(costs, "detect_cpu_s_on_gpu_node")
    p.add("cost", "detection pre/post-processing on the GPU pods' CPUs", det_cpu_node, "CPU-s/detected frame",
          f"{_c(costs, 'detect_cpu_s_on_gpu_node'):g} x {scale:.3g}: resize, NMS, text post-processing and the "
          "host's waits on the GPU (gpu_bench.py on an H100, 2026-12-05, batch 32 of 720p)"
          if cpu_basis == "measured" else "resize, NMS, text post-processing (NOT measured)", cpu_basis)
    gpu_need = p.add("compute", "GPU time for detection", det_s * gpu_s / util, "GPUs",
                     f"{det_s:,.0f} detected frames/s x {gpu_s:.6f} GPU-s / {util:g}", "assumed")
    det_vcpu = p.add("compute", "detector actors' CPU (on GPU pods)", det_s * det_cpu_node / util, "vCPU",
                     f"{det_s:,.0f} x {det_cpu_node:g} CPU-s / {util:g}", cpu_basis)
    gpus = max(1, math.ceil(gpu_need - 1e-9), math.ceil(det_vcpu / costs["pods"]["gpu"]["vcpu"] - 1e-9))
    return _Compute(chunk_cpu=chunk_cpu, det_vcpu=det_vcpu, gpu_need=gpu_need, gpus=gpus)


def _plan_partitions(p: Plan, costs: dict[str, Any], ld: _Load) -> _Partitions:
    inp, n, util = p.inputs, p.inputs.cameras, _c(costs, "target_utilization")
    topic_mb_s = n * ld.raw_bps / 1e6
    part_mb = _c(costs, "kafka_partition_mb_s")
    cons_min = math.ceil(n / _c(costs, "cameras_per_consumer"))
    ingest_min = math.ceil(n / _c(costs, "cameras_per_ingest_pod"))
    seg_bytes = ld.red_bps * inp.segment_seconds
    sink_cams_max = max(1, min(1024, int(_c(costs, "sink_segments_per_s") * inp.segment_seconds * util)))
    sink_min = math.ceil(n / sink_cams_max)
    need = max(math.ceil(topic_mb_s / part_mb), cons_min, ingest_min, sink_min, inp.zones)
    partitions = partitions_for(need)
    p.add("kafka", "partitions per chunk topic", partitions, "partitions",
          f">= max(raw {topic_mb_s:,.0f} MB/s / {part_mb:g} MB/s = {math.ceil(topic_mb_s / part_mb)}, consumers "
          f"{cons_min}, ingest pods {ingest_min}, sinks {sink_min}), rounded up to a count with many divisors",
          _basis(costs, "kafka_partition_mb_s"))
    consumers = divisor_at_least(partitions, cons_min)
    p.add("compute", "ray.consumers (consumer actors)", consumers, "actors",
          f"{n} cameras / {_c(costs, 'cameras_per_consumer'):g} per consumer = {cons_min}, raised to a divisor of "
          f"{partitions} partitions", "assumed")
    return _Partitions(partitions=partitions, consumers=consumers, ingest_min=ingest_min, sink_min=sink_min,
                       sink_cams_max=sink_cams_max, seg_bytes=seg_bytes)


def _actors_gpu_node_local(p: Plan, costs: dict[str, Any], cm: _Compute, consumers: int) -> _Actors:
    # ray.placement node_local on GPU pods: each group (STRICT_PACK) is a detector and the chunk
    # actors that decode, mask and encode the frames it detects; only compressed chunks cross
    # the network. Decode, mask and encode run on the pod's CPUs, so a pod carries the cameras
    # its vCPU can decode, not those its GPU could detect: the GPU-busy line shows how much of
    # each GPU that leaves idle (hardware decode/encode on the GPU, NVDEC/NVENC, is what would
    # fill it). A GPU detector actor keeps only about one core busy (detect_actor_cpus_on_gpu:
    # one batch at a time, host-bound), so when a pod's detection needs more CPU than that the
    # pod holds several groups, each detector at num_gpus 1/k, instead of one detector with
    # threads it cannot use.
    det_vcpu, chunk_cpu, gpu_need = cm.det_vcpu, cm.chunk_cpu, cm.gpu_need
    gpod, actor_cpus = costs["pods"]["gpu"], _c(costs, "detect_actor_cpus_on_gpu")
    pod = int(gpod["vcpu"]) - 1  # one CPU of each pod for the consumer actors

    def pods_for(d: int, c: int) -> int:  # k groups of (d detector CPUs + c chunk actors) per pod
        k = pod // (d + c)
        return max(math.ceil(gpu_need - 1e-9), math.ceil(det_vcpu / (k * min(d, actor_cpus)) - 1e-9),
                   math.ceil(chunk_cpu / (k * c * _WORKER_CPUS) - 1e-9))

    # the group shape that needs the fewest pods; on a tie, fewer and larger groups (larger batches)
    pods_min, _, det_num_cpus, per_group = min(
        (pods_for(d, c), pod // (d + c), d, c) for d in range(1, pod) for c in range(1, pod - d + 1))
    k = pod // (det_num_cpus + per_group)
    det_pod_used = k * min(det_num_cpus, actor_cpus)
    pods_per_consumer = max(1, math.ceil(pods_min / consumers))
    det_replicas = pods_per_consumer * k
    chunk_workers = det_replicas * per_group
    gpus = consumers * pods_per_consumer
    num_gpus = 1.0 if k == 1 else math.floor(10000 / k) / 10000
    p.add("compute", "node-local GPU pods (GPU + its chunk actors on one pod)", gpus, "pods",
          f"max(GPU time {gpu_need:.2f}, detector CPU {det_vcpu:,.0f} / {det_pod_used:g}, chunk vCPU "
          f"{chunk_cpu:,.0f} / {k * per_group}) = {pods_min}, raised to {consumers} consumers x {pods_per_consumer}; "
          f"each 1 GPU + {k} x ({det_num_cpus} detector CPU + {per_group} chunk actors) of {gpod['vcpu']} vCPU", "choice")
    p.add("compute", "node-local groups per GPU pod", k, "groups",
          f"the group shape that needs the fewest pods, each GPU detector actor using at most the {actor_cpus:g} CPU "
          f"one keeps busy: {k} x ({det_num_cpus} + {per_group}) of {pod} CPUs, {k} detector(s) at num_gpus "
          f"{num_gpus:g}" + (f" (GPU memory of {k} detectors on one GPU NOT measured)" if k > 1 else ""),
          _basis(costs, "detect_actor_cpus_on_gpu") if k > 1 else "derived")
    p.add("compute", "GPUs", gpus, "GPUs", "one per node-local pod", "assumed")
    p.add("compute", "GPU busy share", 100.0 * gpu_need / gpus, "%",
          f"GPU time {gpu_need:.2f} / {gpus} GPUs: the host side of detection and CPU decode/mask/encode bound the "
          "cameras per pod; `--placement spread` needs fewer GPUs but ships decoded frames between nodes", "assumed")
    p.add("compute", "pipeline.ray.detector.replicas (per consumer)", det_replicas, "actors",
          f"{pods_per_consumer} GPU pods x {k} node-local group(s) each")
    p.add("compute", "pipeline.ray.chunk_workers (per consumer)", chunk_workers, "actors",
          f"{det_replicas} groups x {per_group}")
    p.add("compute", "Ray GPU worker pods", gpus, "pods",
          f"1 GPU + {gpod['vcpu']} vCPU + {gpod['memory_gib']} GiB each, all of its vCPU offered "
          "to Ray (the groups' chunk actors run there)", "choice")
    return _Actors(placement="node_local", chunk_workers=chunk_workers, det_replicas=det_replicas, num_gpus=num_gpus,
                   det_num_cpus=det_num_cpus, det_threads=det_num_cpus, gpus=gpus, cpu_pods=0, per_gpu=k)


def _actors_gpu_spread(p: Plan, costs: dict[str, Any], cm: _Compute, consumers: int) -> _Actors:
    # ray.placement spread: chunk actors on the CPU pods, detectors on the GPU pods; decoded
    # frames travel to the GPU pods (the network line below).
    pods, cons_cpu, wcpu = costs["pods"], _c(costs, "consumer_actor_cpus"), _WORKER_CPUS
    chunk_workers = max(1, math.ceil(cm.chunk_cpu / consumers / wcpu - 1e-9))
    p.add("compute", "pipeline.ray.chunk_workers (per consumer)", chunk_workers, "actors",
          f"{cm.chunk_cpu:,.0f} vCPU / {consumers} consumers / {wcpu:g} CPU each")
    # every consumer starts its own detectors (pipeline/process/worker.py): D = consumers x
    # replicas detectors, k of them share a GPU at num_gpus 1/k; k rounds down, so the GPUs
    # the actors take are never fewer than needed
    # A GPU detector actor keeps only about one core busy (detect_actor_cpus_on_gpu), so the
    # detector CPU is spread over that many actors, at most as many per GPU as its pod has cores.
    actor_cpus = _c(costs, "detect_actor_cpus_on_gpu")
    actors_min = math.ceil(cm.det_vcpu / actor_cpus - 1e-9)
    det_replicas = max(1, math.ceil(cm.gpus / consumers), math.ceil(actors_min / consumers))
    detectors = consumers * det_replicas
    per_gpu = max(1, min(detectors // cm.gpus, int(pods["gpu"]["vcpu"] // actor_cpus)))
    num_gpus = 1.0 if per_gpu == 1 else math.floor(10000 / per_gpu) / 10000
    gpus = math.ceil(detectors / per_gpu)
    # GPU pods offer Ray no CPUs (rayStartParams num-cpus 0) and detectors reserve none: a
    # chunk actor can then never take a GPU pod's CPUs and leave a detector unplaceable. The
    # detectors' threads share the pod's vCPU instead.
    det_threads = max(1, pods["gpu"]["vcpu"] // per_gpu)
    p.add("compute", "GPUs", gpus, "GPUs",
          f"max(GPU time {cm.gpu_need:.2f}, detector CPU {cm.det_vcpu:,.0f} / {pods['gpu']['vcpu']} vCPU per GPU pod), "
          f"then {detectors} detector actors ({consumers} consumers x {det_replicas}; at least detector CPU / "
          f"{actor_cpus:g} CPU one actor keeps busy = {actors_min}), {per_gpu} per GPU at num_gpus {num_gpus:g}"
          + (f" (GPU memory of {per_gpu} detectors on one GPU NOT measured)" if per_gpu > 1 else ""), "assumed")
    cpu_group_cpus = consumers * (chunk_workers * wcpu + cons_cpu)
    cpu_pods = math.ceil(cpu_group_cpus / pods["cpu"]["vcpu"] - 1e-9)
    p.add("compute", "Ray CPU worker pods", cpu_pods, "pods",
          f"placement spread: {consumers} consumers x ({chunk_workers} chunk x {wcpu:g} + {cons_cpu:g}) = "
          f"{cpu_group_cpus:,.0f} Ray CPUs / {pods['cpu']['vcpu']} per pod", "choice")
    p.add("compute", "Ray GPU worker pods", gpus, "pods",
          f"1 GPU + {pods['gpu']['vcpu']} vCPU + {pods['gpu']['memory_gib']} GiB each "
          f"({per_gpu} detectors x {det_threads} threads each; Ray CPUs 0: only detectors land there)", "choice")
    return _Actors(placement="spread", chunk_workers=chunk_workers, det_replicas=det_replicas, num_gpus=num_gpus,
                   det_num_cpus=0, det_threads=det_threads, gpus=gpus, cpu_pods=cpu_pods, per_gpu=per_gpu)


def _actors_cpu_node_local(p: Plan, costs: dict[str, Any], cm: _Compute, consumers: int) -> _Actors:
    # ray.placement node_local: each detector and its share of the chunk actors form one
    # STRICT_PACK placement group on one node. One group per pod, sized to the pod less one CPU
    # (room for the consumer actors, 0.25 each), split between detector threads and chunk
    # actors in the ratio of their needs.
    cpu_pod, cons_cpu, det_vcpu, chunk_cpu = costs["pods"]["cpu"], _c(costs, "consumer_actor_cpus"), cm.det_vcpu, cm.chunk_cpu
    group = cpu_pod["vcpu"] - 1
    det_num_cpus = min(group - 1, max(1, round(group * det_vcpu / (det_vcpu + chunk_cpu))))
    per_group = group - det_num_cpus
    groups_min = max(math.ceil(det_vcpu / det_num_cpus - 1e-9),
                     math.ceil(chunk_cpu / (per_group * _WORKER_CPUS) - 1e-9))
    det_replicas = max(1, math.ceil(groups_min / consumers))
    chunk_workers = det_replicas * per_group
    p.add("compute", "node-local groups (detector + its chunk actors on one pod)", consumers * det_replicas,
          "groups", f"max({det_vcpu:,.0f} detector vCPU / {det_num_cpus}, {chunk_cpu:,.0f} chunk vCPU / {per_group}) "
          f"= {groups_min}, raised to {consumers} consumers x {det_replicas}; each {det_num_cpus} detector "
          f"threads + {per_group} chunk actors = {group} of a pod's {cpu_pod['vcpu']} CPUs")
    p.add("compute", "pipeline.ray.detector.replicas (per consumer)", det_replicas, "actors",
          "one node-local group each")
    p.add("compute", "pipeline.ray.chunk_workers (per consumer)", chunk_workers, "actors",
          f"{det_replicas} groups x {per_group}")
    cpu_pods = consumers * det_replicas
    p.add("compute", "Ray CPU worker pods", cpu_pods, "pods",
          f"placement node_local: one group per pod; the spare CPU of each pod holds the {consumers} consumer "
          f"actors ({cons_cpu:g} each)", "choice")
    return _Actors(placement="node_local", chunk_workers=chunk_workers, det_replicas=det_replicas, num_gpus=0.0,
                   det_num_cpus=det_num_cpus, det_threads=det_num_cpus, gpus=0, cpu_pods=cpu_pods)


def _plan_actors(p: Plan, costs: dict[str, Any], cm: _Compute, pt: _Partitions) -> _Actors:
    """Actors per consumer and Ray pods for the placement (see the module docstring), and ``p.ray``."""
    inp, consumers, cons_cpu = p.inputs, pt.consumers, _c(costs, "consumer_actor_cpus")
    if inp.node == "gpu" and inp.placement == "node_local":
        a = _actors_gpu_node_local(p, costs, cm, consumers)
    elif inp.node == "gpu":
        a = _actors_gpu_spread(p, costs, cm, consumers)
    else:
        a = _actors_cpu_node_local(p, costs, cm, consumers)
    p.ray = {"consumers": consumers, "chunk_workers": a.chunk_workers, "worker_num_cpus": _WORKER_CPUS,
             "placement": a.placement,
             "detector": {"replicas": a.det_replicas, "num_gpus": a.num_gpus, "num_cpus": a.det_num_cpus,
                          "threads": a.det_threads, "batch_size": 64 if inp.node == "gpu" else 32},
             "cameras_per_consumer": inp.cameras / consumers,
             "gpus_used_by_actors": round(consumers * a.det_replicas * a.num_gpus, 4),
             "cpus_used_by_actors": round(consumers * (a.chunk_workers * _WORKER_CPUS + cons_cpu
                                                       + a.det_replicas * a.det_num_cpus), 2)}
    return a


def _plan_ingest_sink(p: Plan, costs: dict[str, Any], ld: _Load, pt: _Partitions) -> dict[str, Any]:
    """Ingest and sink pods (``p.pods``' ``ingest`` and ``sink`` entries)."""
    inp, n, pods, util, partitions = p.inputs, p.inputs.cameras, costs["pods"], _c(costs, "target_utilization"), pt.partitions
    ingest = divisor_at_least(partitions, pt.ingest_min)
    cams_ingest = math.ceil(n / ingest)
    ingest_cpu = _c(costs, "ingest_cpu_s_per_camera_s") * cams_ingest * ld.scale
    ingest_mem = _gib_up(_c(costs, "ingest_base_memory_gib") + cams_ingest * ld.chunk_bytes * 4 / GIB)
    p.add("ingest", "ingest replicas", ingest, "pods",
          f"{n} cameras / {_c(costs, 'cameras_per_ingest_pod'):g} per pod, raised to a divisor of {partitions} "
          "(cameras-topic partitions)", "assumed")
    p.add("ingest", "ingest vCPU per pod", ingest_cpu, "vCPU",
          f"{cams_ingest} cameras x {_c(costs, 'ingest_cpu_s_per_camera_s'):g}", "assumed")
    p.add("ingest", "ingest memory per pod", ingest_mem, "GiB",
          f"{_c(costs, 'ingest_base_memory_gib'):g} GiB + {cams_ingest} cameras x 4 chunks in flight x "
          f"{ld.chunk_bytes / 1e6:.2f} MB", "assumed")
    seg_bytes = pt.seg_bytes
    sinks = divisor_at_least(partitions, pt.sink_min)
    cams_sink = math.ceil(n / sinks)
    buffered = min(_c(costs, "sink_max_buffered_bytes"), cams_sink * seg_bytes)
    sink_mem = _gib_up(_c(costs, "sink_base_memory_gib") + (buffered + seg_bytes * _c(costs, "sink_segment_copies"))
                       / GIB)
    sink_spool = math.ceil(max(0.0, cams_sink * seg_bytes * 1.25 - buffered) / GIB) + 1
    sink_cpu = max(float(pods["sink"]["vcpu_min"]), ld.frames_s * _c(costs, "sink_cpu_s_per_frame") / util / sinks)
    p.add("sink", "sink replicas", sinks, "pods",
          f"{n} cameras / {pt.sink_cams_max} per sink ({_c(costs, 'sink_segments_per_s'):g} segments/s x "
          f"{inp.segment_seconds:g} s x {util:g}; max_open_segments 1024) = {pt.sink_min}, raised to a divisor of "
          f"{partitions}", "assumed")
    p.add("sink", "sink memory per pod", sink_mem, "GiB",
          f"{_c(costs, 'sink_base_memory_gib'):g} GiB + buffered chunks {buffered / 2**20:,.0f} MiB "
          f"(sink.max_buffered_bytes) + {_c(costs, 'sink_segment_copies'):g} x {seg_bytes / 1e6:.1f} MB segment "
          "being stored", "assumed")
    p.add("sink", "sink spool disk per pod", sink_spool, "GiB",
          f"{cams_sink} cameras x {seg_bytes / 1e6:.1f} MB open segment x 1.25 (a window and the next one's first "
          "chunks) beyond the buffered bytes, + 1 GiB", "derived")
    p.add("sink", "sink vCPU per pod", sink_cpu, "vCPU",
          f"{ld.frames_s:,.0f} frames/s x {_c(costs, 'sink_cpu_s_per_frame'):g} CPU-s / {util:g} / {sinks}", "assumed")
    ingest_lim = max(float(pods["ingest"]["vcpu_limit"]), math.ceil(ingest_cpu * 2))
    return {"ingest": {"replicas": ingest, "cpu": math.ceil(ingest_cpu), "cpu_limit": ingest_lim,
                       "memory_gib": ingest_mem},
            "sink": {"replicas": sinks, "cpu": math.ceil(sink_cpu), "memory_gib": sink_mem,
                     "spool_gib": sink_spool, "max_buffered_bytes": _c(costs, "sink_max_buffered_bytes")}}


def _plan_vcpu(p: Plan, costs: dict[str, Any], a: _Actors, ingest: dict[str, Any], sink: dict[str, Any]) -> int:
    pods, gpu_mode = costs["pods"], p.inputs.node == "gpu"
    cpu_pods, gpu_pods, cpu_vcpu = a.cpu_pods, a.gpus, pods["cpu"]["vcpu"]
    ray_vcpu = cpu_pods * cpu_vcpu + gpu_pods * (pods["gpu"]["vcpu"] if gpu_mode else 0)
    total: int = ray_vcpu + ingest["replicas"] * ingest["cpu"] + sink["replicas"] * sink["cpu"]
    p.add("compute", "vCPU provisioned", total, "vCPU",
          f"Ray {cpu_pods} x {cpu_vcpu}" + (f" + {gpu_pods} x {pods['gpu']['vcpu']}" if gpu_mode else "")
          + f" + ingest {ingest['replicas']} x {ingest['cpu']} + sinks {sink['replicas']} x {sink['cpu']}")
    return total


def _plan_kafka_bytes(p: Plan, costs: dict[str, Any], ld: _Load) -> dict[str, float]:
    inp, n, raw_bps, red_bps = p.inputs, p.inputs.cameras, ld.raw_bps, ld.red_bps
    rf = inp.replication_factor
    dlq_share = _c(costs, "dlq_share")
    segs_s = n / inp.segment_seconds
    retained = {
        "raw": n * raw_bps * inp.raw_retention_hours * 3600 * rf,
        "redacted": n * red_bps * inp.redacted_retention_hours * 3600 * rf,
        "dlq": n * raw_bps * dlq_share * inp.dlq_retention_hours * 3600 * rf,
        "audit": segs_s * _c(costs, "audit_bytes_per_segment") * inp.audit_retention_hours * 3600 * rf,
    }
    retained["total"] = sum(retained.values())
    p.add("kafka", "raw topic retained", retained["raw"] / TB, "TB",
          f"{n} x {raw_bps / 1e6:.3f} MB/s x {inp.raw_retention_hours:g} h x RF {rf}")
    p.add("kafka", "redacted topic retained", retained["redacted"] / TB, "TB",
          f"{n} x {red_bps / 1e6:.3f} MB/s x {inp.redacted_retention_hours:g} h x RF {rf}")
    p.add("kafka", "dlq topic retained (unredacted chunks)", retained["dlq"] / TB, "TB",
          f"{dlq_share:g} of raw x {inp.dlq_retention_hours:g} h x RF {rf}", "assumed")
    p.add("kafka", "dlq worst case per fully dead-lettered camera", raw_bps * inp.dlq_retention_hours * 3600 * rf / TB,
          "TB", f"{raw_bps / 1e6:.3f} MB/s x {inp.dlq_retention_hours:g} h x RF {rf}")
    p.add("kafka", "audit topic retained", retained["audit"] / TB, "TB",
          f"{segs_s:,.1f} segments/s x {_c(costs, 'audit_bytes_per_segment'):g} B x "
          f"{inp.audit_retention_hours:g} h x RF {rf}", "assumed")
    p.add("kafka", "Kafka disk, all topics", retained["total"] / TB, "TB", "sum, replicas included")
    return retained


def _plan_s3(p: Plan, costs: dict[str, Any], ld: _Load) -> tuple[float, float, float]:
    """S3 bytes per day of segments + manifests, of the raw vault, and at retention."""
    inp, n = p.inputs, p.inputs.cameras
    segs_s = n / inp.segment_seconds
    s3_day = n * ld.red_bps * 86400 + segs_s * 86400 * _c(costs, "manifest_bytes_per_segment")
    vault_day = n * ld.raw_bps * 86400 if inp.raw_vault_days > 0 else 0.0
    s3_ret = s3_day * inp.s3_retention_days + vault_day * inp.raw_vault_days
    p.add("s3", "S3 bytes per day (segments + manifests)", s3_day / TB, "TB/day",
          f"{n} x {ld.red_bps / 1e6:.3f} MB/s x 86,400 s + one manifest per camera-segment")
    if vault_day:
        p.add("s3", "raw vault bytes per day", vault_day / TB, "TB/day", f"{n} x {ld.raw_bps / 1e6:.3f} MB/s x 86,400 s")
    p.add("s3", "S3 bytes at retention", s3_ret / TB, "TB",
          f"{s3_day / TB:,.1f} TB/day x {inp.s3_retention_days} days (object lock: cannot be deleted earlier)"
          + (f" + vault x {inp.raw_vault_days} days" if vault_day else "") + "; before the store's own redundancy")
    return s3_day, vault_day, s3_ret


def _plan_network(p: Plan, ld: _Load, placement: str, s3_day: float) -> dict[str, float]:
    inp, n, raw_bps, red_bps, rf = p.inputs, p.inputs.cameras, ld.raw_bps, ld.red_bps, p.inputs.replication_factor
    gbit = 8 / 1e9
    frame_bytes = inp.width * inp.height * 3
    cross = 1.0 if placement == "spread" else 0.0  # node_local keeps decoded frames on their node
    net = {
        "cameras_to_ingest": n * raw_bps * gbit,
        "kafka_produce": n * (raw_bps + red_bps) * gbit,
        "kafka_consume": n * (raw_bps + red_bps) * gbit,
        "kafka_replication": n * (raw_bps + red_bps) * (rf - 1) * gbit,
        "ray_frames_to_detectors": ld.det_s * frame_bytes * cross * gbit,
        "ray_chunks_between_nodes": n * (raw_bps + red_bps) * gbit,
        "sink_to_s3": s3_day / 86400 * gbit,
    }
    net["between_nodes"] = (net["kafka_produce"] + net["kafka_consume"] + net["kafka_replication"]
                            + net["ray_frames_to_detectors"] + net["ray_chunks_between_nodes"] + net["sink_to_s3"])
    p.add("network", "cameras -> ingest", net["cameras_to_ingest"], "Gbit/s", f"{n} x {ld.mbps:g} Mbit/s")
    p.add("network", "-> Kafka (raw + redacted produce)", net["kafka_produce"], "Gbit/s", "ingest + process writes")
    p.add("network", "Kafka -> consumers (process, sink)", net["kafka_consume"], "Gbit/s", "raw read by process, "
          "redacted by sinks")
    p.add("network", "Kafka replication between brokers", net["kafka_replication"], "Gbit/s",
          f"(RF {rf} - 1) x writes; crosses zones when brokers are spread")
    p.add("network", "Ray: detected frames -> detector actors", net["ray_frames_to_detectors"], "Gbit/s",
          f"{ld.det_s:,.0f} frames/s x {frame_bytes / 1e6:.2f} MB raw BGR"
          + (" (all to the GPU pods: placement spread)" if cross else ": none, placement node_local keeps them "
             "on the node that decodes them"))
    p.add("network", "Ray: chunks consumer <-> chunk actors", net["ray_chunks_between_nodes"], "Gbit/s",
          "raw in, redacted back, when on another pod (upper bound)")
    p.add("network", "sinks -> S3", net["sink_to_s3"], "Gbit/s", "segments + manifests")
    p.add("network", "between nodes, total", net["between_nodes"], "Gbit/s", "sum of the lines above but cameras")
    return net


def plan(inp: PlanInput, costs: dict[str, Any] | None = None) -> Plan:
    """Size ``inp`` from ``costs`` (default: the shipped costs.json).

    The sections below add their lines to the plan in the order the table shows them: load,
    compute (CPU/GPU, partitions and consumers, actors and Ray pods), ingest and sink, totals,
    Kafka bytes, S3, network.

    Raises:
        SizingError: every problem of ``inp``, one per line.
    """
    bad = inp.problems()
    if bad:
        raise SizingError("; ".join(bad))
    costs = costs if costs is not None else load_costs()
    p = Plan(inp)
    gpu_mode = inp.node == "gpu"
    ld = _plan_load(p, costs)
    cm = _plan_compute(p, costs, ld)
    pt = _plan_partitions(p, costs, ld)
    a = _plan_actors(p, costs, cm, pt)
    io_pods = _plan_ingest_sink(p, costs, ld, pt)
    total_vcpu = _plan_vcpu(p, costs, a, io_pods["ingest"], io_pods["sink"])
    retained = _plan_kafka_bytes(p, costs, ld)
    s3_day, vault_day, s3_ret = _plan_s3(p, costs, ld)
    net = _plan_network(p, ld, a.placement, s3_day)
    pods = costs["pods"]
    p.pods = {"cpu": {"replicas": a.cpu_pods, **pods["cpu"]},
              "gpu": ({"replicas": a.gpus, **pods["gpu"]} if gpu_mode else None), **io_pods}
    ingest, sink = io_pods["ingest"], io_pods["sink"]
    p.summary = {
        "cameras": inp.cameras, "fps": inp.fps, "size": f"{inp.width}x{inp.height}", "node": inp.node,
        "footage": inp.footage,
        "placement": a.placement, "vcpu": total_vcpu, "gpus": a.gpus,
        "ray_worker_replicas": {"cpu": a.cpu_pods, **({inp.gpu_group: a.gpus} if gpu_mode else {})},
        "ingest_replicas": ingest["replicas"], "ingest_memory_gib": ingest["memory_gib"],
        "sink_replicas": sink["replicas"], "sink_memory_gib": sink["memory_gib"], "sink_spool_gib": sink["spool_gib"],
        "kafka_partitions": pt.partitions,
        "kafka_bytes_retained": {k: int(v) for k, v in retained.items()},
        "kafka_replication_factor": inp.replication_factor,
        "s3_bytes_per_day": int(s3_day + vault_day),
        "s3_bytes_at_retention": int(s3_ret),
        "network_gbps": {k: round(v, 2) for k, v in net.items()},
        "assumed": sorted({k for k, c in costs["costs"].items() if c["status"] == "assumed"}),
    }
    return p


# ================================================================ Helm values


def _zone_spread(labels: dict[str, str], skew: int = 1) -> list[dict[str, Any]]:
    return [{"maxSkew": skew, "topologyKey": ZONE_KEY, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": labels}}]


def _q(gib: float) -> str:
    """A memory quantity the chart can read: integer Mi (the chart rejects fractional Gi)."""
    return f"{int(round(gib * 1024))}Mi" if gib != int(gib) else f"{int(gib)}Gi"


def to_values(pl: Plan) -> dict[str, Any]:
    """Chart values that provision what ``pl`` computed (worker groups x resources, consumers,
    actors, sinks, ingest, KEDA bounds, partitions, zone spreading, PriorityClasses)."""
    inp, pods, r = pl.inputs, pl.pods, pl.ray
    crit, batch = "veilstream-critical", "veilstream-batch"
    cpu = pods["cpu"]
    groups: dict[str, Any] = {
        "cpu": {"replicas": cpu["replicas"], "minReplicas": cpu["replicas"], "maxReplicas": cpu["replicas"],
                "gpu": 0,
                "resources": {"requests": {"cpu": str(cpu["vcpu"]), "memory": _q(cpu["memory_gib"])},
                              "limits": {"cpu": str(cpu["vcpu"]), "memory": _q(cpu["memory_gib"])}},
                "spillSizeGi": 20,
                "topologySpreadConstraints": _zone_spread({"veilstream.dev/ray-group": "cpu"}),
                "priorityClassName": batch},
    }
    det: dict[str, Any] = {"replicas": r["detector"]["replicas"], "num_cpus": r["detector"]["num_cpus"],
                           "num_gpus": r["detector"]["num_gpus"], "batch_size": r["detector"]["batch_size"],
                           "threads": r["detector"]["threads"]}
    process: dict[str, Any] = {}
    if inp.node == "gpu":
        g = pods["gpu"]
        groups[inp.gpu_group] = {
            "replicas": g["replicas"], "minReplicas": g["replicas"], "maxReplicas": g["replicas"], "gpu": g["gpus"],
            "resources": {"requests": {"cpu": str(g["vcpu"]), "memory": _q(g["memory_gib"])},
                          "limits": {"cpu": str(g["vcpu"]), "memory": _q(g["memory_gib"])}},
            "rayStartParams": {"num-cpus": "0" if r["placement"] == "spread" else str(g["vcpu"])},
            "spillSizeGi": 20,
            "topologySpreadConstraints": _zone_spread({"veilstream.dev/ray-group": inp.gpu_group}),
            "priorityClassName": batch}
        det["providers"] = ["CUDAExecutionProvider"]
        process = {"text_max_side": 1280}
    else:
        groups[inp.gpu_group] = None  # a site file's GPU group is dropped: nothing runs there
    values: dict[str, Any] = {
        # the sinks' spool (sink.spool_dir: a private directory under /tmp) lives in the /tmp emptyDir
        "tmpSizeLimit": f"{max(1, pods['sink']['spool_gib'])}Gi",
        "priorityClasses": {"create": True, "values": {crit: 1000000, batch: 100000}},
        "ingest": {"replicas": pods["ingest"]["replicas"],
                   "resources": {"requests": {"cpu": str(pods["ingest"]["cpu"]),
                                              "memory": _q(pods["ingest"]["memory_gib"])},
                                 "limits": {"cpu": str(int(pods["ingest"]["cpu_limit"])),
                                            "memory": _q(pods["ingest"]["memory_gib"] * 2),
                                            "ephemeral-storage": "2Gi"}},
                   "topologySpreadConstraints": _zone_spread({"app.kubernetes.io/component": "ingest"}),
                   "priorityClassName": crit},
        "process": {"replicas": 1, "priorityClassName": crit},
        "sink": {"replicas": pods["sink"]["replicas"],
                 "resources": {"requests": {"cpu": str(pods["sink"]["cpu"]), "memory": _q(pods["sink"]["memory_gib"]),
                                            "ephemeral-storage": f"{pods['sink']['spool_gib'] + 1}Gi"},
                               "limits": {"cpu": str(pods["sink"]["cpu"] * 2), "memory": _q(pods["sink"]["memory_gib"]),
                                          "ephemeral-storage": f"{pods['sink']['spool_gib'] + 1}Gi"}},
                 "topologySpreadConstraints": _zone_spread({"app.kubernetes.io/component": "sink"}),
                 "priorityClassName": crit},
        "autoscaling": {"enabled": True,
                        "process": {"enabled": False},
                        "sink": {"enabled": True, "minReplicas": pods["sink"]["replicas"],
                                 "maxReplicas": pl.summary["kafka_partitions"], "backlogThreshold": 500}},
        "ray": {"consumers": r["consumers"], "head": {"priorityClassName": crit}, "workerGroups": groups},
        "pipeline": {
            "kafka": {"partitions": pl.summary["kafka_partitions"],
                      "raw_retention_ms": int(inp.raw_retention_hours * 3600 * 1000),
                      "provisioning": {"replication_factor": inp.replication_factor,
                                       "min_insync_replicas": inp.min_insync_replicas,
                                       "retention_hours": {"redacted": int(inp.redacted_retention_hours),
                                                           "dlq": int(inp.dlq_retention_hours),
                                                           "audit": int(inp.audit_retention_hours)}}},
            "ray": {"chunk_workers": r["chunk_workers"], "worker_num_cpus": r["worker_num_cpus"],
                    "placement": r["placement"], "detector": det},
            "ingest": {"chunk_seconds": inp.chunk_seconds},
            "process": {"detect_every": inp.detect_every, **process},
            "sink": {"segment_seconds": inp.segment_seconds,
                     "max_buffered_bytes": int(pods["sink"]["max_buffered_bytes"])},
        },
    }
    return values


def merge(base: Any, over: Any) -> Any:
    """Deep merge ``over`` into a copy of ``base``: maps merge, anything else replaces, and
    ``None`` in ``over`` deletes the key (Helm's own way of dropping a default)."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return over
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif k in out or isinstance(v, dict):
            out[k] = merge(out.get(k, {}), v)
        else:
            out[k] = v
    return out


# ================================================================ human output


def _fmt(v: float) -> str:
    if v == int(v) and abs(v) >= 1:
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:,.2f}"
    return f"{v:.4g}"


def render_table(pl: Plan) -> str:
    """Every cost line as a fixed-width table, grouped by section, assumptions marked."""
    i = pl.inputs
    head = (f"veilstream plan: {i.cameras:,} cameras of {i.width}x{i.height}@{i.fps:g}, node {i.node}, "
            f"plates on {i.plates_share:.0%} of cameras, RF {i.replication_factor}, footage {i.footage}")
    rows = [(ln.section, ln.name, _fmt(ln.value), ln.unit, ln.basis, ln.how) for ln in pl.lines]
    w = [max(len(r[k]) for r in rows) for k in range(5)]
    out = [head, ""]
    titles = ("section", "line", "value", "unit", "basis")
    out.append("  ".join(t.ljust(w[k]) if k != 2 else t.rjust(w[k]) for k, t in enumerate(titles)) + "  how")
    last = None
    for r in rows:
        if last is not None and r[0] != last:
            out.append("")
        last = r[0]
        out.append("  ".join(r[k].ljust(w[k]) if k != 2 else r[k].rjust(w[k]) for k in range(5)) + "  " + r[5])
    s = pl.summary
    out += ["", f"=> {s['vcpu']:,} vCPU, {s['gpus']} GPUs, Ray pods {s['ray_worker_replicas']}, "
                f"ingest {s['ingest_replicas']} x {s['ingest_memory_gib']:g} GiB, sinks {s['sink_replicas']} x "
                f"{s['sink_memory_gib']:g} GiB, {s['kafka_partitions']} partitions, Kafka "
                f"{s['kafka_bytes_retained']['total'] / TB:,.0f} TB, S3 {s['s3_bytes_per_day'] / TB:,.1f} TB/day "
                f"({s['s3_bytes_at_retention'] / TB:,.0f} TB at retention)",
            "assumed (not measured; measure before buying): " + ", ".join(s["assumed"])]
    return "\n".join(out)
