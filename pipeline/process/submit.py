"""``veilstream process --submit URL``: run the process stage inside the Ray cluster as a Ray job.

Production shape (KubeRay's documented path for a RayCluster): a small submitter pod talks to the
head's dashboard (Ray Jobs API, HTTP 8265) and the driver runs on the head as a job whose
consumer and detector actors own the Kafka partitions (``ray.consumers`` > 0). No Ray Client: it
is the one KubeRay path documented as not actively maintained, and all raw video crossed it.

The submitter
- ships its own code with the job (``py_modules``: :func:`code_modules`), so the job runs the
  submitter image's code on Ray pods of the same Ray version and dependencies;
- uploads the config (``ray.address`` rewritten to ``auto``: inside the job the driver is on the
  head) and the policies of its ``policies_dir`` (rewritten to the working_dir's ``policies/``:
  the Ray pods do not mount them) as the job's working_dir and submits
  ``veilstream process --config cfg.yaml``;
- uses one submission id per (name, revision, config): a job with it that is PENDING/RUNNING is
  attached to, never submitted twice (a restarted container of the same pod finds its own job);
  an ended one gets a successor ``<id>-<n>``. The revision is the pod template's hash (the chart
  passes the Deployment's ``pod-template-hash`` label), so during a rolling upgrade the new pod
  submits a second job next to the old one instead of attaching to it, even when only the image
  or the policies changed and the config did not;
- is ready (``/readyz``) only once its job's driver logged :data:`~.consumers.CONSUMING_LINE`
  (every consumer actor consumes), not when the job merely RUNS: the chart rolls this pod
  surge-first (maxUnavailable 0), so the old pod, and with it the old job, is stopped only after
  the new job's consumers joined the group. Both jobs are members of the same consumer group
  meanwhile: partitions move by rebalance, and the old consumers commit what they finished on
  revoke and on stop (at-least-once, no gap);
- polls the job; exits 1 (after printing the job's last log lines) when it fails or is stopped by
  someone else, so the pod restarts and resubmits; on SIGTERM it stops the job and exits 0.

Stopping drains. Ray's job supervisor sends the driver SIGTERM on ``stop_job`` and SIGKILLs it
``RAY_JOB_STOP_WAIT_TIME_S`` later, 3 s by default: every release would kill the consumers
mid-chunk. The job is submitted with that wait set to :func:`job_stop_wait_s` (the config's
``process.drain_timeout_s`` plus the producer flush and the commit), and the submitter waits
that long plus a margin for the job to end: the pod's ``terminationGracePeriodSeconds`` must
cover it (the chart's default does, a chart test checks it).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipeline.metrics import WorkerMetrics, serve_config
from schemas.config import parse_config
from schemas.errors import ConfigError, VeilStreamError

ACTIVE = ("PENDING", "RUNNING")
LOG_TAIL_LINES = 40
FLUSH_S = 30.0
"""What the worker's shutdown gives the producer flush after the drain (``pipeline.runtime.StageRuntime.shutdown``)."""
STOP_MARGIN_S = 15.0
"""Commit, actor teardown and the driver's exit after the flush."""


def job_stop_wait_s(cfg: Any) -> int:
    """Seconds between Ray's SIGTERM to the job's driver and its SIGKILL: the consumers' drain
    (``process.drain_timeout_s``), the producer flush and the commit."""
    return int(math.ceil(cfg.process.drain_timeout_s + FLUSH_S + STOP_MARGIN_S))


def submitter_grace_s(cfg: Any) -> int:
    """Seconds the submitter needs after its own SIGTERM: the job's stop wait and 10 s to see it end
    (what the pod's ``terminationGracePeriodSeconds`` must be at least)."""
    return job_stop_wait_s(cfg) + 10


class SubmitError(VeilStreamError):
    """The Ray Jobs API could not be reached or refused the job (one line)."""


def _status(value: Any) -> str:
    return str(getattr(value, "value", value)).upper()


def default_client(url: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(url)


POLICIES_DIR = "policies"
"""Where the job's working_dir holds the uploaded policies (its ``policies_dir``, relative: the
driver and every actor of the job run in their node's copy of the working_dir)."""


def read_policies(cfg: Any) -> dict[str, str]:
    """The policy files of ``policies_dir`` (file name -> text), validated. They travel with the
    job: the Ray pods do not mount the policies, the submitter pod does (a policy change rolls it,
    and the new job gets the new files)."""
    if not getattr(cfg, "policies_dir", None):
        return {}
    from schemas.policy import load_policies

    load_policies(cfg.policies_dir)  # every problem now, in the submitter's log, not in the job's
    d = Path(cfg.policies_dir)
    return {f.name: f.read_text() for f in sorted(d.iterdir())
            if f.suffix in (".yaml", ".yml") and not f.name.startswith(".")}


def job_config(raw: dict[str, Any], path: str, policies: dict[str, str] | None = None) -> tuple[Any, str, str]:
    """Validate the config for a job: (parsed config, yaml text for the job, short content hash of
    the config and the ``policies`` uploaded with it)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    cfg = parse_config(raw)
    if cfg.ray.consumers < 1:
        raise ConfigError(f"{path}: ray.consumers: --submit runs the stage as a Ray job whose consumer actors "
                          f"own the partitions; expected an integer >= 1, got {cfg.ray.consumers}")
    job = dict(raw)
    job["ray"] = {**(raw.get("ray") or {}), "address": "auto"}  # the job's driver runs on the head
    if policies:
        job["policies_dir"] = POLICIES_DIR
    text = yaml.safe_dump(job, sort_keys=True)
    h = hashlib.sha256(text.encode())
    for name, body in sorted((policies or {}).items()):
        h.update(f"\0{name}\0{body}".encode())
    return cfg, text, h.hexdigest()[:10]


def pick_submission(jobs: list[Any], base: str) -> tuple[str, bool]:
    """(submission id, attach?) for ``base``: an active job to attach to, else the next free id."""
    ours = {j.submission_id: _status(j.status) for j in jobs
            if j.submission_id and (j.submission_id == base or j.submission_id.startswith(base + "-"))}
    for sid in sorted(ours):
        if ours[sid] in ACTIVE:
            return sid, True
    if base not in ours:
        return base, False
    n = 2
    while f"{base}-{n}" in ours:
        n += 1
    return f"{base}-{n}", False


def submission_base(name: str, digest: str, revision: str | None) -> str:
    """The submission id a submitter of ``revision`` (the pod template's hash) uses for a config
    of ``digest``; without a revision (a submitter run by hand), one id per config."""
    rev = "".join(ch for ch in (revision or "") if ch.isalnum() or ch in "-_")[:16]
    return f"{name}-{rev}-{digest}" if rev else f"{name}-{digest}"


def code_modules() -> list[str]:
    """The submitter's own ``schemas``, ``operators`` and ``pipeline`` packages, shipped with the job
    as ``py_modules`` (Ray puts them first on the PYTHONPATH of the job's driver and actors): the
    job runs the submitter image's code on the Ray pods, whose image then needs to change only
    with Ray, the dependencies or the models. So a code-only rollout needs no new Ray pods."""
    import operators
    import pipeline
    import schemas

    return [str(Path(m.__file__).resolve().parent) for m in (schemas, operators, pipeline)]  # type: ignore[arg-type]


def consuming(client: Any, sid: str) -> bool:
    """Whether job ``sid``'s driver has logged that every consumer actor consumes."""
    from .consumers import CONSUMING_LINE

    try:
        return CONSUMING_LINE in client.get_job_logs(sid)
    except Exception:  # noqa: BLE001 - asked again at the next poll
        return False


def run_submitter(config_path: Path, url: str, stop: threading.Event, *, name: str = "veilstream-process",
                  client_factory: Callable[[str], Any] = default_client, poll_s: float = 5.0,
                  stop_wait_s: float | None = None, log: Callable[[str], None] = print,
                  metrics: WorkerMetrics | None = None, revision: str | None = None) -> int:
    try:
        raw = yaml.safe_load(Path(config_path).read_text())
    except OSError as exc:
        raise ConfigError(f"config {str(config_path)!r}: {exc.strerror or exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: expected a mapping at the top level")
    policies = read_policies(parse_config(raw))
    cfg, text, digest = job_config(raw, str(config_path), policies)
    drain_s = job_stop_wait_s(cfg)
    if stop_wait_s is None:
        stop_wait_s = float(drain_s + 5)
    # /healthz while the job is being submitted and watched (start-up within the config's budget),
    # /readyz while it RUNS; the pod's probes use them like the other stages'. A server of its
    # own starts inside the start-up phase, so its very first /healthz says "starting", never
    # "running" (as the process worker's, commit 79df377), and stops when the submitter returns.
    own = metrics is None
    if metrics is None:
        metrics = WorkerMetrics("submit")
    server = None
    try:
        with metrics.starting(cfg.metrics.startup_budget_s):
            if own:
                server = serve_config(metrics, cfg.metrics)
            rc = _run(url, stop, submission_base(name, digest, revision), text, client_factory, poll_s, stop_wait_s,
                      log, metrics, drain_s, policies)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return rc


def _run(url: str, stop: threading.Event, base: str, text: str, client_factory: Callable[[str], Any],
         poll_s: float, stop_wait_s: float, log: Callable[[str], None], metrics: WorkerMetrics,
         drain_s: int, policies: dict[str, str] | None = None) -> int:
    try:
        client = client_factory(url)
        jobs = list(client.list_jobs())
    except Exception as exc:  # requests/ConnectionError/RuntimeError: one line, the pod restarts
        raise SubmitError(f"ray dashboard {url}: unreachable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                          f"expected the Ray Jobs API of the head service (port 8265)") from None
    sid, attach = pick_submission(jobs, base)
    if attach:
        log(f"process: attached to Ray job {sid} at {url}")
    else:
        with tempfile.TemporaryDirectory(prefix="veilstream-job-") as tmp:
            (Path(tmp) / "cfg.yaml").write_text(text)
            if policies:
                (Path(tmp) / POLICIES_DIR).mkdir()
                for fname, body in policies.items():
                    (Path(tmp) / POLICIES_DIR / fname).write_text(body)
            try:
                client.submit_job(entrypoint="veilstream process --config cfg.yaml", submission_id=sid,
                                  runtime_env={"working_dir": tmp, "py_modules": code_modules(),
                                               "excludes": ["__pycache__", "*.pyc"],
                                               # Ray SIGKILLs the driver 3 s after SIGTERM unless told
                                               "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(drain_s)}},
                                  metadata={"app": "veilstream", "stage": "process"})
            except Exception as exc:
                raise SubmitError(f"ray dashboard {url}: job {sid} not submitted ({exc})") from None
        log(f"process: submitted Ray job {sid} to {url}")
    consumes = False
    while not stop.wait(poll_s):
        try:
            status = _status(client.get_job_status(sid))
        except Exception as exc:  # head restarting: exit non-zero, the restarted pod attaches again
            log(f"process: Ray job {sid}: status unavailable ({exc}); exiting so the pod restarts and re-attaches")
            return 1
        if status in ACTIVE:
            if status == "RUNNING" and not consumes and consuming(client, sid):
                consumes = True  # read the log until then, never after
                log(f"process: Ray job {sid}: every consumer actor consumes")
            if consumes and metrics.starting_until is not None:
                metrics.starting_until = None  # start-up ends once the job's consumers consume
            metrics.ready = status == "RUNNING" and consumes
            metrics.tick()
            continue
        metrics.ready = False
        if status == "SUCCEEDED":
            log(f"process: Ray job {sid} finished")
            return 0
        try:
            tail = client.get_job_logs(sid).splitlines()[-LOG_TAIL_LINES:]
        except Exception:
            tail = []
        for line in tail:
            log(f"  {line}")
        log(f"process: Ray job {sid} ended {status}; exiting 1 so the pod restarts and resubmits")
        return 1
    try:  # SIGTERM: the release is going away or rolling: stop the job, then exit 0
        client.stop_job(sid)
        waited = 0.0
        while waited < stop_wait_s and _status(client.get_job_status(sid)) in ACTIVE:
            threading.Event().wait(min(poll_s, 1.0))
            waited += min(poll_s, 1.0)
    except Exception as exc:
        log(f"process: stopping Ray job {sid}: {exc}")
    log(f"process: stopped Ray job {sid}")
    return 0
