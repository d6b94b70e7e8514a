"""The console's part of the Helm chart: rendered with the console on (OIDC, local users,
per-role credentials, Ingress), validated like every other manifest, hardened like the workers."""

from __future__ import annotations

import copy

import pytest

from schemas.config import parse_config
from tests.unit.test_deploy import by_kind, kube_problems, one, render, render_error, validate_all
from tests.unit.test_deploy import test_containers_are_hardened as containers_hardened

VALUES = {"console": {"enabled": True, "publicUrl": "https://console.city.example", "usersSecret": "console-users",
                      "oidc": {"issuer": "https://idp.city.example/realms/city", "clientId": "veilstream",
                               "existingSecret": "console-oidc"},
                      "statusCredentialsSecret": "console-status-s3",
                      "roleCredentials": {"analyst": "s3-analyst", "privacy-officer": "s3-privacy-officer"},
                      "ingress": {"enabled": True, "className": "nginx", "host": "console.city.example",
                                  "tlsSecret": "console-tls"}}}


@pytest.fixture(scope="module")
def docs():
    return render(copy.deepcopy(VALUES))


def test_console_off_by_default():
    assert not [d for d in render() if "console" in d["metadata"]["name"]]


def test_console_manifests_validate_and_are_hardened(docs):
    ingresses = by_kind(docs, "Ingress")  # a built-in kind the workers do not use
    assert ingresses and not [p for d in ingresses for p in kube_problems(d)]
    assert not validate_all([d for d in docs if d["kind"] != "Ingress"])
    containers_hardened(docs)
    dep = one(docs, "Deployment", "-console")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["console", "--config", "/etc/veilstream/config.yaml"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = {e["name"]: e for e in c["env"]}
    # least privilege: each role's own Secret; the sink's write credentials are not here
    assert env["VEIL_CONSOLE_S3_PRIVACY_OFFICER_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-privacy-officer"
    assert env["VEIL_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "console-status-s3"
    assert env["VEIL_OIDC_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "console-oidc"
    svc = one(docs, "Service", "-console")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    ing = one(docs, "Ingress", "-console")
    assert ing["spec"]["tls"][0]["secretName"] == "console-tls"
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == svc["metadata"]["name"]
    allow = one(docs, "NetworkPolicy", "-allow-console")
    assert allow["spec"]["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]


def test_console_config_is_a_valid_pipeline_config(docs):
    import yaml

    cm = one(docs, "ConfigMap", "-console-config")
    cfg = parse_config(yaml.safe_load(cm["data"]["config.yaml"]))
    con = cfg.console
    assert con.secure_cookies and con.users_file == "/etc/veilstream/console-users/users.yaml"
    assert con.oidc.issuer == "https://idp.city.example/realms/city" and con.oidc.client_id == "veilstream"
    assert con.s3_credentials["privacy-officer"] == {"access_key_env": "VEIL_CONSOLE_S3_PRIVACY_OFFICER_ACCESS_KEY",
                                                     "secret_key_env": "VEIL_CONSOLE_S3_PRIVACY_OFFICER_SECRET_KEY"}
    assert cfg.policies_dir == "/etc/veilstream/policies"
    assert not by_kind([d for d in docs if "console" in d["metadata"]["name"]], "Secret")  # no secret values


def test_console_values_are_checked_by_the_schema():
    bad = copy.deepcopy(VALUES)
    bad["console"]["roleCredentials"] = {"boss": "s3-boss"}
    bad["console"]["port"] = 0
    msg = render_error(bad, "HelmValuesError")
    assert "boss" in msg and "/console/port" in msg, msg
