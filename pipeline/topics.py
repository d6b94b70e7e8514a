"""``veilstream topics apply``: create or check every topic the pipeline needs.

Auto-created topics would be wrong in three ways: the camera registry would get a delete
policy (cameras vanish after retention), every topic one partition (one pod does all the
work) and the broker's 1 MiB message cap (chunks are larger). This module derives the five
topics from the config (:func:`desired_topics`, pure), compares them with what the broker
reports (:func:`topic_drift`, pure) and converges (:func:`apply_topics`):

* a missing topic is created with its partitions, replication and configs;
* a config that differs (or that the broker does not report as set) is changed with
  IncrementalAlterConfigs, unless ``dry_run``;
* fewer partitions than asked are added only with ``add_partitions`` (more partitions move
  keys to other partitions: per-camera order breaks once, at the moment of the change);
  more partitions than asked are reported, never removed (Kafka cannot);
* whatever could not be fixed stays in the report as drift, and the command exits 1.

Brokers differ in what they report: Apache Kafka describes every config with its source;
tansu (the local broker) reports only configs set on the topic and has no CreatePartitions.
A key the broker does not report counts as drift ("not set on the topic"), so the report
never claims a match it could not see.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.errors import VeilStreamError

logger = logging.getLogger(__name__)

ROLES = ("raw", "redacted", "dlq", "cameras", "audit")
COMPACTED = frozenset({"cameras"})
HOUR_MS = 3_600_000


class TopicsError(VeilStreamError):
    """The broker refused or could not answer an admin request."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the pipeline needs it."""

    role: str
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


@dataclass(frozen=True)
class Drift:
    """One difference between a spec and the broker."""

    topic: str
    key: str  # "partitions" or a topic config name
    want: str
    have: str | None  # None: not reported by the broker
    fixable: bool  # something `apply` may change
    fixed: bool = False
    error: str | None = None

    def line(self) -> str:
        have = "not set on the topic" if self.have is None else self.have
        state = "fixed" if self.fixed else (f"NOT fixed: {self.error}" if self.error else "NOT fixed")
        return f"drift {self.topic} {self.key}: want {self.want}, have {have} ({state})"


@dataclass
class TopicsReport:
    created: list[TopicSpec] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.fixed for d in self.drift)

    def lines(self) -> list[str]:
        out = [f"created {s.name} partitions={s.partitions} "
               + " ".join(f"{k}={v}" for k, v in sorted(s.config.items())) for s in self.created]
        out += [f"ok {name}" for name in self.unchanged]
        out += [d.line() for d in self.drift]
        out += [f"note {n}" for n in self.notes]
        return out


def desired_topics(cfg: Any) -> list[TopicSpec]:
    """The five topics of ``cfg.kafka`` (a ``PipelineConfig``), in role order."""
    k = cfg.kafka
    prov = k.provisioning
    specs = []
    for role in ROLES:
        name = getattr(k.topics, role)
        conf = {"max.message.bytes": str(k.message_max_bytes)}
        if role in COMPACTED:
            conf["cleanup.policy"] = "compact"
        else:
            conf["cleanup.policy"] = "delete"
            if role == "raw":  # unredacted footage: short, set next to the raw vault's own retention
                conf["retention.ms"] = str(k.raw_retention_ms)
            else:
                hours = getattr(prov.retention_hours, role)
                conf["retention.ms"] = str(-1 if hours < 0 else hours * HOUR_MS)
        if prov.min_insync_replicas is not None:
            conf["min.insync.replicas"] = str(prov.min_insync_replicas)
        partitions = getattr(prov.partitions, role) or k.partitions
        specs.append(TopicSpec(role, name, int(partitions), int(prov.replication_factor), conf))
    return specs


def topic_drift(spec: TopicSpec, partitions: int, configs: Mapping[str, str]) -> list[Drift]:
    """Differences between ``spec`` and a topic with ``partitions`` and the reported ``configs``."""
    out = []
    if partitions < spec.partitions:
        out.append(Drift(spec.name, "partitions", str(spec.partitions), str(partitions), fixable=True))
    for key, want in sorted(spec.config.items()):
        have = configs.get(key)
        if have != want:
            out.append(Drift(spec.name, key, want, have, fixable=True))
    return out


class TopicAdmin(Protocol):
    """What :func:`apply_topics` needs from a Kafka admin client."""

    def partitions(self) -> dict[str, int]: ...
    def configs(self, names: list[str]) -> dict[str, dict[str, str]]: ...
    def create(self, specs: list[TopicSpec]) -> dict[str, str | None]: ...
    def alter(self, name: str, config: Mapping[str, str]) -> str | None: ...
    def add_partitions(self, name: str, total: int) -> str | None: ...


def apply_topics(cfg: Any, admin: TopicAdmin, *, dry_run: bool = False,
                 add_partitions: bool = False) -> TopicsReport:
    """Create missing topics, fix config drift, report what is left (see the module doc)."""
    report = TopicsReport()
    specs = desired_topics(cfg)
    existing = admin.partitions()
    missing = [s for s in specs if s.name not in existing]
    if missing and not dry_run:
        errors = admin.create(missing)
        for s in missing:
            if errors.get(s.name):
                report.drift.append(Drift(s.name, "exists", "yes", "no", fixable=True, error=errors[s.name]))
            else:
                report.created.append(s)
    elif missing:
        report.drift += [Drift(s.name, "exists", "yes", "no", fixable=True) for s in missing]
    present = [s for s in specs if s.name in existing]
    configs = admin.configs([s.name for s in present]) if present else {}
    for s in present:
        have_parts = existing[s.name]
        if have_parts > s.partitions:
            report.notes.append(f"{s.name} has {have_parts} partitions, the config asks {s.partitions}: partitions "
                                f"never shrink; set kafka.provisioning.partitions.{s.role}: {have_parts}")
        drift = topic_drift(s, have_parts, configs.get(s.name, {}))
        if not drift:
            report.unchanged.append(s.name)
            continue
        conf_changes = {d.key: d.want for d in drift if d.key != "partitions"}
        conf_error = None
        if conf_changes and not dry_run:
            conf_error = admin.alter(s.name, conf_changes)
        for d in drift:
            if d.key == "partitions":
                if dry_run:
                    report.drift.append(d)
                elif not add_partitions:
                    report.drift.append(_with(d, error="adding partitions moves camera keys to other "
                                                       "partitions; rerun with --add-partitions"))
                else:
                    err = admin.add_partitions(s.name, s.partitions)
                    report.drift.append(_with(d, fixed=err is None, error=err))
            elif dry_run:
                report.drift.append(d)
            else:
                report.drift.append(_with(d, fixed=conf_error is None, error=conf_error))
    return report


def _with(d: Drift, *, fixed: bool = False, error: str | None = None) -> Drift:
    return Drift(d.topic, d.key, d.want, d.have, d.fixable, fixed, error)


class KafkaTopicAdmin:
    """:class:`TopicAdmin` on confluent-kafka's ``AdminClient``."""

    def __init__(self, bootstrap: str, extra: dict[str, Any] | None = None, timeout_s: float = 30.0) -> None:
        from pipeline.kafka import admin_client

        self._a = admin_client(bootstrap, extra)
        self.timeout_s = timeout_s

    def partitions(self) -> dict[str, int]:
        try:
            md = self._a.list_topics(timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - KafkaException: broker unreachable, say so in one line
            raise TopicsError(f"cannot list topics: {_reason(exc)}") from None
        return {name: len(t.partitions) for name, t in md.topics.items() if not name.startswith("__")}

    def configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        from confluent_kafka.admin import ConfigResource

        futures = self._a.describe_configs([ConfigResource("topic", n) for n in names],
                                           request_timeout=self.timeout_s)
        out: dict[str, dict[str, str]] = {}
        for res, fut in futures.items():
            try:
                entries = fut.result(self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - reported as "not set", with the reason logged
                logger.warning("describe_configs topic=%s error=%s", res.name, _reason(exc))
                entries = {}
            out[res.name] = {k: v.value for k, v in entries.items() if v.value is not None}
        return out

    def create(self, specs: list[TopicSpec]) -> dict[str, str | None]:
        from confluent_kafka.admin import NewTopic

        new = [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor,
                        config=dict(s.config)) for s in specs]
        futures = self._a.create_topics(new, operation_timeout=self.timeout_s, request_timeout=self.timeout_s)
        return {name: self._outcome(fut) for name, fut in futures.items()}

    def alter(self, name: str, config: Mapping[str, str]) -> str | None:
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

        res = ConfigResource("topic", name, incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()])
        (fut,) = self._a.incremental_alter_configs([res], request_timeout=self.timeout_s).values()
        return self._outcome(fut)

    def add_partitions(self, name: str, total: int) -> str | None:
        from confluent_kafka.admin import NewPartitions

        (fut,) = self._a.create_partitions([NewPartitions(name, total)], request_timeout=self.timeout_s).values()
        return self._outcome(fut)

    def _outcome(self, fut: Any) -> str | None:
        try:
            fut.result(self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - the broker's refusal becomes the report's reason
            return _reason(exc)
        return None


def _reason(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else exc
    text = getattr(err, "str", None)
    return str(text() if callable(text) else err)
