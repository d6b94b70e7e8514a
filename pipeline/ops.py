"""Operator subcommands of ``veilstream``: ``version``, ``topics apply|check``, ``models fetch``.

``version`` is what an SRE runs inside an image (``kubectl exec ... veilstream version``): the
package, Python, the libraries whose versions must match across pods (Ray, onnxruntime),
the execution providers the onnxruntime build offers and the order the detectors would use,
and every registered model with where it resolves and its sha256 (without downloading).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.cliconfig import config_arg, load_cli_config

LIBRARIES = ("onnxruntime", "onnxruntime-gpu", "openvino", "ray", "confluent-kafka", "av", "opencv-python", "opencv-python-headless", "numpy",
             "minio", "prometheus-client")


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def version_info(model_dir: str | None = None) -> dict[str, Any]:
    """Versions of the package, libraries, providers and models (no network)."""
    import onnxruntime as ort

    from operators.providers import available_backends, choose_providers
    from operators.registry import MODELS, resolve_model, sha256_of
    from schemas.errors import ModelNotFoundError

    libs = {n: v for n in LIBRARIES if (v := _dist_version(n)) is not None}
    try:
        import confluent_kafka

        libs["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    models: dict[str, Any] = {}
    for name in sorted(MODELS):
        if MODELS[name].derived_from:
            continue  # int8 copies: built by the detectors from their fp32 model on first use
        try:
            path = resolve_model(name, model_dir=model_dir, allow_download=False)
            models[name] = {"path": str(path), "sha256": sha256_of(path)}
        except ModelNotFoundError as exc:
            models[name] = {"path": None, "error": str(exc)}
    return {
        "veilstream": _dist_version("veilstream"),
        "python": platform.python_version(),
        "libraries": libs,
        "onnxruntime": {"version": ort.__version__, "device": ort.get_device(),
                        "available_providers": list(ort.get_available_providers()),
                        "auto_order": choose_providers(None)},
        # what each model runs on under the automatic choice (GPU; else OpenVINO where it wins on CPU)
        "backends": {"available": available_backends(),
                     "auto_by_model": {n: choose_providers(None, n)[0] for n in sorted(MODELS)}},
        "models": models,
    }


def cmd_version(args: argparse.Namespace) -> int:
    info = version_info(args.model_dir)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        print(f"veilstream {info['veilstream']} python {info['python']}")
        print("libraries " + " ".join(f"{k}={v}" for k, v in sorted(info["libraries"].items())))
        o = info["onnxruntime"]
        print(f"onnxruntime {o['version']} device={o['device']} providers={','.join(o['available_providers'])} "
              f"auto={','.join(o['auto_order'])}")
        b = info["backends"]
        print(f"backends available={','.join(b['available'])} auto per model: "
              + " ".join(f"{k}={v}" for k, v in b["auto_by_model"].items()))
        for name, m in info["models"].items():
            print(f"model {name} " + (f"sha256={m['sha256']} path={m['path']}" if m["path"] else "MISSING"))
    missing = [n for n, m in info["models"].items() if not m["path"]]
    if missing and args.require_models:
        print(f"veilstream version: models missing: {', '.join(missing)} "
              f"(`veilstream models fetch --into DIR`, then VEILSTREAM_MODEL_DIR=DIR)", file=sys.stderr)
        return 1
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    """Copy (or download, verified) every registry model that no wheel ships into ``--into``."""
    from operators.registry import MODELS, resolve_model, sha256_of

    into = Path(args.into)
    into.mkdir(parents=True, exist_ok=True)
    for name, spec in sorted(MODELS.items()):
        if spec.derived_from:
            continue  # int8 copies: built by the detectors from their fp32 model on first use
        if spec.package_resource is not None and spec.url is None:
            path = resolve_model(name, allow_download=False)  # in a wheel: nothing to bake
            print(f"model {name} in package {spec.package_resource[0]}: {path}")
            continue
        path = resolve_model(name, cache_dir=into)  # $VEILSTREAM_MODEL_DIR, the dir itself, else the URL
        dest = into / spec.filename
        if path.resolve() != dest.resolve():
            shutil.copyfile(path, dest)
        digest = sha256_of(dest)
        if spec.sha256 and digest != spec.sha256:
            dest.unlink()
            print(f"veilstream models fetch: {name}: sha256 {digest} != {spec.sha256}", file=sys.stderr)
            return 1
        print(f"model {name} sha256={digest} -> {dest}")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from pipeline.kafka import kafka_settings
    from pipeline.topics import KafkaTopicAdmin, apply_topics

    cfg = load_cli_config(args)
    admin = KafkaTopicAdmin(cfg.kafka.bootstrap_servers, kafka_settings(cfg.kafka), timeout_s=args.timeout)
    report = apply_topics(cfg, admin, dry_run=args.topics_command == "check",
                          add_partitions=getattr(args, "add_partitions", False))
    for line in report.lines():
        print(line)
    if not report.ok:
        left = sum(not d.fixed for d in report.drift)
        print(f"veilstream topics {args.topics_command}: {left} difference(s) left (lines marked NOT fixed)",
              file=sys.stderr)
        return 1
    return 0


def add_version(sub: Any) -> None:
    p = sub.add_parser("version", help="package, library, execution-provider and model versions")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--model-dir", default=None, help="model directory (default $VEILSTREAM_MODEL_DIR)")
    p.add_argument("--require-models", action="store_true", help="exit 1 when a model does not resolve offline")
    p.set_defaults(func=cmd_version)


def add_topics(sub: Any) -> None:
    p = sub.add_parser("topics", help="create or check the pipeline's Kafka topics")
    tsub = p.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    for action, text in (("apply", "create missing topics, fix config drift, report what is left (exit 1)"),
                         ("check", "report missing topics and drift, change nothing (exit 1 on any)")):
        c = tsub.add_parser(action, help=text)
        config_arg(c)
        c.add_argument("--timeout", type=float, default=30.0, help="seconds per admin request (default 30)")
        if action == "apply":
            c.add_argument("--add-partitions", action="store_true",
                           help="also raise partition counts (moves camera keys to other partitions once)")
        c.set_defaults(func=cmd_topics)


def add_models(sub: Any) -> None:
    p = sub.add_parser("models", help="model files for offline sites")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    c = msub.add_parser("fetch", help="put every model no wheel ships into a directory (verified by sha256)")
    c.add_argument("--into", required=True, help="target directory (then VEILSTREAM_MODEL_DIR=it)")
    c.set_defaults(func=cmd_models_fetch)


COMMANDS = (add_version, add_topics, add_models)
