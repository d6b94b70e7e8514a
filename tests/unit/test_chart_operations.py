"""The chart as an SRE runs it: start-up and probes, Ray sizing, upgrades, topics hook, monitoring.

Rendering and validation helpers come from test_deploy.py (same directory).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy import (
    CHART,
    CI_SETS,
    NAMESPACE,
    RELEASE,
    WORKERS,
    _import,
    _rendered,
    by_kind,
    config_of,
    deployment,
    one,
    pod_specs,
    render,
    validate_all,
)

GI = 1024 ** 3


def chart_sets() -> list[str]:
    return ["default", *CI_SETS]


def bytes_of(q: str) -> int:
    m = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti)?", q)
    assert m, q
    return int(m.group(1)) * {None: 1, "Ki": 1024, "Mi": 1024 ** 2, "Gi": GI, "Ti": 1024 ** 4}[m.group(2)]


# ---------------------------------------------------------------- start-up and probes


@pytest.mark.parametrize("which", chart_sets())
def test_probes_share_the_startup_budget_with_the_config(which):
    docs = list(_rendered(which))
    cfg = config_of(docs)
    budget = cfg["metrics"]["startup_budget_s"]
    assert cfg["metrics"]["enabled"] is True  # the probe server always runs
    for comp in WORKERS:
        (c,) = deployment(docs, comp)["spec"]["template"]["spec"]["containers"]
        sp = c["startupProbe"]
        assert sp["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert sp["periodSeconds"] * sp["failureThreshold"] >= budget  # as long as /healthz stays live
        assert "initialDelaySeconds" not in c["livenessProbe"]  # the startupProbe gates it
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    if which == "city":
        assert budget == 1200  # a GPU node may take this long to join


def test_metrics_off_keeps_the_probes_and_drops_what_reads_metrics():
    docs = render({"metrics": {"enabled": False}})
    assert not validate_all(docs)
    cfg = config_of(docs)
    assert cfg["metrics"]["enabled"] is True and cfg["metrics"]["endpoint"] is False
    for comp in WORKERS:
        (c,) = deployment(docs, comp)["spec"]["template"]["spec"]["containers"]
        assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(c)
        assert any(p["name"] == "metrics" for p in c["ports"])
    assert not [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith(("-ingest-metrics",
                                                                                     "-sink-metrics",
                                                                                     "-process-job-metrics"))]
    (rc,) = by_kind(docs, "RayCluster")  # the process job's driver still serves its probes on the head
    head_ports = rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "process-metrics", "containerPort": 9100, "protocol": "TCP"} in head_ports
    from test_deploy import render_error

    msg = render_error({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True},
                                    "prometheusRule": {"enabled": True}}}, "HelmRenderError")
    assert "metrics.serviceMonitor.enabled: needs metrics.enabled" in msg
    assert "metrics.prometheusRule.enabled: needs metrics.enabled" in msg


# ---------------------------------------------------------------- Ray sizing


@pytest.mark.parametrize("which", chart_sets())
def test_ray_pods_sized_from_their_memory_limit(which):
    docs = list(_rendered(which))
    (rc,) = by_kind(docs, "RayCluster")
    groups = [("head", rc["spec"]["headGroupSpec"])] + [(g["groupName"], g) for g in rc["spec"]["workerGroupSpecs"]]
    for name, g in groups:
        spec = g["template"]["spec"]
        (c,) = spec["containers"]
        limit = bytes_of(c["resources"]["limits"]["memory"])
        vols = {v["name"]: v["emptyDir"] for v in spec["volumes"] if "emptyDir" in v}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        # the object store lives in /dev/shm, which holds the whole memory limit (KubeRay's sizing)
        assert vols["dshm"] == {"medium": "Memory", "sizeLimit": c["resources"]["limits"]["memory"]}, name
        store = int(g["rayStartParams"]["object-store-memory"])
        assert store == int(limit * 0.3) and store < bytes_of(vols["dshm"]["sizeLimit"]), name
        # spilling goes to its own disk volume, counted in ephemeral storage
        assert g["rayStartParams"]["object-spilling-directory"] == "/ray-spill" and mounts["/ray-spill"] == "spill"
        disk = bytes_of(vols["spill"]["sizeLimit"]) + bytes_of(vols["tmp"]["sizeLimit"]) + GI
        assert bytes_of(c["resources"]["requests"]["ephemeral-storage"]) == disk, name
        assert c["resources"]["limits"]["ephemeral-storage"] == c["resources"]["requests"]["ephemeral-storage"]


def test_per_group_env_volumes_scheduling_and_priority():
    docs = list(_rendered("city"))
    (rc,) = by_kind(docs, "RayCluster")
    groups = {g["groupName"]: g["template"]["spec"] for g in rc["spec"]["workerGroupSpecs"]}
    gpu, cpu = groups["gpu-h100"], groups["cpu"]
    assert {"name": "ORT_LOGGING_LEVEL", "value": "2"} in gpu["containers"][0]["env"]
    assert gpu["priorityClassName"] == "veilstream-batch"
    assert gpu["containers"][0]["image"] == "registry.city.example/veilstream/veilstream:0.1.0-gpu"
    assert cpu["containers"][0]["image"] == "registry.city.example/veilstream/veilstream:0.1.0"
    assert cpu["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert rc["spec"]["headGroupSpec"]["template"]["spec"]["priorityClassName"] == "veilstream-critical"
    values = {"ray": {"head": {"volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}}],
                               "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                               "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                                   "nodeSelectorTerms": [{"matchExpressions": [
                                       {"key": "pool", "operator": "In", "values": ["system"]}]}]}}}}}}
    docs = render(values)
    assert not validate_all(docs), validate_all(docs)
    (rc,) = by_kind(docs, "RayCluster")
    head = rc["spec"]["headGroupSpec"]["template"]["spec"]
    assert {"name": "cache", "mountPath": "/cache"} in head["containers"][0]["volumeMounts"]
    assert head["affinity"]["nodeAffinity"]


def test_legacy_ray_client_mode_uses_one_client_port_everywhere():
    docs = render({"ray": {"legacyClient": True, "clientPort": 10002}, "metrics": {"prometheusRule": {"enabled": True}}})
    assert not validate_all(docs)
    (rc,) = by_kind(docs, "RayCluster")
    head = rc["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["ray-client-server-port"] == "10002"  # what Ray listens on
    assert {"name": "client", "containerPort": 10002, "protocol": "TCP"} in head["template"]["spec"]["containers"][0]["ports"]
    assert config_of(docs)["ray"]["address"].endswith(":10002")
    assert "--submit" not in deployment(docs, "process")["spec"]["template"]["spec"]["containers"][0]["args"]
    ray_np = one(docs, "NetworkPolicy", "-allow-ray")["spec"]["ingress"][1]
    assert ray_np["ports"] == [{"port": 10002, "protocol": "TCP"}]
    # no job driver on the head: the process pods' drivers export veil_process_* themselves
    assert "process-metrics" not in {p["name"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert not [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-process-job-metrics")]
    alerts = {r["alert"] for r in one(docs, "PrometheusRule", "-alerts")["spec"]["groups"][0]["rules"]}
    assert "VeilStreamLagGrowing" in alerts and "VeilStreamProcessConsumersDown" not in alerts  # no job here


def test_gcs_fault_tolerance_needs_redis_and_bad_memory_is_reported():
    from test_deploy import render_error

    msg = render_error({"ray": {"gcsFaultTolerance": {"enabled": True},
                                "workerGroups": {"cpu": {"replicas": 1, "minReplicas": 1, "maxReplicas": 1,
                                                         "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                                                       "limits": {"memory": "1.5Gi"}}}}}},
                       "HelmRenderError")
    assert "ray.gcsFaultTolerance.redisAddress: required" in msg
    assert 'ray.workerGroups.cpu.resources.limits.memory: "1.5Gi" must be an integer' in msg


# ---------------------------------------------------------------- upgrades


def test_helm_upgrade_moves_every_pod_template_together():
    """Two releases of the same values that differ only in the image tag: every pod template
    (Deployments, the topics Job, the Ray head and every group) takes the new image, the RayCluster
    recreates its pods on the change, and nothing an autoscaler owns is rendered."""
    helm = _import("helm_python")
    base = yaml.safe_load((CHART / "ci" / "city.yaml").read_text())
    renders = {}
    for tag in ("0.1.0", "0.2.0"):
        values = {**base, "image": {**base["image"], "tag": tag}}
        with helm.Chart.load(str(CHART)) as chart:
            texts = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_upgrade=tag == "0.2.0")
        renders[tag] = texts
    old, new = ({f"{d['kind']}/{d['metadata']['name']}": d for t, text in sorted(r.items())
                 if not t.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d}
                for r in renders.values())
    assert old.keys() == new.keys()

    def templates(docs: dict[str, Any]) -> dict[str, Any]:
        return {where: spec for where, spec in pod_specs(list(docs.values()))}

    t_old, t_new = templates(old), templates(new)
    assert len(t_old) >= 3 + 1 + 1 + 2  # workers, topics Job, head, two groups
    for where, spec in t_new.items():
        images_old = [c["image"] for c in t_old[where]["containers"]]
        images_new = [c["image"] for c in spec["containers"]]
        assert all(i.split(":")[-1].startswith("0.1.0") for i in images_old), where
        assert all(i.split(":")[-1].startswith("0.2.0") for i in images_new), where
        # only the image moved: same config checksum, same everything else
        for a, b in zip(t_old[where]["containers"], spec["containers"]):
            assert {**a, "image": None} == {**b, "image": None}, where
    rc = next(d for d in new.values() if d["kind"] == "RayCluster")
    assert rc["spec"]["upgradeStrategy"] == {"type": "Recreate"}
    assert all("replicas" not in g for g in rc["spec"]["workerGroupSpecs"])  # the Ray autoscaler's
    for comp in ("sink",):  # KEDA's (process is one Ray job submitter: replicas 1)
        assert "replicas" not in next(d for k, d in new.items() if k.endswith(f"Deployment/{RELEASE}-veilstream-{comp}")
                                      or k == f"Deployment/{RELEASE}-veilstream-{comp}")["spec"]
    notes = next(t for p, t in renders["0.2.0"].items() if p.endswith("NOTES.txt"))
    for step in ("1. Topics.", "3. Policies:", "4. Cameras:", "5. Checks:", "veilstream cameras add",
                 "veilstream version", "upgradeStrategy Recreate"):
        assert step in notes, step
    # job mode: veil_process_* come from the job's driver on the Ray head, not from the submitter
    assert f"svc/{RELEASE}-veilstream-process-job-metrics 9100" in notes


# ---------------------------------------------------------------- topics hook


@pytest.mark.parametrize("which", chart_sets())
def test_topics_job_runs_before_install_and_upgrade(which):
    docs = list(_rendered(which))
    (job,) = by_kind(docs, "Job")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
    cm = one(docs, "ConfigMap", "-topics-config")
    assert cm["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(cm["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(ann["helm.sh/hook-weight"])
    spec = job["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["args"][:4] == ["topics", "apply", "--config", "/etc/veilstream/config.yaml"]
    assert spec["restartPolicy"] == "Never" and "serviceAccountName" not in spec  # hooks precede the SA
    vol = {v["name"]: v for v in spec["volumes"]}["config"]
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    from pipeline.topics import desired_topics
    from schemas.config import parse_config

    specs = {s.role: s for s in desired_topics(parse_config(config_of(docs)))}
    assert specs["cameras"].config["cleanup.policy"] == "compact"
    assert int(specs["raw"].config["max.message.bytes"]) >= 16 * 1024 * 1024


# ---------------------------------------------------------------- monitoring


def exported_metric_names() -> set[str]:
    """Every metric the three workers register (the integration test scrapes them for real)."""
    from pipeline.ingest.metrics import IngestMetrics
    from pipeline.metrics import WorkerMetrics
    from pipeline.process.consumers import JobMetrics
    from pipeline.sink.worker import SinkWorker
    from schemas.config import parse_config
    from tests.fakes import InMemoryObjectStore

    registries = [WorkerMetrics("process").registry, JobMetrics(1).registry, IngestMetrics().registry,
                  SinkWorker(parse_config({"metrics": {"enabled": False}}), InMemoryObjectStore(),
                             lambda _r: None).metrics.registry]
    return {m.name for r in registries for m in r.collect()}


def expressions(docs: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for rule in (one(docs, "PrometheusRule", "-alerts")["spec"]["groups"][0]["rules"]):
        out[rule["alert"]] = rule["expr"]
    dash = json.loads(one(docs, "ConfigMap", "-dashboard")["data"]["veilstream.json"])
    for panel in dash["panels"]:
        for t in panel["targets"]:
            out[f"panel {panel['title']} {t['refId']}"] = t["expr"]
    for so in by_kind(docs, "ScaledObject"):
        for t in so["spec"]["triggers"]:
            if t["type"] == "prometheus":
                out[f"ScaledObject/{so['metadata']['name']}"] = t["metadata"]["query"]
    return out


def metric_names(expr: str) -> set[str]:
    """veil_* names in a PromQL expression, histogram series folded to their family."""
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count"))
            and "_seconds_" in n else n for n in re.findall(r"\bveil_[a-z0-9_]+", expr)}


def families(names: set[str]) -> set[str]:
    # prometheus_client names counters without _total in collect(); exposition adds it
    return {n for base in names for n in (base, f"{base}_total")}


@pytest.mark.parametrize("which", ["small", "city"])
def test_alerts_dashboard_and_scaling_name_only_exported_metrics(which):
    docs = list(_rendered(which))
    exported = families(exported_metric_names())
    exprs = expressions(docs)
    alerts = {k for k in exprs if not k.startswith(("panel ", "ScaledObject"))}
    assert alerts == {"VeilStreamLagGrowing", "VeilStreamSinkBacklogGrowing", "VeilStreamFailClosedFrames",
                      "VeilStreamDeadLetters", "VeilStreamDetectorErrors", "VeilStreamSegmentWriteFailures",
                      "VeilStreamLatencySLO", "VeilStreamCamerasFailing", "VeilStreamProcessConsumersDown",
                      "VeilStreamProducerRecreated", "VeilStreamProducerRecreatedRepeatedly"}
    unknown = {k: sorted(metric_names(e) - exported) for k, e in exprs.items() if metric_names(e) - exported}
    assert not unknown, unknown
    assert all(metric_names(e) for e in exprs.values())  # every expression reads a VeilStream metric
    assert all(f'namespace="{NAMESPACE}"' in e for k, e in exprs.items() if not k.startswith("panel "))


@pytest.mark.parametrize("which", ["small", "city"])
def test_producer_recreated_alerts_read_every_stage_that_replaces_its_producer(which):
    """A stage that replaced a fatal Kafka producer (pipeline.kafka.ProducerRenewal) is worth a
    warning; more than 3 replacements in 15 minutes means the new ones fail too (critical)."""
    docs = list(_rendered(which))
    rules = {r["alert"]: r for r in one(docs, "PrometheusRule", "-alerts")["spec"]["groups"][0]["rules"]}
    stages = {"ingest", "process", "sink"}
    # the stages whose metrics hold the counter, read from the code, not from the chart
    registered = {n for n in families(exported_metric_names()) if n.endswith("_producer_recreated_total")}
    assert registered == {f"veil_{s}_producer_recreated_total" for s in stages}
    for name, severity, threshold in [("VeilStreamProducerRecreated", "warning", "> 0"),
                                      ("VeilStreamProducerRecreatedRepeatedly", "critical", "> 3")]:
        rule = rules[name]
        expr = rule["expr"].strip()
        assert metric_names(expr) == registered, expr
        assert rule["labels"]["severity"] == severity
        assert expr.endswith(f") {threshold}") and expr.count("[15m]") == 3 and "increase(" in expr
        assert expr.count(f'namespace="{NAMESPACE}"') == 3 and expr.count("sum by (pod)") == 3
        assert "Fatal Kafka producer error" in rule["annotations"]["description"]
        assert "$labels.pod" in rule["annotations"]["summary"]
    runbook = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    assert "| VeilStreamProducerRecreated " in runbook and "**Fatal Kafka producer error**" in runbook


def test_metric_name_extraction_catches_a_typo():
    exported = families({"veil_process_latency_seconds", "veil_sink_backlog_chunks"})
    assert metric_names('histogram_quantile(0.95, rate(veil_process_latency_seconds_bucket[5m]))') <= exported
    assert metric_names("sum(veil_sink_backlog_chunk)") - exported == {"veil_sink_backlog_chunk"}


@pytest.mark.parametrize("which", ["small", "city"])
def test_monitors_select_what_exports_metrics(which):
    docs = list(_rendered(which))
    sm = one(docs, "ServiceMonitor", "-workers")["spec"]
    exprs = {e["key"]: e["values"] for e in sm["selector"]["matchExpressions"]}
    assert exprs["app.kubernetes.io/component"] == ["ingest", "process", "sink"]
    for comp in WORKERS:
        svc = one(docs, "Service", f"-{comp}-metrics")
        assert svc["metadata"]["labels"]["app.kubernetes.io/component"] in exprs["app.kubernetes.io/component"]
        assert svc["metadata"]["labels"]["app.kubernetes.io/instance"] in exprs["app.kubernetes.io/instance"]
        assert [p["name"] for p in svc["spec"]["ports"]] == [sm["endpoints"][0]["port"]]
    pm = one(docs, "PodMonitor", "-ray")["spec"]
    (rc,) = by_kind(docs, "RayCluster")
    assert pm["selector"]["matchLabels"] == {"ray.io/cluster": rc["metadata"]["name"]}
    assert pm["podMetricsEndpoints"][0]["port"] == "metrics"
    dash = one(docs, "ConfigMap", "-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["veilstream.json"])["uid"] == "veilstream"


def test_console_egress_through_the_default_deny():
    """The console (issue 13) reads footage and signs users in: its pods get Kafka, the object
    store and, with OIDC, the identity provider on 443, through the release's egress deny."""
    values = {"console": {"enabled": True, "oidc": {"issuer": "https://idp.example/realms/city",
                                                    "clientId": "veilstream", "existingSecret": "oidc"}}}
    docs = render(values)
    assert not validate_all(docs), validate_all(docs)
    rules = one(docs, "NetworkPolicy", "-console-egress")["spec"]["egress"]
    ports = [sorted(p["port"] for p in r["ports"]) for r in rules]
    assert ports == [[9092, 9093], [443, 9000], [443]]
    deny = one(docs, "NetworkPolicy", "-default-deny")["spec"]
    console = deployment(docs, "console")["spec"]["template"]["metadata"]["labels"]
    assert all(console.get(k) == v for k, v in deny["podSelector"]["matchLabels"].items())
