"""Ray token authentication in the chart: the RayCluster asks KubeRay for it (``authOptions``)
and every pod that talks to the cluster (the process stage: the Jobs API submitter, or the Ray
Client drivers with ``ray.legacyClient``) carries the same token from the same Secret.

Ray's own clients send the token whenever ``RAY_AUTH_MODE=token``; the last test checks that
the submitter's ``JobSubmissionClient`` does so against a local HTTP server (a subprocess: Ray's
token loader is a process-wide singleton).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from test_deploy import (
    RELEASE,
    _kustomized,
    by_kind,
    deployment,
    render,
    render_error,
    validate_all,
)

TOKEN_KEY = "auth_token"  # KubeRay's RAY_AUTH_TOKEN_SECRET_KEY: the key of its generated Secret


def ray_cluster(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (rc,) = by_kind(docs, "RayCluster")
    return rc


def process_env(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    spec = deployment(docs, "process")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return {e["name"]: e for e in container["env"]}


def other_env_names(docs: list[dict[str, Any]]) -> set[str]:
    """Env names of every Deployment's and Job's containers but the process stage's."""
    names: set[str] = set()
    for d in docs:
        if d["kind"] in ("Deployment", "Job") and not d["metadata"]["name"].endswith("-process"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                names |= {e["name"] for e in c.get("env", [])}
    return names


def ray_container_envs(rc: dict[str, Any]) -> list[dict[str, dict[str, Any]]]:
    return [{e["name"]: e for e in c.get("env", [])}
            for spec in [rc["spec"]["headGroupSpec"], *rc["spec"]["workerGroupSpecs"]]
            for c in spec["template"]["spec"]["containers"]]


def test_token_auth_is_on_by_default_and_validates_against_the_crd():
    docs = render()
    rc = ray_cluster(docs)
    assert rc["spec"]["authOptions"] == {"mode": "token"}  # KubeRay generates the Secret
    assert validate_all(docs) == []  # authOptions is in ../shared/crds' RayCluster schema
    env = process_env(docs)
    assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}
    # KubeRay names its generated Secret after the RayCluster and keys the token `auth_token`
    assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": rc["metadata"]["name"], "key": TOKEN_KEY}}
    assert "value" not in env["RAY_AUTH_TOKEN"]  # never the token itself
    # the submitter posts to the Jobs API: it is the pod that needs the token
    args = deployment(docs, "process")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--submit" in args
    # nothing else talks to Ray, so nothing else holds the token; the chart holds no Secret
    assert not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} & other_env_names(docs)
    assert not by_kind(docs, "Secret")
    # KubeRay injects the token into the Ray containers itself (an env of ours would win over it)
    for env in ray_container_envs(rc):
        assert not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} & set(env)


def test_an_existing_secret_is_used_by_the_cluster_and_the_drivers():
    docs = render({"ray": {"auth": {"secretName": "veil-ray-token"}}})
    assert ray_cluster(docs)["spec"]["authOptions"] == {"mode": "token", "secretName": "veil-ray-token"}
    assert validate_all(docs) == []
    assert process_env(docs)["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "veil-ray-token", "key": TOKEN_KEY}


def test_legacy_ray_client_drivers_carry_the_token_too():
    docs = render({"ray": {"legacyClient": True}})
    rc = ray_cluster(docs)
    env = process_env(docs)
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == rc["metadata"]["name"]


def test_disabled_renders_no_token_anywhere():
    """No token env anywhere; RAY_AUTH_MODE=disabled explicitly on the Ray nodes and the process
    pod, so a token Ray finds by itself (RAY_AUTH_TOKEN in an extraEnv, ~/.ray/auth_token) cannot
    turn auth on for `ray start` while the drivers send none (as in the local stack, ad78da2)."""
    docs = render({"ray": {"auth": {"mode": "disabled", "secretName": "ignored"}}})
    rc = ray_cluster(docs)
    assert rc["spec"]["authOptions"] == {"mode": "disabled"}
    assert validate_all(docs) == []
    envs = [process_env(docs), *ray_container_envs(rc)]
    assert len(envs) >= 3  # process, head, at least one worker group
    for env in envs:
        assert "RAY_AUTH_TOKEN" not in env
        assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "disabled"}
    assert "ignored" not in str(docs)


def test_ray_inside_the_process_pod_needs_no_token():
    docs = render({"ray": {"enabled": False}})
    assert not by_kind(docs, "RayCluster")
    assert not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} & set(process_env(docs))


@pytest.mark.parametrize("auth, problem", [
    ({"mode": "on"}, "/ray/auth/mode"),
    ({"secretName": "Not_A_Name"}, "/ray/auth/secretName"),
    ({"token": "hunter2"}, "token"),  # no token values in the chart's values
])
def test_values_schema_rejects_bad_auth(auth, problem):
    msg = render_error({"ray": {"auth": auth}}, "HelmValuesError")
    assert problem in msg, msg


def test_token_auth_needs_a_ray_that_has_it():
    msg = render_error({"ray": {"rayVersion": "2.51.1"}}, "HelmRenderError")
    assert "ray.auth.mode: token needs Ray >= 2.52 (ray.rayVersion 2.51.1)" in msg, msg
    docs = render({"ray": {"rayVersion": "2.51.1", "auth": {"mode": "disabled"}}})
    assert ray_cluster(docs)["spec"]["authOptions"] == {"mode": "disabled"}


def test_the_jobs_api_client_sends_the_token_from_the_env():
    """What the chart's env does in the submitter: Ray's JobSubmissionClient (the one
    ``pipeline.process.submit.default_client`` builds) sends ``Authorization: Bearer <token>``
    when RAY_AUTH_MODE=token and RAY_AUTH_TOKEN are set, and nothing without them."""
    script = textwrap.dedent("""
        import json, sys, threading
        import ray
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        seen = []
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append((self.path, self.headers.get("Authorization")))
                if self.path.startswith("/api/jobs"):
                    body = b"[]"
                else:
                    body = json.dumps({"version": "4", "ray_version": ray.__version__,
                                       "ray_commit": "x"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *a):
                pass
        srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        from pipeline.process.submit import default_client
        client = default_client(f"http://127.0.0.1:{srv.server_address[1]}")
        assert client.list_jobs() == []
        print(json.dumps(seen))
    """)
    import json
    import os

    def seen(extra: dict[str, str]) -> list[str | None]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        env.update(extra)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                             timeout=120, check=False)
        assert out.returncode == 0, out.stderr[-2000:]
        result: list[tuple[str, str | None]] = [tuple(x) for x in json.loads(out.stdout.strip().splitlines()[-1])]
        assert {p.split("?")[0].rstrip("/") for p, _ in result} >= {"/api/jobs"}, result
        return [h for _, h in result]

    with_token = seen({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "s3cret-token-0123456789"})
    assert with_token and all(h == "Bearer s3cret-token-0123456789" for h in with_token), with_token
    without = seen({"RAY_AUTH_MODE": "disabled", "HOME": "/nonexistent-home-for-ray-auth-test"})
    assert without and all(h is None for h in without), without


def test_release_name_reaches_the_secret_reference():
    docs = render(name="cam")
    rc = ray_cluster(docs)
    assert rc["metadata"]["name"].startswith("cam")
    assert process_env(docs)["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == rc["metadata"]["name"]
    assert RELEASE != "cam"


def test_kustomize_base_has_token_auth_and_the_submitter_reads_its_secret():
    docs = list(_kustomized())
    rc = ray_cluster(docs)
    assert rc["spec"]["authOptions"] == {"mode": "token"}
    assert validate_all(docs) == []
    env = process_env(docs)
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": rc["metadata"]["name"], "key": TOKEN_KEY}
