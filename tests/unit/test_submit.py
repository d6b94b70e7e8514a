"""`veilstream process --submit`: the submitter against a fake Ray Jobs API client (no Ray, no network)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipeline.metrics import WorkerMetrics
from pipeline.process.submit import SubmitError, job_stop_wait_s, run_submitter, submitter_grace_s
from schemas.errors import ConfigError


@dataclass
class Job:
    submission_id: str
    status: str


class FakeJobs:
    """Records calls; ``statuses`` is what get_job_status returns for the watched job, in order."""

    def __init__(self, jobs: list[Job] | None = None, statuses: list[str] | None = None) -> None:
        self.jobs = list(jobs or [])
        self.statuses = list(statuses or [])
        self.submitted: list[dict] = []
        self.uploaded: dict = {}
        self.stopped: list[str] = []
        self.on_poll: threading.Event | None = None
        self.logs = "starting\nConfigError: kafka.bootstrap_servers unreachable\n"

    def list_jobs(self) -> list[Job]:
        return self.jobs

    def submit_job(self, *, entrypoint: str, submission_id: str, runtime_env: dict, metadata: dict) -> str:
        self.uploaded = yaml.safe_load((Path(runtime_env["working_dir"]) / "cfg.yaml").read_text())
        pol = Path(runtime_env["working_dir"]) / "policies"
        self.uploaded_policies = {f.name: f.read_text() for f in pol.iterdir()} if pol.is_dir() else {}
        self.submitted.append({"entrypoint": entrypoint, "submission_id": submission_id,
                               "env_vars": dict(runtime_env.get("env_vars") or {}),
                               "py_modules": list(runtime_env.get("py_modules") or [])})
        self.jobs.append(Job(submission_id, "PENDING"))
        return submission_id

    def get_job_status(self, sid: str) -> str:
        if self.stopped:
            return "STOPPED"
        if self.on_poll is not None:
            self.on_poll.set()
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def get_job_logs(self, sid: str) -> str:
        return self.logs

    def stop_job(self, sid: str) -> bool:
        self.stopped.append(sid)
        return True


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": "kafka:9092"},
                                 "ray": {"address": "http://head-svc:8265", "consumers": 2}}))
    return p


def submit(cfg: Path, fake: FakeJobs, stop: threading.Event | None = None,
           metrics: WorkerMetrics | None = None, revision: str | None = None) -> tuple[int, list[str]]:
    lines: list[str] = []
    rc = run_submitter(cfg, "http://head-svc:8265", stop or threading.Event(), name="vs-process",
                       client_factory=lambda url: fake, poll_s=0.001, stop_wait_s=0.01, log=lines.append,
                       metrics=metrics or WorkerMetrics("submit"), revision=revision)
    return rc, lines


def test_submits_the_job_with_the_uploaded_config_and_waits_for_it(cfg: Path):
    fake = FakeJobs(statuses=["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"])
    rc, _ = submit(cfg, fake)
    assert rc == 0 and len(fake.submitted) == 1
    sub = fake.submitted[0]
    assert sub["entrypoint"] == "veilstream process --config cfg.yaml"
    # the submitter's own code travels with the job: a code-only rollout needs no new Ray pods
    root = Path(__file__).resolve().parents[2]
    assert sub["py_modules"] == [str(root / "schemas"), str(root / "operators"), str(root / "pipeline")]
    assert sub["submission_id"].startswith("vs-process-")
    # the job's own driver runs on the head: it connects to its cluster, not to the dashboard URL
    assert fake.uploaded["ray"] == {"address": "auto", "consumers": 2}
    assert fake.uploaded["kafka"] == {"bootstrap_servers": "kafka:9092"}


def test_attaches_to_a_running_job_instead_of_submitting_a_second(cfg: Path):
    first = FakeJobs(statuses=["SUCCEEDED"])
    submit(cfg, first)
    sid = first.submitted[0]["submission_id"]
    fake = FakeJobs(jobs=[Job(sid, "RUNNING")], statuses=["RUNNING", "SUCCEEDED"])
    rc, lines = submit(cfg, fake)
    assert rc == 0 and fake.submitted == []
    assert any(f"attached to Ray job {sid}" in line for line in lines)


def test_resubmits_with_a_suffix_after_the_job_failed_and_exits_1_when_it_fails(cfg: Path):
    first = FakeJobs(statuses=["SUCCEEDED"])
    submit(cfg, first)
    sid = first.submitted[0]["submission_id"]
    fake = FakeJobs(jobs=[Job(sid, "FAILED"), Job(f"{sid}-2", "STOPPED")], statuses=["RUNNING", "FAILED"])
    rc, lines = submit(cfg, fake)
    assert [s["submission_id"] for s in fake.submitted] == [f"{sid}-3"]
    assert rc == 1  # the pod restarts and resubmits
    assert any("kafka.bootstrap_servers unreachable" in line for line in lines)  # the job's log tail
    assert "ended FAILED" in lines[-1]


def test_sigterm_stops_the_job_and_exits_0(cfg: Path):
    from pipeline.process.consumers import CONSUMING_LINE

    fake = FakeJobs(statuses=["PENDING", "RUNNING"])
    fake.logs = f"INFO process job: 2 consumer actor(s) started\nINFO {CONSUMING_LINE} (2)\n"
    stop = threading.Event()
    metrics = WorkerMetrics("submit")
    fake.on_poll = threading.Event()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(submit(cfg, fake, stop, metrics)[0]))
    t.start()
    assert fake.on_poll.wait(5)  # the job is being watched
    for _ in range(500):  # /readyz turns ready once the job's consumers consume, /healthz stays ok
        if metrics.ready:
            break
        threading.Event().wait(0.01)
    assert metrics.ready and metrics.healthy()
    stop.set()
    t.join(5)
    assert result == [0] and fake.stopped == [fake.submitted[0]["submission_id"]]


def test_the_job_gets_its_drain_before_ray_sigkills_it_and_the_pod_covers_both(cfg: Path):
    """Ray's job supervisor SIGKILLs the driver RAY_JOB_STOP_WAIT_TIME_S (default 3 s) after
    stop_job's SIGTERM: the job is submitted with the drain, flush and commit as that wait, and
    the chart's process pod outlives the submitter's wait for the job to end."""
    from schemas.config import parse_config

    fake = FakeJobs(statuses=["SUCCEEDED"])
    submit(cfg, fake)
    parsed = parse_config(yaml.safe_load(cfg.read_text()))
    wait = int(fake.submitted[0]["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"])
    assert wait == job_stop_wait_s(parsed) >= parsed.process.drain_timeout_s + 30

    from test_deploy import _rendered

    for which in ("default", "small", "city"):
        docs = list(_rendered(which))
        conf = next(d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in (d.get("data") or {}))
        proc = next(d for d in docs if d["kind"] == "Deployment"
                    and d["metadata"]["labels"].get("app.kubernetes.io/component") == "process")
        grace = proc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= submitter_grace_s(parse_config(yaml.safe_load(conf["data"]["config.yaml"]))), which


def test_unreachable_dashboard_is_one_clear_line(cfg: Path):
    def refuse(url: str):
        raise ConnectionError(f"Failed to connect to Ray at address: {url}.\nmore detail")

    with pytest.raises(SubmitError) as err:
        run_submitter(cfg, "http://head-svc:8265", threading.Event(), client_factory=refuse,
                      metrics=WorkerMetrics("submit"))
    msg = str(err.value)
    assert "\n" not in msg and "http://head-svc:8265" in msg and "unreachable" in msg and "8265" in msg


def test_submit_requires_consumer_actors(tmp_path: Path):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": "kafka:9092"}, "ray": {"consumers": 0}}))
    with pytest.raises(ConfigError, match=r"ray\.consumers.*>= 1, got 0"):
        run_submitter(p, "http://x:8265", threading.Event(), client_factory=lambda url: FakeJobs())


def test_ready_only_once_the_jobs_consumers_consume(cfg: Path):
    """A rolling upgrade stops the old pod (and its job) once the new pod is ready: that must
    mean the new job's consumers consume, not that its driver process started."""
    from pipeline.process.consumers import CONSUMING_LINE

    fake = FakeJobs(statuses=["RUNNING"])
    fake.logs = "INFO process job: 2 consumer actor(s) started in the cluster\n"
    stop = threading.Event()
    metrics = WorkerMetrics("submit")
    fake.on_poll = threading.Event()
    t = threading.Thread(target=lambda: submit(cfg, fake, stop, metrics))
    t.start()
    try:
        assert fake.on_poll.wait(5)
        threading.Event().wait(0.2)
        assert not metrics.ready and metrics.starting_until is not None  # RUNNING, not consuming: start-up
        fake.logs += f"INFO {CONSUMING_LINE} (2)\n"
        for _ in range(500):
            if metrics.ready:
                break
            threading.Event().wait(0.01)
        assert metrics.ready and metrics.starting_until is None
    finally:
        stop.set()
        t.join(5)


def test_each_pod_revision_runs_its_own_job_and_a_restarted_container_attaches_to_its_own(cfg: Path):
    """Surge-first rollout: the new pod (another pod-template-hash) submits a second job beside the
    old pod's RUNNING one, even with the same config; the same revision attaches (no duplicate)."""
    old = FakeJobs(statuses=["SUCCEEDED"])
    submit(cfg, old, revision="7d9f8b6c5")
    old_sid = old.submitted[0]["submission_id"]
    assert old_sid.startswith("vs-process-7d9f8b6c5-")
    new = FakeJobs(jobs=[Job(old_sid, "RUNNING")], statuses=["SUCCEEDED"])
    submit(cfg, new, revision="5c4b3a2f1")
    (sub,) = new.submitted
    assert sub["submission_id"].startswith("vs-process-5c4b3a2f1-") and sub["submission_id"] != old_sid
    assert sub["submission_id"][-10:] == old_sid[-10:]  # same config, same digest
    again = FakeJobs(jobs=[Job(old_sid, "RUNNING")], statuses=["SUCCEEDED"])
    rc, lines = submit(cfg, again, revision="7d9f8b6c5")
    assert again.submitted == [] and any(f"attached to Ray job {old_sid}" in line for line in lines)
    # by hand (no revision): one id per config, as before
    manual = FakeJobs(statuses=["SUCCEEDED"])
    submit(cfg, manual, revision="")
    assert manual.submitted[0]["submission_id"] == f"vs-process-{old_sid[-10:]}"


def test_policies_travel_with_the_job_and_a_policy_change_is_a_new_job(tmp_path: Path):
    """The Ray pods do not mount the policies: the submitter (which does) uploads them with the
    job, and a changed policy changes the submission id (a new job, beside the old one)."""
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "default.yaml").write_text("policy_id: default\nversion: 1\nclasses: [face]\n")
    (pol / "..data").mkdir()  # a ConfigMap mount's bookkeeping is not a policy
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": "kafka:9092"}, "policies_dir": str(pol),
                                 "ray": {"consumers": 1}}))
    first = FakeJobs(statuses=["SUCCEEDED"])
    submit(p, first)
    assert first.uploaded["policies_dir"] == "policies"
    assert first.uploaded_policies == {"default.yaml": "policy_id: default\nversion: 1\nclasses: [face]\n"}
    (pol / "default.yaml").write_text("policy_id: default\nversion: 2\nclasses: [face, plate]\n")
    second = FakeJobs(statuses=["SUCCEEDED"])
    submit(p, second)
    assert second.submitted[0]["submission_id"] != first.submitted[0]["submission_id"]
    (pol / "default.yaml").write_text("policy_id: other\n")
    with pytest.raises(ConfigError, match="must equal the file name"):
        submit(p, FakeJobs(statuses=["SUCCEEDED"]))


def test_its_own_probe_server_first_answers_starting_and_stops_when_it_returns(cfg: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    """With no metrics given, the submitter's own probe server starts inside the start-up phase
    (its very first /healthz says "starting": before, it started first and a probe racing the two
    read "running", as in the process worker before commit 79df377) and is shut down when the
    submitter returns or raises."""
    import pipeline.process.submit as submit_mod

    class Server:
        def __init__(self, phase: str) -> None:
            self.phase, self.calls = phase, []

        def shutdown(self) -> None:
            self.calls.append("shutdown")

        def server_close(self) -> None:
            self.calls.append("close")

    servers: list[Server] = []

    def serve(metrics: WorkerMetrics, mcfg: object) -> Server:
        servers.append(Server(metrics.phase()))
        return servers[-1]

    monkeypatch.setattr(submit_mod, "serve_config", serve)
    fake = FakeJobs(statuses=["SUCCEEDED"])
    assert run_submitter(cfg, "http://head-svc:8265", threading.Event(), client_factory=lambda url: fake,
                         poll_s=0.001, stop_wait_s=0.01, log=lambda line: None) == 0

    def unreachable(url: str) -> FakeJobs:
        raise ConnectionError("refused")

    with pytest.raises(SubmitError, match="unreachable"):
        run_submitter(cfg, "http://head-svc:8265", threading.Event(), client_factory=unreachable,
                      poll_s=0.001, log=lambda line: None)
    assert [(s.phase, s.calls) for s in servers] == [("starting", ["shutdown", "close"])] * 2
    submit(cfg, FakeJobs(statuses=["SUCCEEDED"]))  # the caller's metrics: the caller serves them
    assert len(servers) == 2
