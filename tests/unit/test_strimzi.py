"""Strimzi examples (k8s/strimzi): KafkaTopics equal to what `veilstream topics apply` creates from
the chart's config, KafkaUsers with only the ACLs each stage needs, and the chart wiring a
per-stage user into each component."""

from __future__ import annotations

from pathlib import Path

import yaml
from test_deploy import by_kind, config_of, deployment, render, validate_all

from pipeline.topics import desired_topics
from schemas.config import parse_config

STRIMZI = Path(__file__).resolve().parents[2] / "k8s" / "strimzi"


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((STRIMZI / name).read_text()) if d]


def test_kafka_topics_match_topics_apply():
    cfg = config_of(render())
    cfg["kafka"]["provisioning"] = {"replication_factor": 3, "min_insync_replicas": 2}
    want = {s.name: s for s in desired_topics(parse_config(cfg))}
    topics = docs("kafkatopics.yaml")
    assert {t["metadata"]["name"] for t in topics} == set(want)
    for t in topics:
        assert t["apiVersion"] == "kafka.strimzi.io/v1beta2" and t["metadata"]["labels"]["strimzi.io/cluster"]
        s = want[t["metadata"]["name"]]
        assert t["spec"] == {"partitions": s.partitions, "replicas": s.replication_factor, "config": dict(s.config)}


def acl_table(user: dict) -> set[tuple[str, str, str]]:
    out = set()
    for acl in user["spec"]["authorization"]["acls"]:
        r = acl["resource"]
        for op in acl["operations"]:
            out.add((r["type"], r.get("name", "*"), op))
    return out


def test_kafka_users_hold_only_what_each_stage_needs():
    cfg = parse_config(config_of(render()))
    t, g = cfg.kafka.topics, {"ingest": cfg.ingest.consumer_group, "process": cfg.process.consumer_group,
                              "sink": cfg.sink.consumer_group}
    users = {u["metadata"]["name"]: u for u in docs("kafkausers.yaml")}
    reads = {"ingest": {t.cameras}, "process": {t.raw}, "sink": {t.redacted}}
    writes = {"ingest": {t.raw}, "process": {t.redacted, t.dlq}, "sink": {t.dlq, t.audit}}
    for stage in ("ingest", "process", "sink"):
        acls = acl_table(users[f"veilstream-{stage}"])
        assert {n for typ, n, op in acls if typ == "topic" and op == "Read"} == reads[stage], stage
        assert {n for typ, n, op in acls if typ == "topic" and op == "Write"} == writes[stage], stage
        assert {n for typ, n, op in acls if typ == "group"} == {g[stage]}, stage
        assert not {op for _t, _n, op in acls} & {"Create", "Alter", "AlterConfigs", "Delete", "All"}, stage
        assert users[f"veilstream-{stage}"]["spec"]["authentication"]["type"] in ("tls", "scram-sha-512")
    admin = acl_table(users["veilstream-topics"])
    assert {op for _t, _n, op in admin} == {"Create", "Describe", "DescribeConfigs", "AlterConfigs", "Alter"}
    assert not {op for _t, _n, op in admin} & {"Read", "Write"}  # the hook never touches footage


def test_chart_gives_each_stage_its_own_kafka_user():
    values = {"kafka": {"bootstrapServers": "city-kafka-bootstrap.kafka.svc:9093", "security": {
        "protocol": "SSL", "caSecret": "city-kafka-cluster-ca-cert", "clientCertSecret": "veilstream-operator",
        "users": {s: {"clientCertSecret": f"veilstream-{s}"} for s in ("ingest", "process", "sink", "topics")}}},
        "autoscaling": {"enabled": True}}
    rendered = render(values)
    assert not validate_all(rendered), validate_all(rendered)
    for stage in ("ingest", "process", "sink"):
        vols = {v["name"]: v for v in deployment(rendered, stage)["spec"]["template"]["spec"]["volumes"]}
        assert vols["kafka-client"]["secret"]["secretName"] == f"veilstream-{stage}"
    (job,) = by_kind(rendered, "Job")
    vols = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert vols["kafka-client"]["secret"]["secretName"] == "veilstream-topics"
    # process runs as a Ray job by default: KEDA does not scale it, so no Kafka trigger auth exists
    assert by_kind(rendered, "TriggerAuthentication") == []
    # in legacy Ray Client mode KEDA reads the raw-topic lag with the process identity
    legacy = render({**values, "ray": {"legacyClient": True}})
    (auth,) = by_kind(legacy, "TriggerAuthentication")
    assert {r["name"] for r in auth["spec"]["secretTargetRef"] if r["parameter"] in ("cert", "key")} == {
        "veilstream-process"}
