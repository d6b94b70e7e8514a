"""The raw sink's part of the Helm chart (templates/rawsink.yaml) and of the kustomize base:
off by default, validated strictly like every other manifest, hardened like the workers, its own
least-privilege object-store keys, the master key as a mounted Secret file or KMS settings, egress
to Kafka + object store (+ KMS) only."""

from __future__ import annotations

import copy

import pytest
import yaml

from schemas.config import parse_config
from tests.unit.test_deploy import _kustomized, by_kind, one, render, render_error, validate_all
from tests.unit.test_deploy import test_containers_are_hardened as containers_hardened

LOCAL = {"rawSink": {"enabled": True, "rawTopicRetentionMs": 7200000}}
KMS = {"objectStore": {"workloadIdentity": {"enabled": True}},
       "rawSink": {"enabled": True, "serviceAccount": {"annotations": {
                       "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/veil-raw-sink"}},
                   "keyProvider": {"type": "aws-kms", "kms": {
                       "keyId": "alias/veil-raw", "region": "ap-northeast-2",
                       "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}}}}


def _raw(docs):
    return [d for d in docs if "rawsink" in d["metadata"]["name"]]


def _container(docs):
    dep = one(docs, "Deployment", "-rawsink")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, c


def _config(docs):
    return parse_config(yaml.safe_load(one(docs, "ConfigMap", "-rawsink-config")["data"]["config.yaml"]))


@pytest.fixture(scope="module")
def local_docs():
    return render(copy.deepcopy(LOCAL))


@pytest.fixture(scope="module")
def kms_docs():
    return render(copy.deepcopy(KMS))


def test_raw_sink_off_by_default():
    docs = render()
    assert not _raw(docs) and not [d for d in docs if "raw-sink" in str(d.get("spec", ""))]


@pytest.mark.parametrize("which", ["local", "kms"])
def test_raw_sink_manifests_validate_and_are_hardened(which, local_docs, kms_docs):
    docs = copy.deepcopy(local_docs if which == "local" else kms_docs)
    raw = _raw(docs)
    assert {d["kind"] for d in raw} == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                                        "NetworkPolicy", "ServiceAccount"}
    assert not validate_all(raw)
    containers_hardened(docs)
    dep, c = _container(docs)
    assert c["command"] == ["veilstream"] and c["args"] == ["raw-sink", "--config", "/etc/veilstream/config.yaml"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    labels = dep["spec"]["template"]["metadata"]["labels"]
    pdb = one(docs, "PodDisruptionBudget", "-rawsink")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    others = [d for d in by_kind(docs, "Deployment") if d is not dep]
    assert not any(pdb["spec"]["selector"]["matchLabels"].items() <= o["spec"]["template"]["metadata"]["labels"].items()
                   for o in others)
    sa = one(docs, "ServiceAccount", "-rawsink")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert not by_kind(raw, "Secret")  # secrets only referenced


def test_local_key_provider_mounts_the_master_key_and_uses_the_raw_sinks_own_keys(local_docs):
    dep, c = _container(local_docs)
    env = {e["name"]: e for e in c["env"]}
    # least privilege: the raw-sink role's own Secret, not the redacted sink's objectStore.existingSecret
    assert env["VEIL_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "veilstream-raw-sink-object-store"
    assert env["VEIL_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "veilstream-raw-sink-object-store"
    assert not [n for n in env if n.startswith("AWS_")]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/veilstream/raw-vault"]["readOnly"] is True
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    secret = vols[mounts["/etc/veilstream/raw-vault"]["name"]]["secret"]
    assert secret["secretName"] == "veilstream-raw-vault-key" and secret["defaultMode"] == 0o400
    cfg = _config(local_docs)
    assert cfg.raw_vault.key_provider == "local" and cfg.raw_vault.key_file == "/etc/veilstream/raw-vault/master.key"
    assert cfg.raw_vault.consumer_group == "veil-raw-sink"
    assert cfg.kafka.raw_retention_ms == 7200000  # the raw topic's retention, passed through
    assert cfg.object_store.raw_bucket == "veil-raw"
    # the other workers hold no raw-vault settings; the topics Job sets the raw topic's retention
    for suffix in ("-veilstream-config", "-topics-config"):
        other = parse_config(yaml.safe_load(one(local_docs, "ConfigMap", suffix)["data"]["config.yaml"]))
        assert other.raw_vault.key_file is None and other.kafka.raw_retention_ms == 7200000
    assert parse_config(yaml.safe_load(one(render(), "ConfigMap", "-topics-config")["data"]["config.yaml"])
                        ).kafka.raw_retention_ms == 21600000


def test_egress_is_kafka_and_object_store_only_plus_kms(local_docs, kms_docs):
    def ports(rule):
        return {p["port"] for p in rule["ports"]}

    np = one(local_docs, "NetworkPolicy", "-rawsink-egress")
    assert np["spec"]["policyTypes"] == ["Egress"]
    assert [ports(r) for r in np["spec"]["egress"]] == [{9092, 9093}, {9000, 443}]
    np = one(kms_docs, "NetworkPolicy", "-rawsink-egress")
    rules = np["spec"]["egress"]
    assert [ports(r) for r in rules] == [{9092, 9093}, {9000, 443}, {443}]
    assert rules[2]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    # the release's default-deny still selects the raw sink's pods
    deny = one(kms_docs, "NetworkPolicy", "-default-deny")
    _, _c = _container(kms_docs)
    labels = one(kms_docs, "Deployment", "-rawsink")["spec"]["template"]["metadata"]["labels"]
    assert deny["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_kms_with_workload_identity_has_no_static_keys(kms_docs):
    dep, c = _container(kms_docs)
    names = {e["name"] for e in c["env"]}
    assert not {"VEIL_S3_ACCESS_KEY", "VEIL_S3_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & names
    assert not any(v.get("secret") for v in dep["spec"]["template"]["spec"]["volumes"])
    sa = one(kms_docs, "ServiceAccount", "-rawsink")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/veil-raw-sink"}
    cfg = _config(kms_docs)
    assert (cfg.raw_vault.key_provider, cfg.raw_vault.kms_key_id, cfg.raw_vault.kms_region) == (
        "aws-kms", "alias/veil-raw", "ap-northeast-2")
    assert cfg.raw_vault.key_file is None and cfg.object_store.credentials == "web_identity"
    from pipeline.governance.vault import AwsKmsKeyProvider, key_provider_from_config

    assert isinstance(key_provider_from_config(cfg.raw_vault), AwsKmsKeyProvider)


def test_kms_static_keys_come_from_an_existing_secret():
    values = copy.deepcopy(KMS)
    values["rawSink"]["keyProvider"]["kms"].update(workloadIdentity=False, existingSecret="kms-keys")
    _, c = _container(render(values))
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "kms-keys", "key": "aws-access-key-id"}


def test_raw_sink_values_are_checked():
    bad = copy.deepcopy(KMS)
    bad["rawSink"]["keyProvider"]["kms"]["keyId"] = ""
    bad["rawSink"]["keyProvider"]["type"] = "aws-kms"
    bad["rawSink"]["rawTopicRetentionMs"] = 5
    msg = render_error(bad, "HelmValuesError")
    assert "/rawSink/keyProvider/kms/keyId" in msg and "/rawSink/rawTopicRetentionMs" in msg, msg
    bad = copy.deepcopy(KMS)
    bad["rawSink"]["keyProvider"]["kms"]["workloadIdentity"] = False
    msg = render_error(bad, "HelmRenderError")
    assert "rawSink.keyProvider.kms.existingSecret" in msg, msg


def test_kustomize_base_has_the_raw_sink():
    docs = list(_kustomized())
    raw = _raw(docs)
    assert {d["kind"] for d in raw} >= {"Deployment", "PodDisruptionBudget", "NetworkPolicy"}
    assert not validate_all(raw)
    containers_hardened(raw)
    dep, c = _container(docs)
    assert dep["spec"]["replicas"] == 0  # off until a policy keeps raw footage (the overlay scales it up)
    assert c["args"] == ["raw-sink", "--config", "/etc/veilstream/config.yaml"]
    env = {e["name"]: e for e in c["env"]}
    assert env["VEIL_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "veilstream-raw-sink-object-store"
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    cm = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == vols["config"]["configMap"]["name"]]
    cfg = parse_config(yaml.safe_load(cm[0]["data"]["rawsink.yaml"]))
    assert cfg.raw_vault.key_file == "/etc/veilstream/raw-vault/master.key"
    np = one(docs, "NetworkPolicy", "-rawsink-egress")
    assert np["spec"]["podSelector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("values", [LOCAL, KMS], ids=["local", "kms"])
def test_helm_lint_passes_strict_with_the_raw_sink(values):
    from tests.unit.test_deploy import CHART, KUBE_VERSION, NAMESPACE, _import

    report = _import("helm_python").lint(str(CHART), copy.deepcopy(values), strict=True, namespace=NAMESPACE,
                                         kube_version=f"v{KUBE_VERSION}")
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert not bad and not report["errors"], bad or report["errors"]


def test_raw_sink_has_its_own_kafka_user_reading_only_the_raw_topic():
    from tests.unit.test_strimzi import acl_table, docs

    users = {u["metadata"]["name"]: u for u in docs("kafkausers.yaml")}
    acls = acl_table(users["veilstream-rawsink"])
    assert {(t, n, op) for t, n, op in acls} == {("topic", "veil.chunks.raw", "Read"),
                                                 ("topic", "veil.chunks.raw", "Describe"),
                                                 ("group", "veil-raw-sink", "Read")}
    values = copy.deepcopy(LOCAL)
    values["kafka"] = {"security": {"protocol": "SSL", "clientCertSecret": "veilstream-operator",
                                    "users": {"rawsink": {"clientCertSecret": "veilstream-rawsink"}}}}
    dep, _c = _container(render(values))
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["kafka-client"]["secret"]["secretName"] == "veilstream-rawsink"
