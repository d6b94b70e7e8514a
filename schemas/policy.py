"""The typed de-identification policy (``policy.schema.json``).

A policy says, for a group of cameras, what is masked and how (classes, style, strength,
thresholds, padding, static zones, what happens to frames whose detection failed), how
long redacted segments are kept, and which roles may read what. ``parse_policy`` is
pure; ``load_policy(path)`` reads YAML; ``load_policies(dir)`` reads every
``<policy_id>.yaml`` of a directory (what the Helm chart mounts at
``/etc/veilstream/policies``). The pipeline renders a policy into a detector/masking
config (process), object-lock retention and lifecycle rules (sink) and IAM-style JSON
documents (``veilstream policy render``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fill_defaults, problems
from .errors import ConfigError
from .yamlio import read_yaml

__all__ = ["Policy", "Retention", "Role", "load_policies", "load_policy", "parse_policy"]


@dataclass(frozen=True)
class Retention:
    redacted_days: int
    raw_days: int
    mode: str  # GOVERNANCE | COMPLIANCE (S3 object lock modes)


@dataclass(frozen=True)
class Role:
    name: str
    read: tuple[str, ...]  # subset of redacted, raw, audit, manifests
    cameras: tuple[str, ...]  # camera id globs
    export: bool


@dataclass(frozen=True)
class Policy:
    policy_id: str
    version: int
    description: str
    classes: tuple[str, ...]
    style: str
    strength: float
    on_failure: str  # mask | drop
    thresholds: dict[str, float]
    padding: dict[str, float]
    zones: tuple[dict[str, Any], ...]
    retention: Retention
    roles: tuple[Role, ...]


def parse_policy(mapping: Any, what: str = "invalid policy") -> Policy:
    """Validate a policy mapping (defaults filled) and return the typed view.

    Raises:
        ConfigError: every problem at once, each with its dotted path.
    """
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{what}: expected a mapping at the top level, got {type(mapping).__name__}")
    filled = fill_defaults("policy", dict(mapping))
    found = problems("policy", filled)
    if found:
        n = len(found)
        raise ConfigError(f"{what}: {n} problem{'s' if n > 1 else ''}:\n  " + "\n  ".join(found))
    ret = filled["retention"]
    return Policy(
        policy_id=filled["policy_id"], version=int(filled["version"]), description=filled["description"],
        classes=tuple(filled["classes"]), style=filled["style"], strength=float(filled["strength"]),
        on_failure=filled["on_failure"],
        thresholds={k: float(v) for k, v in filled["thresholds"].items()},
        padding={k: float(v) for k, v in filled["padding"].items()},
        zones=tuple(dict(z) for z in filled["zones"]),
        retention=Retention(redacted_days=int(ret.get("redacted_days", 30)), raw_days=int(ret.get("raw_days", 0)),
                            mode=str(ret.get("mode", "GOVERNANCE"))),
        roles=tuple(Role(name=name, read=tuple(r.get("read", ())), cameras=tuple(r.get("cameras", ("*",))),
                         export=bool(r.get("export", False)))
                    for name, r in sorted(filled["roles"].items())),
    )


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read one policy YAML file. ``ConfigError`` names the file and every problem."""
    p = Path(path)
    data = read_yaml(p, "policy file")
    return parse_policy(data, what=f"invalid policy {p}")


def load_policies(directory: str | os.PathLike[str]) -> dict[str, Policy]:
    """Every ``*.yaml`` / ``*.yml`` policy of a directory, keyed by ``policy_id``.

    The file name (without extension) must equal the policy's ``policy_id``, so the
    process worker can find a camera's policy by id without reading them all.

    Raises:
        ConfigError: directory missing, a policy invalid, a file name that disagrees with
            its ``policy_id``, or the same id twice.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"policies_dir: {d} is not a directory")
    out: dict[str, Policy] = {}
    for f in sorted(d.iterdir()):
        if f.suffix not in (".yaml", ".yml") or f.name.startswith("."):
            continue
        pol = load_policy(f)
        if pol.policy_id != f.stem:
            raise ConfigError(f"policy file {f}: policy_id {pol.policy_id!r} must equal the file name "
                              f"({f.stem!r}.yaml)")
        if pol.policy_id in out:
            raise ConfigError(f"policies_dir {d}: policy {pol.policy_id!r} defined twice")
        out[pol.policy_id] = pol
    return out
