"""``veilstream up`` / ``down``: the whole local stack, recorded in a state directory.

State directory: ``state_dir`` argument, else ``$VEILSTREAM_STATE_DIR``, else
``./.veilstream``. It holds

* ``stack.json``   pids (with the command-line marker that proves a pid is still ours),
                   ports, endpoints, log paths: what ``down`` stops, and nothing else;
* ``config.yaml``  a worker config (valid against ``schemas/config.schema.json``) that
                   points ingest / process / sink at this stack;
* ``policies/default.yaml``  the de-identification policy the workers apply (the
                   config's ``policies_dir``; segments are written under its object-lock
                   retention);
* ``s3-access-key`` / ``s3-secret-key``  the local server's throwaway credentials, named
                   by the config's ``object_store.*_file`` (never inline);
* ``logs/``        one log per process.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from schemas.config import config_to_dict, parse_config

from . import DevStackError, ManagedProcess
from .broker import DEFAULT_MESSAGE_MAX_BYTES, create_topics, start_broker
from .raylocal import start_ray_head
from .s3 import start_s3

logger = logging.getLogger(__name__)

__all__ = ["StackState", "down", "resolve_state_dir", "up", "worker_config"]

STATE_FILE = "stack.json"
CONFIG_FILE = "config.yaml"


def resolve_state_dir(state_dir: str | os.PathLike[str] | None = None) -> Path:
    if state_dir is not None:
        return Path(state_dir).absolute()
    env = os.environ.get("VEILSTREAM_STATE_DIR")
    return Path(env).absolute() if env else Path.cwd() / ".veilstream"


@dataclass
class StackState:
    """What ``up`` started (serialised to ``stack.json``)."""

    state_dir: str
    bootstrap: str
    s3_endpoint: str
    ray_address: str | None
    config_path: str
    processes: list[dict[str, Any]] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    ray_temp_dir: str | None = None
    started_at: float = 0.0

    @property
    def state_file(self) -> Path:
        return Path(self.state_dir) / STATE_FILE

    def managed(self) -> list[ManagedProcess]:
        return [ManagedProcess(**p) for p in self.processes]

    def alive(self) -> bool:
        return bool(self.processes) and all(p.alive() for p in self.managed())

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.state_file)

    @classmethod
    def load(cls, state_dir: str | os.PathLike[str] | None = None) -> StackState | None:
        path = resolve_state_dir(state_dir) / STATE_FILE
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise DevStackError(f"unreadable stack state {path}: {exc}") from None


LOCAL_POLICY = {
    "policy_id": "default", "version": 1,
    "description": "Local stack: faces and plates masked, segments kept 30 days under object lock.",
    "classes": ["face", "plate"], "style": "mosaic", "on_failure": "mask",
    "retention": {"redacted_days": 30, "raw_days": 0, "mode": "GOVERNANCE"},
    "roles": {"analyst": {"read": ["redacted", "manifests"], "cameras": ["*"]},
              "privacy-officer": {"read": ["redacted", "manifests", "audit"], "cameras": ["*"], "export": True}},
}
"""The policy ``veilstream up`` writes to ``<state>/policies/default.yaml`` (edit it there)."""

LOCAL_STREET_POLICY = {
    "policy_id": "street", "version": 1,
    "description": "Local stack: street cameras, where whole persons are masked too.",
    "classes": ["face", "plate", "person"], "style": "mosaic", "on_failure": "mask",
    "retention": {"redacted_days": 14, "raw_days": 0, "mode": "GOVERNANCE"},
}
"""A second local policy (``<state>/policies/street.yaml``): the demo's street camera uses it."""


def worker_config(bootstrap: str, s3_endpoint: str, ray_address: str | None, state_dir: Path,
                  partitions: int = 4) -> dict[str, Any]:
    """The worker config for a local stack (validated; every other key at its default)."""
    raw = {
        "policies_dir": str(state_dir / "policies"),
        "kafka": {"bootstrap_servers": bootstrap, "partitions": partitions,
                  "message_max_bytes": DEFAULT_MESSAGE_MAX_BYTES, "session_timeout_ms": 6000},
        "object_store": {"endpoint": s3_endpoint, "secure": False, "object_lock": True,
                         "access_key_file": str(state_dir / "s3-access-key"),
                         "secret_key_file": str(state_dir / "s3-secret-key")},
        "ray": {"address": ray_address},
        "metrics": {"port": 0},  # several workers share this machine: any free port
    }
    return config_to_dict(parse_config(raw))  # type: ignore[no-any-return]


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)


def up(state_dir: str | os.PathLike[str] | None = None, *, ray: bool = True, num_cpus: int | None = None,
       partitions: int = 4, ray_object_store_mb: int = 256) -> StackState:
    """Start broker, S3 server and (unless ``ray=False``) a Ray head on free loopback
    ports, create the pipeline topics, and write ``stack.json`` + ``config.yaml``.

    If a stack recorded in ``state_dir`` is still fully running it is returned as is;
    a partly dead one is stopped first. On any failure, whatever was started is stopped.
    """
    sdir = resolve_state_dir(state_dir)
    sdir.mkdir(parents=True, exist_ok=True)
    old = StackState.load(sdir)
    if old is not None:
        if old.alive():
            logger.info("local stack already up state=%s", old.state_file)
            return old
        down(sdir)
    logs = sdir / "logs"
    started: list[Any] = []
    t0 = time.monotonic()
    try:
        broker = start_broker(logs)
        started.append(broker)
        s3 = start_s3(logs)
        started.append(s3)
        ray_handle = start_ray_head(logs, num_cpus=num_cpus, object_store_mb=ray_object_store_mb) if ray else None
        if ray_handle is not None:
            started.append(ray_handle)
        cfg = worker_config(broker.bootstrap, s3.endpoint, ray_handle.address if ray_handle else None, sdir,
                            partitions)
        t = cfg["kafka"]["topics"]
        create_topics(
            broker.bootstrap,
            {t["raw"]: partitions, t["redacted"]: partitions, t["dlq"]: 1, t["cameras"]: partitions,
             t["audit"]: 1},
            config={"max.message.bytes": str(DEFAULT_MESSAGE_MAX_BYTES)},
            per_topic={t["cameras"]: {"cleanup.policy": "compact"},
                       # unredacted footage: short retention, set by config (the raw vault keeps it)
                       t["raw"]: {"retention.ms": str(cfg["kafka"].get("raw_retention_ms", 21600000))}},
        )
        pdir = sdir / "policies"
        pdir.mkdir(exist_ok=True)
        for pol in (LOCAL_POLICY, LOCAL_STREET_POLICY):
            f = pdir / f"{pol['policy_id']}.yaml"
            if not f.exists():  # an edited policy survives down/up
                f.write_text("# a local stack policy (schemas/policy.schema.json)\n"
                             + yaml.safe_dump(pol, sort_keys=False))
        _write_secret(sdir / "s3-access-key", s3.access_key)
        _write_secret(sdir / "s3-secret-key", s3.secret_key)
        config_path = sdir / CONFIG_FILE
        config_path.write_text("# written by `veilstream up`; stopped by `veilstream down`\n"
                               + yaml.safe_dump(cfg, sort_keys=False))
        state = StackState(
            state_dir=str(sdir), bootstrap=broker.bootstrap, s3_endpoint=s3.endpoint,
            ray_address=ray_handle.address if ray_handle else None, config_path=str(config_path),
            processes=[asdict(h.process) for h in started],
            ports={"kafka": broker.port, "s3": s3.port, **({"ray": ray_handle.port} if ray_handle else {})},
            ray_temp_dir=ray_handle.temp_dir if ray_handle else None, started_at=time.time(),
        )
        state.save()
    except BaseException:
        for h in reversed(started):
            h.stop(5.0)
        raise
    logger.info("local stack up kafka=%s s3=%s ray=%s in %.1fs", state.bootstrap, state.s3_endpoint,
                state.ray_address or "-", time.monotonic() - t0)
    return state


def down(state_dir: str | os.PathLike[str] | None = None, timeout_s: float | None = None) -> int:
    """Stop exactly the processes recorded in ``stack.json`` (newest first), each only if
    its pid still runs the command we started. Returns how many were stopped."""
    import shutil

    sdir = resolve_state_dir(state_dir)
    state = StackState.load(sdir)
    if state is None:
        return 0
    stopped = 0
    for proc in reversed(state.managed()):
        if proc.stop(timeout_s):
            stopped += 1
    if state.ray_temp_dir and Path(state.ray_temp_dir).name.startswith("veil-ray-"):
        shutil.rmtree(state.ray_temp_dir, ignore_errors=True)
    for name in (STATE_FILE, CONFIG_FILE, "s3-access-key", "s3-secret-key"):
        (sdir / name).unlink(missing_ok=True)
    logger.info("local stack down stopped=%d state=%s", stopped, sdir)
    return stopped
