"""The typed pipeline config: one document for ingest, process and sink workers.

``parse_config(mapping)`` is pure: it fills the defaults declared in
``config.schema.json``, validates against it, reports *every* problem at once with its
dotted path, and returns frozen dataclasses. ``load_config(path)`` reads YAML with
``yaml.safe_load`` and calls it.

Secrets never appear here: ``object_store.access_key_env`` / ``access_key_file`` (and
``kafka.security.*_env``) name where the adapter reads them when it connects.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fill_defaults, problems
from .errors import ConfigError
from .safety import url_credentials_problem
from .yamlio import read_yaml

__all__ = [
    "CameraConfig",
    "ConsoleConfig",
    "DetectorConfig",
    "IngestConfig",
    "KafkaConfig",
    "KafkaSecurityConfig",
    "LimitsConfig",
    "MetricsConfig",
    "PRODUCER_OWNED_SETTINGS",
    "ObjectStoreConfig",
    "PipelineConfig",
    "ProcessConfig",
    "RawVaultConfig",
    "RayAutoscaleConfig",
    "RayConfig",
    "SinkConfig",
    "TopicsConfig",
    "config_to_dict",
    "load_config",
    "parse_camera",
    "parse_config",
    "producer_setting_problem",
]


@dataclass(frozen=True)
class TopicsConfig:
    raw: str
    redacted: str
    dlq: str
    cameras: str
    audit: str


@dataclass(frozen=True)
class KafkaOAuthConfig:
    token_endpoint_url: str | None = None
    client_id_env: str | None = None
    client_secret_env: str | None = None
    scope: str | None = None


@dataclass(frozen=True)
class KafkaSecurityConfig:
    protocol: str
    sasl_mechanism: str | None
    username_env: str | None
    password_env: str | None
    ca_file: str | None
    cert_file: str | None = None
    key_file: str | None = None
    oauth: KafkaOAuthConfig = KafkaOAuthConfig()


@dataclass(frozen=True)
class TopicPartitionsConfig:
    """Partitions per topic role; None = ``kafka.partitions``."""

    raw: int | None = None
    redacted: int | None = None
    dlq: int | None = None
    cameras: int | None = None
    audit: int | None = None


@dataclass(frozen=True)
class TopicRetentionConfig:
    """retention.ms of the delete-policy topics but raw, in hours (-1 = forever); the raw
    topic's retention is ``kafka.raw_retention_ms``."""

    redacted: int = 72
    dlq: int = 336
    audit: int = 8760


@dataclass(frozen=True)
class TopicProvisioningConfig:
    replication_factor: int = -1
    min_insync_replicas: int | None = None
    partitions: TopicPartitionsConfig = TopicPartitionsConfig()
    retention_hours: TopicRetentionConfig = TopicRetentionConfig()


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str
    topics: TopicsConfig
    partitions: int
    message_max_bytes: int
    session_timeout_ms: int
    security: KafkaSecurityConfig
    raw_retention_ms: int
    provisioning: TopicProvisioningConfig = TopicProvisioningConfig()
    producer_settings: dict[str, str | int | bool] = dataclasses.field(default_factory=dict)
    """Extra librdkafka settings for every producer (tuning only: :data:`PRODUCER_OWNED_SETTINGS`
    are refused by :func:`parse_config`)."""


PRODUCER_OWNED_SETTINGS: dict[str, str] = {
    "bootstrap.servers": "kafka.bootstrap_servers", "metadata.broker.list": "kafka.bootstrap_servers",
    "client.id": "each role names its own client",
    "message.max.bytes": "kafka.message_max_bytes",
    "enable.idempotence": "idempotent producers are the delivery guarantee",
    "acks": "idempotent producers are the delivery guarantee",
    "request.required.acks": "idempotent producers are the delivery guarantee",
    "retries": "an outage is retried, never given up on", "message.send.max.retries": "an outage is retried, never given up on",
    "enable.gapless.guarantee": "the pipeline replaces a fatal producer itself",
    "transactional.id": "the pipeline is at-least-once with idempotent writes, not transactional",
    "partitioner": "key = camera_id must map to the same partition in every producer (per-camera order)",
    "plugin.library.paths": "no code loaded from the config",
    "security.protocol": "kafka.security",
}
"""librdkafka producer settings the pipeline sets itself for its guarantees: never from
``kafka.producer_settings`` (value: why, or which config key sets it). Keys naming TLS or SASL
(``ssl*``, ``sasl*``, ``*.ssl.*``, ``https.*``) and callbacks are refused too: see :func:`producer_setting_problem`."""

_PRODUCER_CALLBACKS = frozenset({"logger", "error_cb", "stats_cb", "throttle_cb", "oauth_cb", "on_delivery",
                                 "dr_cb", "dr_msg_cb"})


def producer_setting_problem(key: str) -> str | None:
    """Why ``kafka.producer_settings`` may not hold librdkafka setting ``key``; None when it may."""
    if key in PRODUCER_OWNED_SETTINGS:
        return f"owned by the pipeline ({PRODUCER_OWNED_SETTINGS[key]}); not settable here"
    parts = key.split(".")
    if any(p.startswith(("ssl", "sasl")) for p in parts) or parts[0] == "https":
        return "owned by the pipeline (kafka.security); not settable here"
    if key in _PRODUCER_CALLBACKS:
        return "a callback the pipeline sets; not settable here"
    return None


@dataclass(frozen=True)
class ObjectStoreConfig:
    """Where segments go. Credentials: ``*_file`` if set, else the env var ``*_env``."""

    endpoint: str
    bucket: str
    audit_bucket: str
    raw_bucket: str
    access_key_env: str
    secret_key_env: str
    access_key_file: str | None
    secret_key_file: str | None
    secure: bool
    region: str
    object_lock: bool
    ca_file: str | None = None
    credentials: str = "keys"  # "keys" | "web_identity"


@dataclass(frozen=True)
class RawVaultConfig:
    """The encrypted raw vault (``veilstream raw-sink``): who holds the master key."""

    key_provider: str  # local | aws-kms
    key_file: str | None
    kms_key_id: str | None
    kms_region: str
    kms_endpoint: str | None
    consumer_group: str
    status_interval_s: float


@dataclass(frozen=True)
class DetectorConfig:
    num_gpus: float
    num_cpus: float
    replicas: int
    batch_size: int
    max_wait_ms: float
    providers: tuple[str, ...]
    threads: int | None
    split_min_frames: int = 2
    small_lanes: int = 2


@dataclass(frozen=True)
class RayAutoscaleConfig:
    """Lag-driven number of consumer actors in job mode (``ray.autoscale``); the bounds are
    ``None`` for "``ray.consumers``", so the default is today's fixed count."""

    min_consumers: int | None = None
    max_consumers: int | None = None
    lag_chunks_per_consumer: int = 200
    scale_up_after_s: float = 60.0
    scale_down_after_s: float = 600.0
    check_interval_s: float = 15.0

    def bounds(self, consumers: int) -> tuple[int, int]:
        """(min, max) consumer actors for ``ray.consumers`` = ``consumers``."""
        lo = self.min_consumers if self.min_consumers is not None else consumers
        hi = self.max_consumers if self.max_consumers is not None else consumers
        return lo, hi


@dataclass(frozen=True)
class RayConfig:
    address: str | None
    num_cpus: int | None
    object_store_mb: int
    chunk_workers: int
    worker_num_cpus: float
    chunk_concurrency: int
    consumers: int
    detector: DetectorConfig
    placement: str = "node_local"
    autoscale: RayAutoscaleConfig = RayAutoscaleConfig()


@dataclass(frozen=True)
class CameraConfig:
    """One camera registry record (``camera.schema.json``)."""

    schema_version: int
    camera_id: str
    url: str
    kind: str
    fps: float | None
    enabled: bool
    policy_id: str
    zones: tuple[dict[str, Any], ...]
    codec: str
    loop: bool
    realtime: bool
    credentials_env: str | None
    labels: dict[str, str]
    notice: dict[str, str] = dataclasses.field(default_factory=dict)  # purpose, scope, contact


@dataclass(frozen=True)
class IngestConfig:
    chunk_seconds: float
    max_inflight_chunks: int
    max_inflight_per_camera: int
    jpeg_quality: int
    consumer_group: str
    reconnect_initial_s: float
    reconnect_max_s: float
    status_interval_s: float
    cameras: tuple[CameraConfig, ...]


@dataclass(frozen=True)
class ProcessConfig:
    consumer_group: str
    max_inflight_chunks: int
    max_inflight_per_partition: int
    detect_every: int
    classes: tuple[str, ...]
    style: str
    detector_timeout_s: float
    outage_retries: int
    drain_timeout_s: float
    status_interval_s: float
    policy_id: str
    policy_version: int
    model_dir: str | None
    zones: dict[str, Any] | None
    crf: int
    preset: str
    face_model: str
    face_max_side: int | None
    text_max_side: int | None
    precision: str
    text_full_min_side: int | None = None
    small_frame_side: int | None = 320
    small_frame_centerface_precision: str = "bf16"
    text_full_every: int = 2
    text_full_precision: str = "bf16"
    text_dark_precision: str = "fp32"


@dataclass(frozen=True)
class SinkConfig:
    consumer_group: str
    segment_seconds: float
    idle_flush_s: float
    max_open_segments: int
    status_interval_s: float
    max_buffered_bytes: int | None = 268435456
    spool_dir: str | None = None


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on input size (``limits`` in config.schema.json); see :mod:`schemas.safety`."""

    max_pixels_per_frame: int = 16777216
    max_frames_per_chunk: int = 600
    max_message_bytes: int = 33554432
    max_decoded_bytes_per_chunk: int = 1610612736


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool
    host: str
    port: int
    endpoint: bool = True
    startup_budget_s: float = 900.0


@dataclass(frozen=True)
class OidcConfig:
    issuer: str | None
    client_id: str | None
    client_secret_env: str
    client_secret_file: str | None
    scope: str
    roles_claim: str
    username_claim: str


@dataclass(frozen=True)
class ConsoleConfig:
    """``veilstream console``: where it listens, who may sign in, how sessions are kept."""

    host: str
    port: int
    public_url: str | None
    users_file: str | None
    session_secret_env: str
    session_secret_file: str | None
    secure_cookies: bool
    session_max_age_s: int
    share_ttl_s: int
    work_dir: str | None
    oidc: OidcConfig
    s3_credentials: dict[str, Any]  # role -> {access_key_env|file, secret_key_env|file}


@dataclass(frozen=True)
class PipelineConfig:
    schema_version: int
    policies_dir: str | None
    kafka: KafkaConfig
    object_store: ObjectStoreConfig
    raw_vault: RawVaultConfig
    ray: RayConfig
    ingest: IngestConfig
    process: ProcessConfig
    sink: SinkConfig
    metrics: MetricsConfig
    console: ConsoleConfig
    limits: LimitsConfig = LimitsConfig()


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    """Dataclass ``cls`` from an already validated, defaults-filled mapping."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint, value = hints[f.name], data.get(f.name)
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = _build(hint, value)  # type: ignore[arg-type]
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            (item,) = typing.get_args(hint)[:1]
            value = tuple(_build(item, v) if dataclasses.is_dataclass(item) else v for v in value)  # type: ignore[arg-type]
        elif isinstance(hint, types.UnionType) and float in typing.get_args(hint) and isinstance(value, int) \
                and not isinstance(value, bool):
            value = float(value)
        elif hint is float and isinstance(value, int):
            value = float(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _validated(name: str, mapping: Any, what: str) -> Any:
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{what}: expected a mapping at the top level, got {type(mapping).__name__}")
    filled = fill_defaults(name, dict(mapping))
    found = problems(name, filled)
    if found:
        n = len(found)
        raise ConfigError(f"{what}: {n} problem{'s' if n > 1 else ''}:\n  " + "\n  ".join(found))
    return filled


def parse_config(mapping: Mapping[str, Any] | None) -> PipelineConfig:
    """Validate a config mapping and return the typed, defaults-filled config.

    Pure: no files, no environment. Unknown keys are errors.

    Raises:
        ConfigError: listing every problem at once, one per line, each with its dotted
            path (``process.detect_every: expected integer >= 1, got 'x'``).
    """
    filled = _validated("config", mapping, "invalid config")
    creds = [msg for i, c in enumerate(filled["ingest"]["cameras"])
             if (msg := url_credentials_problem(c["url"], f"ingest.cameras[{i}].url"))]
    if creds:
        raise ConfigError(f"invalid config: {len(creds)} problem(s):\n  " + "\n  ".join(creds))
    ray, auto = filled["ray"], filled["ray"]["autoscale"]
    lo = auto["min_consumers"] if auto["min_consumers"] is not None else ray["consumers"]
    hi = auto["max_consumers"] if auto["max_consumers"] is not None else ray["consumers"]
    if ray["consumers"] >= 1 and not lo <= ray["consumers"] <= hi:
        raise ConfigError(f"invalid config: 1 problem:\n  ray.autoscale: ray.consumers ({ray['consumers']}) starts the "
                          f"job and must lie within [min_consumers {lo}, max_consumers {hi}]")
    owned = [f"kafka.producer_settings.{k}: {why}" for k in filled["kafka"]["producer_settings"]
             if (why := producer_setting_problem(k))]
    if owned:
        n = len(owned)
        raise ConfigError(f"invalid config: {n} problem{'s' if n > 1 else ''}:\n  " + "\n  ".join(owned))
    ids = [c.get("camera_id") for c in filled["ingest"]["cameras"]]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError("invalid config: 1 problem:\n  ingest.cameras: duplicate camera_id "
                          + ", ".join(map(repr, dupes)))
    return _build(PipelineConfig, filled)  # type: ignore[no-any-return]


def parse_camera(mapping: Mapping[str, Any]) -> CameraConfig:
    """One camera registry record (defaults filled) or ``ConfigError`` naming every problem.

    A URL carrying ``user:password@`` is refused (credentials belong in ``credentials_env``)."""
    filled = _validated("camera", mapping, "invalid camera record")
    problem = url_credentials_problem(filled["url"])
    if problem:
        raise ConfigError(f"invalid camera record {filled['camera_id']!r}: {problem}")
    return _build(CameraConfig, filled)  # type: ignore[no-any-return]


def load_config(path: str | os.PathLike[str]) -> PipelineConfig:
    """Read a YAML config file and :func:`parse_config` it.

    Raises:
        ConfigError: file missing/unreadable, invalid YAML (with line and column), or
            invalid content (every problem at once).
    """
    p = Path(path)
    data = read_yaml(p, "config file")
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"config file {str(p)!r}: {exc}") from None


def config_to_dict(cfg: Any) -> Any:
    """Plain JSON/YAML-safe data (lists, dicts) of a config dataclass; ``parse_config``
    of the result gives back an equal config."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple | list):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    return cfg
