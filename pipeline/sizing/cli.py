"""``veilstream plan``: size a deployment and write Helm values for it (thin wrapper of
:mod:`pipeline.sizing`)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

from schemas.errors import InputError, UsageError

from . import FOOTAGE_KINDS, PlanInput, SizingError, merge, plan, render_table, to_values

# Descriptions of the keys `to_values` writes (helm-docs `# --` lines); a base file's own
# descriptions win for its keys, anything else gets its key name.
DESCRIPTIONS = {
    "priorityClasses": "PriorityClasses the pods below name, created by the chart.",
    "priorityClasses.create": "Create them.",
    "priorityClasses.values": "Priority per class name.",
    "priorityClasses.values.veilstream-critical": "Ingest, sinks, process submitter, Ray head: losing them loses footage or stops every actor.",
    "priorityClasses.values.veilstream-batch": "Ray workers: preempted before the critical pods.",
    "ingest": "Ingest sized by `veilstream plan`.",
    "ingest.replicas": "Pods: cameras / cameras per pod, a divisor of the cameras topic's partitions.",
    "process": "The process submitter (one pod; the work runs in the Ray job).",
    "process.replicas": "One submitter.",
    "sink": "Sinks sized by `veilstream plan`: every camera's open segment is held in memory.",
    "sink.replicas": "Pods (KEDA's minimum).",
    "autoscaling": "Autoscaling.",
    "autoscaling.enabled": "On.",
    "autoscaling.process": "Process runs as a Ray job: no driver pods for KEDA to scale.",
    "autoscaling.process.enabled": "Off.",
    "autoscaling.sink": "Sinks on their backlog; never below the planned count (memory is sized for it).",
    "autoscaling.sink.enabled": "On.",
    "autoscaling.sink.minReplicas": "The planned sinks.",
    "autoscaling.sink.maxReplicas": "At most one per redacted partition.",
    "autoscaling.sink.backlogThreshold": "Backlog chunks per sink.",
    "ray": "Ray sized by `veilstream plan`.",
    "ray.consumers": "Consumer actors: each owns raw partitions and starts its own chunk and detector actors.",
    "ray.head.priorityClassName": "Above the workers: losing the head stops every actor.",
    "ray.workerGroups": "Worker groups: minReplicas x resources provide what the actors reserve.",
    "ray.workerGroups.cpu": "CPU workers: chunk actors (decode, mask, encode) and consumer actors.",
    "pipeline": "Pipeline config sized by `veilstream plan`.",
    "pipeline.kafka": "Kafka topics.",
    "pipeline.kafka.partitions": "Partitions of every chunk topic (a count with many divisors).",
    "pipeline.kafka.raw_retention_ms": "Raw topic retention (unredacted footage).",
    "pipeline.kafka.provisioning": "What `topics apply` creates.",
    "pipeline.kafka.provisioning.replication_factor": "Replicas of every topic.",
    "pipeline.kafka.provisioning.min_insync_replicas": "Replicas that must hold a write (acks=all).",
    "pipeline.kafka.provisioning.retention_hours": "Retention of the other topics in hours.",
    "pipeline.ray": "Actors per consumer.",
    "pipeline.ray.chunk_workers": "Chunk actors per consumer.",
    "pipeline.ray.worker_num_cpus": "CPUs per chunk actor.",
    "pipeline.ray.placement": "spread on GPU nodes (GPU pods hold only detectors); node_local on CPU (a detector and its chunk actors per pod).",
    "pipeline.ray.detector": "Detector actors.",
    "pipeline.ray.detector.replicas": "Detector actors per consumer.",
    "pipeline.ray.detector.num_cpus": "Ray CPUs per detector (0 on GPU pods, which offer Ray none).",
    "pipeline.ray.detector.num_gpus": "GPU share per detector actor (consumers x replicas x num_gpus GPUs in all).",
    "pipeline.ray.detector.batch_size": "Frames per detector call, across cameras.",
    "pipeline.ray.detector.threads": "onnxruntime threads per detector.",
    "pipeline.ray.detector.providers": "CUDA: the GPU image has no TensorRT unless built with it (image.tensorrt).",
    "pipeline.ingest": "Ingest tuning.",
    "pipeline.ingest.chunk_seconds": "Chunk length in seconds.",
    "pipeline.process": "Process tuning.",
    "pipeline.process.detect_every": "Detect on every N-th frame (the plan's detected frames follow it).",
    "pipeline.process.text_max_side": "Plates: the full-frame text pass at native 720p on GPUs.",
    "pipeline.sink": "Sink tuning.",
    "pipeline.sink.segment_seconds": "Segment length in seconds (the sinks' spool disk is sized for it).",
    "pipeline.sink.max_buffered_bytes": "Chunk bytes the open segments keep in memory (sink memory is sized for it); the rest spools to /tmp.",
    "tmpSizeLimit": "The /tmp emptyDir: the sinks' spool lives there.",
}
KEY_DESCRIPTIONS = {
    "topologySpreadConstraints": "Spread over zones.",
    "priorityClassName": "PriorityClass (created by the chart).",
    "resources": "Resources.",
    "requests": "Requests.",
    "limits": "Limits.",
    "cpu": "CPU.",
    "memory": "Memory.",
    "ephemeral-storage": "Scratch.",
    "replicas": "Pods.",
    "minReplicas": "Fewest pods.",
    "maxReplicas": "Most pods.",
    "gpu": "GPUs per pod.",
    "spillSizeGi": "Spill space in GiB.",
    "rayStartParams": "`ray start` parameters.",
    "num-cpus": "No Ray CPUs on GPU pods: only detectors (num_cpus 0) land there.",
    "maxSkew": "Skew.",
    "topologyKey": "Zones.",
    "whenUnsatisfiable": "Best effort.",
    "labelSelector": "These pods.",
    "matchLabels": "Labels.",
}


def _key_comments(text: str) -> dict[str, list[str]]:
    """The comment block above each key of a YAML file, by dotted path (list items as `[]`)."""
    out: dict[str, list[str]] = {}
    stack: list[tuple[int, str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(- )?([^\s#:'\"][^:]*):(\s|$)", line)
        if not m:
            continue
        dash = len(m.group(1))
        indent = dash + (2 if m.group(2) else 0)
        if m.group(2):  # a list item: its keys sit under the parent's `[]`
            while stack and stack[-1][0] >= dash:
                stack.pop()
            stack.append((dash, "[]"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [m.group(3).strip()]).replace(".[]", "[]")
        stack.append((indent, m.group(3).strip()))
        block: list[str] = []
        j = i - 1
        while j >= 0 and lines[j].lstrip().startswith("#"):
            block.insert(0, lines[j].strip())
            j -= 1
        if block:
            out[path] = block
    return out


def _scalar(v: Any) -> str:
    return str(yaml.safe_dump(v, default_flow_style=True, width=10**6)).strip().removesuffix("\n...").strip()


def _comment(path: str, key: str, known: dict[str, list[str]], indent: str) -> list[str]:
    block = known.get(path)
    starts = [i for i, c in enumerate(block or []) if c.startswith("# --")]
    if block and starts:  # from its last `# --` line: a file header above the first key is not its description
        return [indent + c for c in block[starts[-1]:]]
    text = DESCRIPTIONS.get(path) or KEY_DESCRIPTIONS.get(key) or f"{key[0].upper()}{key[1:]}."
    return [f"{indent}# -- {text}"]


def emit(values: dict[str, Any], known: dict[str, list[str]] | None = None) -> str:
    """YAML of ``values`` with a `# --` description above every key (the chart's tests require one)."""
    known = known or {}
    out: list[str] = []

    def node(v: Any, path: str, depth: int) -> None:
        ind = "  " * depth
        for k, val in v.items():
            p = f"{path}.{k}" if path else str(k)
            out.extend(_comment(p, str(k), known, ind))
            key = _scalar(str(k))
            if isinstance(val, dict) and val:
                out.append(f"{ind}{key}:")
                node(val, p, depth + 1)
            elif isinstance(val, list) and val:
                out.append(f"{ind}{key}:")
                seq(val, p, depth + 1)
            else:
                out.append(f"{ind}{key}: {_scalar(val)}")

    def seq(items: list[Any], path: str, depth: int) -> None:
        ind = "  " * depth
        for item in items:
            if isinstance(item, dict) and item:
                first = True
                for k, val in item.items():
                    p = f"{path}[].{k}".replace(".[]", "[]")
                    pre = f"{ind}- " if first else f"{ind}  "
                    out.extend(_comment(p, str(k), known, ind if first else ind + "  "))
                    if isinstance(val, dict) and val:
                        out.append(f"{pre}{_scalar(str(k))}:")
                        node(val, p, depth + 2)
                    elif isinstance(val, list) and val:
                        out.append(f"{pre}{_scalar(str(k))}:")
                        seq(val, p, depth + 2)
                    else:
                        out.append(f"{pre}{_scalar(str(k))}: {_scalar(val)}")
                    first = False
            else:
                out.append(f"{ind}- {_scalar(item)}")

    node(values, "", 0)
    return "\n".join(out) + "\n"


def _size(value: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)[xX](\d+)", value.strip())
    if not m:
        raise UsageError(f"--size: expected WIDTHxHEIGHT, e.g. 1280x720, got {value!r}")
    return int(m.group(1)), int(m.group(2))


# The plan's options, in --help order: (flag, PlanInput field or None, written into the
# generated file's header always or only when not the default, argparse keywords). One table
# for the parser, the header's command line and the PlanInput, so a new option is one row.
PLAN_OPTIONS: tuple[tuple[str, str | None, str, dict[str, Any]], ...] = (
    ("--cameras", "cameras", "always", {"type": int, "required": True, "help": "number of cameras"}),
    ("--fps", "fps", "always", {"type": float, "required": True, "help": "frames per second each camera sends"}),
    ("--size", None, "always", {"default": "1280x720", "help": "frame size WIDTHxHEIGHT (default 1280x720)"}),
    ("--footage", "footage", "always", {
        "choices": FOOTAGE_KINDS, "default": FOOTAGE_KINDS[0],
        "help": "what the cameras see, for the CPU per frame (pipeline/sizing/costs.json 'footage', measured per "
                "kind): crowd (a crowded hall, ~40 people a frame: the default, the costliest), street (a few "
                "pedestrians: make load's vtest) or snapshot (320x180 stills at 0.5 fps, every frame detected)"}),
    ("--node", "node", "always", {"choices": ("gpu", "cpu"), "default": "gpu",
                                  "help": "where detectors run: gpu (H100 worker group) or cpu (default gpu)"}),
    ("--plates-share", "plates_share", "always", {
        "type": float, "default": 1.0, "metavar": "SHARE",
        "help": "share of cameras whose policy masks plates (default 1.0; the rest faces only)"}),
    ("--camera-mbps", "camera_mbps", "changed", {
        "type": float, "default": None, "metavar": "MBPS",
        "help": "H.264 bitrate per camera (default 2 Mbit/s at 720p@15, scaled with pixels x fps)"}),
    ("--detect-every", "detect_every", "changed", {"type": int, "default": 4, "metavar": "N",
                                                   "help": "process.detect_every (default 4)"}),
    ("--replication", "replication_factor", "changed", {"type": int, "default": 3,
                                                        "help": "Kafka replication factor (default 3)"}),
    ("--min-insync", None, "changed", {"type": int, "default": 2, "help": "Kafka min.insync.replicas (default 2)"}),
    ("--raw-retention-hours", "raw_retention_hours", "changed", {
        "type": float, "default": 6.0, "help": "retention of the raw topic in hours (default 6, kafka.raw_retention_ms)"}),
    ("--s3-retention-days", "s3_retention_days", "changed", {
        "type": int, "default": 30,
        "help": "days redacted segments are kept (default 30, the default policy's redacted_days)"}),
    ("--zones", "zones", "changed", {"type": int, "default": 3,
                                     "help": "availability zones the pods spread over (default 3)"}),
    ("--gpu-group", "gpu_group", "changed", {"default": "gpu-h100",
                                             "help": "name of the GPU worker group (default gpu-h100)"}),
    ("--placement", "placement", "changed", {
        "choices": ("node_local", "spread"), "default": "node_local",
        "help": "ray.placement: node_local (default) decodes, detects, masks and encodes a chunk on one "
                "node, so only compressed chunks cross the network; spread (GPU plans) keeps the GPU pods "
                "for detectors only and ships decoded frames to them"}),
)


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def command_line(args: argparse.Namespace) -> str:
    """The plan's command line, canonical (the generated file's header names it)."""
    parts = ["veilstream", "plan"]
    for flag, _field, when, kw in PLAN_OPTIONS:
        value = getattr(args, _dest(flag))
        if when == "always" or value != kw.get("default"):
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if args.values_base:
        parts += ["--values-base", str(args.values_base)]
    parts += ["--values-out", str(args.values_out)]
    return " ".join(parts)


def plan_input(args: argparse.Namespace) -> PlanInput:
    """The :class:`PlanInput` of ``veilstream plan``'s arguments."""
    width, height = _size(args.size)
    fields = {name: getattr(args, _dest(flag)) for flag, name, _when, _kw in PLAN_OPTIONS if name}
    return PlanInput(**fields, width=width, height=height,
                     min_insync_replicas=min(args.min_insync, args.replication))


def cmd_plan(args: argparse.Namespace) -> int:
    inp = plan_input(args)
    width, height = inp.width, inp.height
    try:
        pl = plan(inp)
    except SizingError as exc:
        raise UsageError(str(exc)) from None
    if args.values_out:
        base: dict[str, Any] = {}
        known: dict[str, list[str]] = {}
        if args.values_base:
            try:
                text = args.values_base.read_text()
            except OSError as exc:
                raise InputError(f"--values-base {str(args.values_base)!r}: {exc.strerror or exc}") from None
            base = yaml.safe_load(text) or {}
            if not isinstance(base, dict):
                raise UsageError(f"--values-base {str(args.values_base)!r}: expected a YAML mapping")
            known = _key_comments(text)
        values = merge(base, to_values(pl))
        header = [
            "# GENERATED by `veilstream plan` - do not edit by hand; regenerate with:",
            f"#   {command_line(args)}",
            f"# Sizing for {inp.cameras:,} cameras of {width}x{height}@{args.fps:g} ({inp.footage} footage) on "
            f"{inp.node.upper()} detector nodes: "
            f"{pl.summary['vcpu']:,} vCPU, {pl.summary['gpus']} GPUs,",
            f"# {pl.summary['kafka_partitions']} partitions, {pl.summary['sink_replicas']} sinks x "
            f"{pl.summary['sink_memory_gib']:g} GiB, {pl.summary['ingest_replicas']} ingest pods. Numbers marked assumed "
            "in pipeline/sizing/costs.json are not measured.",
        ]
        if args.values_base:
            header.append(f"# Site settings (image, Kafka, object store, networks) come from {args.values_base}.")
        text_out = "\n".join(header) + "\n" + emit(values, known)
        try:
            args.values_out.write_text(text_out)
        except OSError as exc:
            raise InputError(f"--values-out {str(args.values_out)!r}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(pl.to_dict(), indent=2, sort_keys=False))
    else:
        print(render_table(pl))
        if args.values_out:
            print(f"values written to {args.values_out}")
    return 0


def add_plan(sub: Any) -> None:
    p = sub.add_parser("plan", help="size a deployment for N cameras (vCPU, GPUs, Kafka, S3, network) and "
                                    "write Helm values for it")
    for flag, _field, _when, kw in PLAN_OPTIONS:
        p.add_argument(flag, **kw)
    p.add_argument("--values-out", type=Path, default=None, metavar="FILE",
                   help="write Helm values (helm/veilstream) that provision the plan")
    p.add_argument("--values-base", type=Path, default=None, metavar="FILE",
                   help="site values (image, Kafka, object store, networks) the plan's values are merged over")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)


COMMANDS = (add_plan,)


