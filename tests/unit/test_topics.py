"""Topic provisioning (`veilstream topics apply|check`): the specs, the drift, the convergence."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from pipeline.topics import TopicSpec, apply_topics, desired_topics, topic_drift
from schemas.config import parse_config


def cfg(**kafka):
    return parse_config({"kafka": kafka})


def test_desired_topics_registry_compacted_chunks_sized_and_retained():
    specs = {s.role: s for s in desired_topics(cfg(partitions=12, message_max_bytes=33554432,
                                                   raw_retention_ms=6 * 3_600_000,
                                                   provisioning={"partitions": {"cameras": 4},
                                                                 "retention_hours": {"audit": -1},
                                                                 "min_insync_replicas": 2,
                                                                 "replication_factor": 3}))}
    assert [s.name for s in specs.values()] == ["veil.chunks.raw", "veil.chunks.redacted", "veil.dlq",
                                                "veil.cameras", "veil.audit"]
    cams = specs["cameras"]
    assert cams.config["cleanup.policy"] == "compact" and "retention.ms" not in cams.config
    assert cams.partitions == 4 and specs["raw"].partitions == 12
    assert specs["raw"].config == {"cleanup.policy": "delete", "retention.ms": str(6 * 3_600_000),
                                   "max.message.bytes": "33554432", "min.insync.replicas": "2"}
    assert specs["audit"].config["retention.ms"] == "-1"
    assert specs["redacted"].config["retention.ms"] == str(72 * 3_600_000)  # the default
    assert {s.replication_factor for s in specs.values()} == {3}


SPEC = TopicSpec("raw", "r", 6, -1, {"cleanup.policy": "delete", "max.message.bytes": "100"})


@pytest.mark.parametrize(("partitions", "configs", "drift"), [
    (6, {"cleanup.policy": "delete", "max.message.bytes": "100"}, []),
    (12, {"cleanup.policy": "delete", "max.message.bytes": "100", "other": "x"}, []),  # more is not drift
    (1, {"cleanup.policy": "delete", "max.message.bytes": "100"}, [("partitions", "6", "1")]),
    (6, {"cleanup.policy": "compact"}, [("cleanup.policy", "delete", "compact"),
                                        ("max.message.bytes", "100", None)]),  # not reported: drift
])
def test_topic_drift(partitions, configs, drift):
    assert [(d.key, d.want, d.have) for d in topic_drift(SPEC, partitions, configs)] == drift


class FakeAdmin:
    """In-memory broker with the gaps of tansu when asked: no CreatePartitions, no alter."""

    def __init__(self, topics=None, *, alter_error=None, partitions_error=None):
        self.topics: dict[str, tuple[int, dict[str, str]]] = dict(topics or {})
        self.alter_error, self.partitions_error = alter_error, partitions_error
        self.calls: list[str] = []

    def partitions(self):
        return {n: p for n, (p, _) in self.topics.items()}

    def configs(self, names):
        return {n: dict(self.topics[n][1]) for n in names}

    def create(self, specs):
        for s in specs:
            self.calls.append(f"create {s.name}")
            self.topics[s.name] = (s.partitions, dict(s.config))
        return {s.name: None for s in specs}

    def alter(self, name, config: Mapping[str, str]):
        self.calls.append(f"alter {name} {sorted(config)}")
        if self.alter_error:
            return self.alter_error
        self.topics[name][1].update(config)
        return None

    def add_partitions(self, name, total):
        self.calls.append(f"partitions {name} {total}")
        if self.partitions_error:
            return self.partitions_error
        self.topics[name] = (total, self.topics[name][1])
        return None


def test_apply_creates_every_missing_topic_then_finds_nothing_to_do():
    c, admin = cfg(), FakeAdmin()
    first = apply_topics(c, admin)
    assert [s.name for s in first.created] == [s.name for s in desired_topics(c)] and first.ok
    second = apply_topics(c, admin)
    assert not second.created and not second.drift and len(second.unchanged) == 5 and second.ok


def test_apply_fixes_config_drift_and_reports_partition_drift_it_may_not_fix():
    c = cfg()
    admin = FakeAdmin()
    apply_topics(c, admin)
    admin.topics["veil.cameras"] = (1, {"cleanup.policy": "delete"})  # auto-created by a client
    report = apply_topics(c, admin)
    lines = report.lines()
    assert "drift veil.cameras cleanup.policy: want compact, have delete (fixed)" in lines
    assert any(ln.startswith("drift veil.cameras max.message.bytes: want 16777216, have not set on the topic (fixed)")
               for ln in lines)
    assert any(ln.startswith("drift veil.cameras partitions: want 6, have 1 (NOT fixed: adding partitions")
               for ln in lines)
    assert not report.ok and admin.topics["veil.cameras"][1]["cleanup.policy"] == "compact"
    assert apply_topics(c, admin, add_partitions=True).ok and admin.topics["veil.cameras"][0] == 6


def test_check_changes_nothing_and_broker_refusals_stay_drift():
    c = cfg()
    admin = FakeAdmin()
    check = apply_topics(c, admin, dry_run=True)
    assert not check.ok and admin.calls == [] and len(check.drift) == 5
    apply_topics(c, admin)
    admin.topics["veil.dlq"] = (2, {"cleanup.policy": "compact"})
    admin.alter_error, admin.partitions_error = "POLICY_VIOLATION", "CreatePartitions not supported"
    report = apply_topics(c, admin, add_partitions=True)
    bad = [d.line() for d in report.drift if not d.fixed]
    assert "drift veil.dlq cleanup.policy: want delete, have compact (NOT fixed: POLICY_VIOLATION)" in bad
    assert "drift veil.dlq partitions: want 6, have 2 (NOT fixed: CreatePartitions not supported)" in bad


def test_more_partitions_than_asked_is_a_note_not_a_failure():
    c, admin = cfg(), FakeAdmin()
    apply_topics(c, admin)
    admin.topics["veil.chunks.raw"] = (24, admin.topics["veil.chunks.raw"][1])
    report = apply_topics(c, admin)
    assert report.ok and any("partitions never shrink" in n for n in report.notes)
