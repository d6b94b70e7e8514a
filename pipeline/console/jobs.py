"""Background jobs of the console (subject exports, case exports): a bounded worker pool,
progress the pages poll, results kept on disk until released or expired.

A job function gets the :class:`Job` and reports progress with ``job.progress(fraction,
message)``; it writes its outputs under ``job.dir`` and returns a result mapping (file
names by role: ``{"video": "export.mp4", "report": "report.json"}`` plus any summary).
An exception fails the job with one line (``VeilStreamError`` messages are shown as they
are; anything else as its type, details in the log), never a traceback on a page.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.errors import VeilStreamError

logger = logging.getLogger(__name__)

JobFn = Callable[["Job"], Mapping[str, Any]]


@dataclass
class Job:
    job_id: str
    kind: str  # subject_export | case_export
    owner: str
    roles: tuple[str, ...]
    camera_id: str
    case: str
    params: dict[str, Any]
    dir: Path
    state: str = "queued"  # queued | running | done | failed | released
    fraction: float = 0.0
    message: str = "queued"
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    released: list[dict[str, Any]] = field(default_factory=list)

    def progress(self, fraction: float, message: str = "") -> None:
        self.fraction = max(self.fraction, 0.0, min(1.0, float(fraction)))  # a progress bar never goes back
        if message:
            self.message = message

    def file(self, role: str) -> Path | None:
        name = self.result.get("files", {}).get(role)
        if not name:
            return None
        p = (self.dir / name).resolve()
        return p if p.is_file() and self.dir.resolve() in p.parents else None

    def as_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "kind": self.kind, "owner": self.owner, "camera_id": self.camera_id,
                "case": self.case, "params": self.params, "state": self.state, "progress": round(self.fraction, 3),
                "message": self.message, "error": self.error,
                "result": {k: v for k, v in self.result.items() if k != "files"},
                "files": sorted(self.result.get("files", {})), "released": self.released,
                "created_at": self.created_at, "finished_at": self.finished_at}


class JobManager:
    def __init__(self, work_dir: str | Path | None = None, workers: int = 1, keep_s: float = 24 * 3600) -> None:
        self._tmp = None if work_dir else tempfile.TemporaryDirectory(prefix="veil-console-")
        self.root = Path(work_dir or self._tmp.name)  # type: ignore[union-attr]
        self.root.mkdir(parents=True, exist_ok=True)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="veil-console-job")
        self.jobs: dict[str, Job] = {}
        self.keep_s = keep_s
        self._lock = threading.Lock()

    def submit(self, kind: str, fn: JobFn, *, owner: str, roles: tuple[str, ...], camera_id: str, case: str,
               params: Mapping[str, Any]) -> Job:
        self._expire()
        jid = uuid.uuid4().hex[:16]
        d = self.root / jid
        d.mkdir(parents=True)
        job = Job(jid, kind, owner, roles, camera_id, case, dict(params), d)
        with self._lock:
            self.jobs[jid] = job
        self.pool.submit(self._run, job, fn)
        return job

    def _run(self, job: Job, fn: JobFn) -> None:
        job.state, job.message = "running", "started"
        try:
            res = dict(fn(job))
            job.result = res
            job.state, job.fraction, job.message = "done", 1.0, "done"
        except VeilStreamError as exc:
            job.state, job.error = "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            job.message = job.error
            logger.warning("job failed job=%s kind=%s error=%s", job.job_id, job.kind, exc)
        except Exception as exc:  # noqa: BLE001 - one line on the page, the rest in the log
            job.state = "failed"
            job.error = f"internal error ({type(exc).__name__}); see the console log, job {job.job_id}"
            job.message = job.error
            logger.exception("job crashed job=%s kind=%s", job.job_id, job.kind)
        finally:
            job.finished_at = time.time()

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def list(self, owner: str | None = None) -> list[Job]:
        with self._lock:
            jobs = list(self.jobs.values())
        return sorted((j for j in jobs if owner is None or j.owner == owner), key=lambda j: -j.created_at)

    def _expire(self) -> None:
        now = time.time()
        with self._lock:
            old = [j for j in self.jobs.values() if j.finished_at and now - j.finished_at > self.keep_s]
            for j in old:
                self.jobs.pop(j.job_id, None)
        for j in old:
            shutil.rmtree(j.dir, ignore_errors=True)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self._tmp is not None:
            self._tmp.cleanup()
