"""Ray actors of the process stage. Each is a thin shell around ``operators``.

One chunk is one chain of remote calls, and decoded frames never leave the node::

    driver ──ChunkTask (payload bytes)──► ChunkActor.redact
                                            decode ─► scheduled frames ─► DetectorActor.detect
                                            (awaits)                      (batches across callers)
                                            mask + encode ◄── detections ─┘
    driver ◄──ChunkResult (H.264 bytes, counts)─┘

* ``ChunkActor`` (async, CPU): several chunks at once; CPU work runs in threads (PyAV,
  OpenCV and onnxruntime release the GIL), so one chunk's decode overlaps another's wait
  for the detector.
* ``DetectorActor`` (async; GPU, fraction of a GPU, or CPU): collects the frames of
  concurrent callers into one batch, up to ``max_batch_frames`` or ``max_wait_s`` (the
  pattern of Ray Serve's ``@serve.batch``), runs the detectors once for all of them.

Fail closed: a detector that raises or times out marks the frames it was given failed;
the chunk's policy then masks them whole (or drops them). Infrastructure outages (an
actor or node that died) are not detection failures: the result says ``outage`` and the
driver retries the chunk; nothing is dead-lettered for them.

Resources are never in decorators: the driver sets them with ``.options(...)`` from the
config, because an actor asking for a GPU is never scheduled on a node without one.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from operators.redactor import Redactor
from operators.temporal import detection_schedule
from operators.types import Boxes
from schemas.errors import VeilStreamError

from .plan import MaskingPlan, OnFailure, PolicyPlan

logger = logging.getLogger(__name__)


class ChunkStage(enum.Enum):
    """Where a chunk is, or where it failed."""

    QUEUED = "queued"
    DECODE = "decode"
    DETECT = "detect"
    FINISH = "finish"
    DONE = "done"


@dataclass(frozen=True)
class ChunkTask:
    """What the driver sends for one chunk (no frames: the encoded payload)."""

    codec: str
    payload: bytes = field(repr=False)
    camera_id: str = ""
    fps: float = 25.0
    pts_ms: tuple[int, ...] = ()
    width: int = 0
    height: int = 0
    policy_id: str | None = None
    camera_zones: tuple[dict[str, Any], ...] = ()
    max_pixels: int | None = None
    max_decoded_bytes: int | None = None


@dataclass(frozen=True)
class Detections:
    """Detector output for the frames one caller sent: boxes per frame, failed frame
    indices (into those frames), error strings."""

    boxes: list[Boxes | None]
    failed: list[int]
    errors: list[str]
    cpu_s: float = 0.0


@dataclass(frozen=True)
class ChunkResult:
    """One redacted chunk, or why there is none.

    Attributes:
        failed_stage: ``None`` when redacted; ``DECODE`` (bad payload: DLQ) or ``FINISH``
            (could not even encode a fully masked chunk: DLQ).
        reason: the DLQ reason when it is not the stage's own (``limit_exceeded``: the
            decoder stopped at ``limits.max_decoded_bytes_per_chunk``).
        outage: an actor or node was unavailable: the driver retries the chunk.
        detector_timeout: index of a detector that timed out (the driver restarts it).
        payload: H.264 of the kept frames; ``None`` when every frame was dropped.
        cpu_s: CPU seconds per step (decode, detect, mask, encode).
    """

    failed_stage: ChunkStage | None = None
    error: str = ""
    reason: str | None = None
    outage: bool = False
    detector_timeout: int | None = None
    payload: bytes | None = field(default=None, repr=False)
    pts_ms: tuple[int, ...] = ()
    dropped: int = 0
    masks_per_class: dict[str, int] = field(default_factory=dict)
    fail_closed_frames: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()
    cpu_s: dict[str, float] = field(default_factory=dict)
    detectors_used: tuple[int, ...] = ()
    detect_wall_s: float = 0.0


def is_outage(exc: BaseException) -> bool:
    """True for Ray errors that mean "the infrastructure was unavailable" (an actor, worker,
    node or object is gone, or the call was cancelled), not "this input is bad": those are
    retried, never dead-lettered. A ``RayTaskError`` is our code raising, unless its cause
    is itself an outage."""
    from ray import exceptions as rex

    outage_types = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError,
                    rex.OutOfMemoryError, rex.RaySystemError, rex.LocalRayletDiedError, rex.TaskCancelledError,
                    rex.GetTimeoutError)
    if isinstance(exc, outage_types):
        return True
    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        return cause is not None and cause is not exc and isinstance(cause, outage_types)
    return False


def _decode_failed(exc: Exception) -> ChunkResult:
    """The DLQ result of a chunk whose payload could not be decoded (``limit_exceeded`` when the
    decoder stopped at ``limits.max_decoded_bytes_per_chunk``)."""
    from operators.codec import DecodeLimitError

    return ChunkResult(ChunkStage.DECODE, f"decode failed: {type(exc).__name__}: {exc}"
                       if not isinstance(exc, VeilStreamError) else f"decode failed: {exc}",
                       reason=DecodeLimitError.reason if isinstance(exc, DecodeLimitError) else None)


ENCODE_THREADS = 1
"""libx264 threads per redacted chunk (see :meth:`ChunkActor._finish`)."""


def _cpu() -> float:
    return time.thread_time()


def _pixels(frames: np.ndarray) -> int:
    return int(frames.shape[0]) * int(frames.shape[1]) * int(frames.shape[2]) if frames.ndim >= 3 else 0


SPLIT_MIN_FRAMES = 2
"""A chunk with at least this many scheduled frames may be split across two detectors (see
:meth:`ChunkActor._detect`); 0 = never split."""

PEERS_REFRESH_S = 60.0
"""How long a chunk actor trusts its list of detectors on its own node before asking again."""

LOAD_QUERY_TIMEOUT_S = 2.0
"""A detector that does not say its load within this long is not split to (the chunk goes whole)."""


def lane_groups(sizes: list[int], lanes: int) -> list[list[int]]:
    """Indices into ``sizes`` (frames per chunk) in ``lanes`` groups of contiguous chunks with
    about equal frame counts (each chunk whole: its text cadence and plate carry stay within
    one lane's call); fewer chunks than lanes leaves groups empty.

    Raises:
        ValueError: ``lanes < 1``.
    """
    if lanes < 1:
        raise ValueError(f"lanes: expected >= 1, got {lanes}")
    total = sum(sizes)
    groups: list[list[int]] = [[] for _ in range(lanes)]
    acc = 0
    for i, n in enumerate(sizes):
        # the lane whose share of the frames this chunk's middle falls in
        k = min(lanes - 1, int((acc + n / 2) * lanes / total)) if total else i % lanes
        groups[k].append(i)
        acc += n
    return groups


SMALL_LANES = 2
"""One-thread detector lanes a :class:`DetectorActor` runs small frames on, in parallel (see
:meth:`DetectorActor._lane_loop`); 0 or 1 = none."""

_FAIL_LOCK = threading.Lock()
"""Guards the take of :meth:`DetectorActor.fail_next`'s mode: the main run's thread and the lane
loops race for it, and exactly one run may get it."""

_Item = tuple[np.ndarray, "asyncio.Future[Detections]"]
"""One caller's frames and the future its answer goes to."""


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class DetectorActor:
    """Holds the detectors (heavy ONNX sessions) and batches the frames of concurrent
    callers into one detector run."""

    # Defaults for state that only some paths set (a bare actor made with ``__new__`` in tests and
    # load scripts sets just the batch loop's attributes): no lanes, no small queue.
    small_side: int | None = None
    small_lanes = 0
    independent_lanes = True
    lane_runs = 0
    _lanes_state = "off"
    _lanes: list[Redactor] | None = None
    _lane_pools: list[ThreadPoolExecutor] | None = None
    _small_queue: asyncio.Queue[_Item] | None = None
    _lane_tasks: tuple[asyncio.Task[None], ...] = ()
    _fail_mode: str | None = None

    def __init__(self, plan: MaskingPlan, max_batch_frames: int = 32, max_wait_s: float = 0.05,
                 timeout_s: float = 30.0, small_lanes: int = SMALL_LANES, independent_lanes: bool = True) -> None:
        # callers send only the frames to detect on: the schedule is theirs
        self.redactor = Redactor(replace(plan.detector, detect_every=1))
        cfg = self.redactor.config
        # Small frames (longer side <= small_frame_side, detected at the camera's own size) on
        # one-thread lanes, in parallel: on a 320x180 snapshot frame the all-cores sessions cost
        # x1.2 the CPU of one thread (thread hand-offs around tiny ops; docs/performance.md
        # "Session 9: snapshot cameras"), while large frames (a crowd at 720p) run faster on all
        # cores. Only for ``threads: null`` on CPU with >= 2 cores: an explicit thread count is
        # kept for every frame. The lanes are built on the first small frame (in the background;
        # until they are ready the all-cores sessions serve it), so a stage that never sees one
        # pays no memory for them (~210 MiB per lane).
        parts = [p for d in self.redactor.detectors.values()
                 for p in (getattr(d, "components", None) or {"": d}).values()]
        on_cpu = all(list(getattr(p, "providers", ["CPUExecutionProvider"])) in
                     (["CPUExecutionProvider"], ["openvino"]) for p in parts)
        self.small_side = cfg.small_frame_side
        self.small_lanes = (int(small_lanes) if cfg.threads is None and on_cpu and self.small_side
                            and _usable_cores() >= 2 and int(small_lanes) >= 2 else 0)
        # True: each lane runs its own batch loop on a shared queue of small callers (a lane that
        # is free takes the next small work; none waits for another). False: the layout before
        # (session 12): the one batch loop splits a batch's small chunks over the lanes and waits
        # for all of them; kept to measure against (load_tests/snapshot_cpu_breakdown.py).
        self.independent_lanes = bool(independent_lanes)
        self._lanes = None
        self._lane_pools = None  # one single-thread executor per lane (a timed-out run's is replaced)
        self._lanes_lock = threading.Lock()
        self._lanes_state = "off" if not self.small_lanes else "wanted"  # -> building -> ready | failed
        self._fail_mode = None
        self.lane_runs = 0  # lane calls made (a lane loop's runs; before: one per lane a batch used)
        self.max_batch_frames = max(1, int(max_batch_frames))
        self.max_wait_s = float(max_wait_s)
        # the deadline runs from the start of a batch, not from a caller's wait in the queue: a
        # backlog is not a detector failure (a chunk behind five others must not fail closed)
        self.timeout_s = float(timeout_s)
        self._queue: asyncio.Queue[_Item] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the actor's event loop, where the batch loops run
        self._small_queue = None  # small callers once the lanes run their own loops
        self._lane_tasks = ()
        self.calls = 0
        self.batches = 0  # detector runs: the main loop's batches and the lane loops' runs
        # decoded pixels of the frames callers sent that have no answer yet (queued or running):
        # what a chunk actor reads to decide whether to split a chunk across detectors
        self._pending_px = 0

    def ready(self) -> list[dict[str, str]]:
        return self.redactor.model_ids

    def node_id(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    async def detect(self, frames: np.ndarray) -> Detections:
        """Detections for ``frames`` (``(N, H, W, 3)`` uint8), batched with other callers'."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._loop = asyncio.get_running_loop()
            self._loop_task = self._loop.create_task(self._batch_loop())
        queue = self._queue
        if self.small_lanes and self.independent_lanes and self._is_small(frames) and self._ready_lanes():
            queue = self._lane_queue()
        fut: asyncio.Future[Detections] = asyncio.get_running_loop().create_future()
        px = _pixels(frames)
        self._pending_px += px
        try:
            await queue.put((frames, fut))
            self.calls += 1
            return await fut
        finally:
            self._pending_px -= px

    async def detect_many(self, chunks: list[np.ndarray]) -> list[Detections]:
        """:meth:`detect` for several callers' frames sent in one call (a chunk actor's batch of
        small chunks, :meth:`ChunkActor.redact_many`): each array is queued as its own caller, so
        it is batched with every other caller's and answered on its own (a failed run fails
        closed only the frames it held)."""
        return list(await asyncio.gather(*(self.detect(c) for c in chunks)))

    def pending_px(self) -> int:
        """Decoded pixels (frames x height x width) sent to this detector and not answered yet."""
        return self._pending_px

    def _loop_tasks(self) -> list[asyncio.Task[None]]:
        return [t for t in (self._loop_task, *self._lane_tasks) if t is not None]

    def __ray_shutdown__(self) -> None:
        """Ray calls this when the actor exits gracefully (its handles are gone; every call has
        been answered): stop the batch loops on the actor's event loop and wait for them (the
        pinned Ray calls this with that loop stopped but not closed; a running one is handled
        too). Left pending, a loop is destroyed with the closed event loop, and every normal stop
        logged "Task was destroyed but it is pending!" and a ``RuntimeError('Event loop is
        closed')`` traceback. (A ``ray.kill`` skips this hook; the process just ends.)"""
        tasks, loop = [t for t in self._loop_tasks() if not t.done()], self._loop
        if not tasks or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # called on the loop itself: nothing to wait with, cancel them
            for task in tasks:
                task.cancel()
            return
        try:
            if loop.is_running():  # in its own thread: hand it the stop and wait
                asyncio.run_coroutine_threadsafe(self._stop_batch_loop(), loop).result(timeout=5.0)
            else:  # Ray has stopped the loop (not closed it yet) before calling this: run the stop on it here
                loop.run_until_complete(asyncio.wait_for(self._stop_batch_loop(), 5.0))
        except Exception as exc:  # noqa: BLE001 - the loop stopped under us: the process is ending anyway
            logger.debug("detector batch loop stop: %r", exc)

    async def _stop_batch_loop(self) -> None:
        """Stops the main batch loop and every lane loop; their callers (held in a batch being
        collected or run, or still queued: none on a graceful exit, Ray waits for every call)
        fail closed."""
        tasks = [t for t in self._loop_tasks() if not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        for queue in (self._queue, self._small_queue):
            while queue is not None and not queue.empty():
                frames, fut = queue.get_nowait()
                if not fut.done():
                    fut.set_result(_failed(len(frames), "detector stopped"))

    async def _collect(self, queue: asyncio.Queue[_Item], batch: list[_Item], max_frames: int) -> None:
        """Appends to ``batch`` the next caller of ``queue`` and those that follow within
        ``max_wait_s``, up to ``max_frames`` frames (the first one whatever its size)."""
        first = await queue.get()
        batch.append(first)
        n = len(first[0])
        deadline = time.monotonic() + self.max_wait_s
        while n < max_frames:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                break
            batch.append(item)
            n += len(item[0])

    async def _serve(self, batch: list[_Item], run: asyncio.Future[list[Detections]]) -> bool:
        """Answers every caller of ``batch`` with ``run``'s result, or fails its frames closed when
        the run raises or passes ``timeout_s`` (counted from now: the run has just started).
        Returns whether it timed out (its thread is then still stuck in it)."""
        timed_out = False
        try:
            out = await asyncio.wait_for(run, self.timeout_s)
        except TimeoutError:  # hung or starved: its frames fail closed; a stuck thread is left behind
            timed_out = True
            out = [_failed(len(f), f"detector timeout after {self.timeout_s}s") for f, _ in batch]
        except Exception as exc:  # noqa: BLE001 - a broken detector fails closed, never crashes the loop
            out = [_failed(len(f), f"detector: {exc}") for f, _ in batch]
        for (_, fut), res in zip(batch, out):
            if not fut.done():
                fut.set_result(res)
        return timed_out

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        batch: list[_Item] = []
        try:
            while True:
                batch = []
                await self._collect(self._queue, batch, self.max_batch_frames)
                self.batches += 1
                await self._serve(batch, asyncio.ensure_future(
                    asyncio.to_thread(self._run, [frames for frames, _ in batch])))
        finally:  # cancelled (the actor stops): the callers it holds fail closed, none waits forever
            _fail_all(batch, "detector stopped")

    def _lane_queue(self) -> asyncio.Queue[_Item]:
        """The queue of small callers, with one loop per lane taking from it (started on the first
        small caller once the lanes are ready; on the actor's event loop)."""
        if self._small_queue is None:
            lanes = self._lanes
            assert lanes is not None and self._loop is not None
            self._small_queue = asyncio.Queue()
            self._lane_tasks = tuple(self._loop.create_task(self._lane_loop(k)) for k in range(len(lanes)))
        return self._small_queue

    async def _lane_loop(self, k: int) -> None:
        """Lane ``k``'s own batch loop: as soon as the lane is free, it collects the next small
        callers (up to its share of ``max_batch_frames``: what a batch gave each lane before) and
        runs them on its one-thread sessions, in its own thread, while the other lanes and the
        main loop go on. A chunk is one caller, so it never straddles two lanes."""
        queue, lanes, pools = self._small_queue, self._lanes, self._lane_pools
        assert queue is not None and lanes is not None and pools is not None
        share = -(-self.max_batch_frames // len(lanes))
        loop = asyncio.get_running_loop()
        batch: list[_Item] = []
        try:
            while True:
                batch = []
                await self._collect(queue, batch, share)
                self.batches += 1
                self.lane_runs += 1
                mode = self._take_fail_mode()
                run = loop.run_in_executor(pools[k], self._run_lane, lanes[k], [f for f, _ in batch], mode)
                if await self._serve(batch, run):  # its thread stays stuck; the lane goes on in a fresh one
                    pools[k].shutdown(wait=False)
                    pools[k] = ThreadPoolExecutor(1, thread_name_prefix=f"detector-lane{k}")
        finally:
            _fail_all(batch, "detector stopped")

    def _take_fail_mode(self) -> str | None:
        with _FAIL_LOCK:
            mode, self._fail_mode = self._fail_mode, None
        return mode

    @staticmethod
    def _run_lane(lane: Redactor, chunks: list[np.ndarray], mode: str | None) -> list[Detections]:
        # thread time: the lane's sessions are one-thread (they run on this thread), and the other
        # lanes and the main sessions run beside it in this process
        t0 = time.thread_time()
        _inject(mode)
        raw = lane.detect_many(chunks)
        per_frame_cpu = (time.thread_time() - t0) / max(1, sum(len(c) for c in chunks))
        return [Detections(list(b), list(f), list(e), per_frame_cpu * len(c)) for (b, f, e), c in zip(raw, chunks)]

    def _run(self, chunks: list[np.ndarray]) -> list[Detections]:
        # process time: onnxruntime's own threads count too (one batch runs at a time here; with
        # independent lanes, a lane run beside it counts too: small frames go to the lanes then)
        t0 = time.process_time()
        _inject(self._take_fail_mode())
        raw = self._detect_many(chunks)
        per_frame_cpu = (time.process_time() - t0) / max(1, sum(len(c) for c in chunks))
        return [Detections(list(b), list(f), list(e), per_frame_cpu * len(c)) for (b, f, e), c in zip(raw, chunks)]

    def _is_small(self, frames: np.ndarray) -> bool:
        side = self.small_side
        return side is not None and frames.ndim == 4 and max(int(frames.shape[1]), int(frames.shape[2])) <= side

    def _detect_many(self, chunks: list[np.ndarray]
                     ) -> list[tuple[list[Boxes | None], list[int], list[str]]]:
        """:meth:`Redactor.detect_many` of ``chunks`` for the main batch loop. With
        ``independent_lanes`` (the default) every chunk runs on the all-cores sessions: small
        ones come here only before the lanes are ready (the lanes' own loops serve them after).
        Without it (the layout before), the small ones are split by chunk across the one-thread
        lanes (in parallel, the rest on the all-cores sessions meanwhile) once the lanes are
        ready. Raises what a lane or the main run raises: the batch loop then fails every frame
        of the batch closed."""
        small = [i for i, c in enumerate(chunks) if self._is_small(c)]
        lanes = self._ready_lanes() if small and self.small_lanes else None
        if not lanes or self.independent_lanes:
            return self.redactor.detect_many(chunks)
        pools = self._lane_pools
        assert pools is not None
        groups = lane_groups([len(chunks[i]) for i in small], len(lanes))
        futs = [pool.submit(lane.detect_many, [chunks[small[k]] for k in g])
                for pool, lane, g in zip(pools, lanes, groups) if g]
        self.lane_runs += len(futs)
        is_small = set(small)
        rest = [i for i in range(len(chunks)) if i not in is_small]
        out: list[Any] = [None] * len(chunks)
        try:
            if rest:
                for i, r in zip(rest, self.redactor.detect_many([chunks[i] for i in rest])):
                    out[i] = r
        finally:
            done = [f.result() for f in futs]  # waits for every lane, even when the main run raised
        for g, res in zip((g for g in groups if g), done):
            for k, r in zip(g, res):
                out[small[k]] = r
        return out

    def _ready_lanes(self) -> list[Redactor] | None:
        """The lanes when they are built; on the first call, starts building them in a thread."""
        if self._lanes_state == "ready":
            return self._lanes
        with self._lanes_lock:
            if self._lanes_state == "wanted":
                self._lanes_state = "building"
                threading.Thread(target=self._build_lanes, name="detector-lanes", daemon=True).start()
        return None

    def _build_lanes(self) -> None:
        try:
            cfg = replace(self.redactor.config, threads=1)
            lanes = [Redactor(cfg) for _ in range(self.small_lanes)]
            side = int(self.small_side or 1)
            for lane in lanes:  # each session's first small input (OpenVINO compiles its shape)
                lane.run_detectors(np.zeros((1, min(side, 180), side, 3), np.uint8))
            self._lane_pools = [ThreadPoolExecutor(1, thread_name_prefix=f"detector-lane{k}")
                                for k in range(len(lanes))]
            self._lanes = lanes
            self._lanes_state = "ready"
            logger.info("detector lanes ready: %d one-thread lanes for frames of at most %d px", len(lanes), side)
        except Exception as exc:  # noqa: BLE001 - the all-cores sessions keep serving small frames
            self._lanes_state = "failed"
            logger.error("detector lanes could not be built (%s): small frames stay on the all-cores sessions", exc)

    def fail_next(self, mode: str) -> None:  # fault injection for tests: "raise" or "hang"
        """The next run raises (``raise``) or never returns (``hang``): the main loop's batch or a
        lane's run, whichever takes it first, whichever sessions it would use."""
        self._fail_mode = mode


def _failed(n: int, why: str) -> Detections:
    """``n`` frames failed closed (no boxes), for ``why``."""
    return Detections([None] * n, list(range(n)), [why])


def _fail_all(batch: list[_Item], why: str) -> None:
    for frames, fut in batch:
        if not fut.done():
            fut.set_result(_failed(len(frames), why))


def _inject(mode: str | None) -> None:
    """:meth:`DetectorActor.fail_next`'s failure, in the run that took it."""
    if mode is not None:
        if mode == "hang":
            time.sleep(3600)
        raise RuntimeError("injected detector failure")


class ChunkActor:
    """Decode, detect (through the detector actors), mask and encode whole chunks."""

    def __init__(self, plan: MaskingPlan, detectors: list[Any], *, crf: int = 23, preset: str = "veryfast",
                 detector_timeout_s: float = 30.0, local: list[int] | None = None,
                 split_min_frames: int = SPLIT_MIN_FRAMES) -> None:
        self.plan = plan
        self.detectors = list(detectors)
        # node-local processing: the detectors this actor sends frames to (indices into
        # ``detectors``, which stay global so a timeout names the one to restart). The driver
        # passes those of this actor's placement group: decoded frames stay on the node.
        self.local = [i for i in (local if local is not None else range(len(self.detectors)))
                      if 0 <= i < len(self.detectors)] or list(range(len(self.detectors)))
        self.crf, self.preset = crf, preset
        self.detector_timeout_s = float(detector_timeout_s)
        # the detector enforces detector_timeout_s per batch; this safety net covers a detector
        # actor that stopped answering at all (queueing included), then it is restarted
        self.queue_timeout_s = max(300.0, 10 * self.detector_timeout_s)
        self._rr = 0
        self.split_min_frames = int(split_min_frames)
        self._peers: list[int] | None = None  # detectors on this actor's node (split targets)
        self._peers_at = 0.0
        # maskers per policy (no detectors here: they live in the detector actors)
        self.redactors = {pid: Redactor(p.redaction, detectors={}) for pid, p in plan.policies.items()}
        self._zones: dict[tuple[str, str, str], Any] = {}

    def ready(self) -> bool:
        return True

    def node_id(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def _redactor(self, pol: PolicyPlan, camera_id: str, camera_zones: tuple[dict[str, Any], ...]) -> Redactor:
        """The policy's masker with the zones of this camera (policy's ∪ camera's), cached."""
        key = (pol.policy_id, camera_id, repr(camera_zones))
        r = self._zones.get(key)
        if r is None:
            zones = pol.zone_set(camera_id, camera_zones)  # typed once per camera, no document
            base = self.redactors[pol.policy_id]
            r = base if zones is None else Redactor(base.config, zones=zones, detectors={})
            if len(self._zones) > 4096:
                self._zones.clear()
            self._zones[key] = r
        return r

    def _decode(self, task: ChunkTask) -> tuple[np.ndarray, float]:
        from operators.codec import decode_chunk_payload

        t0 = _cpu()
        frames = decode_chunk_payload(task.codec, task.payload, (task.width, task.height) if task.width else None,
                                      expected_frames=len(task.pts_ms), max_pixels=task.max_pixels, strict=True,
                                      max_decoded_bytes=task.max_decoded_bytes)
        if len(frames) != len(task.pts_ms):
            raise VeilStreamError(f"payload holds {len(frames)} frames, the message says {len(task.pts_ms)}")
        return frames, _cpu() - t0

    async def redact(self, task: ChunkTask) -> ChunkResult:
        """One chunk end to end; never raises for bad input (see :class:`ChunkResult`)."""
        cpu: dict[str, float] = {}
        pol = self.plan.for_chunk(task.policy_id)
        if pol is None:  # the driver checks first
            return ChunkResult(ChunkStage.FINISH, f"no policy {task.policy_id!r} in this worker")
        try:
            frames, cpu["decode"] = await asyncio.to_thread(self._decode, task)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad message, not a crash
            return _decode_failed(exc)
        sched = [i for i, s in enumerate(detection_schedule(len(frames), pol.redaction.detect_every)) if s]
        t_det = time.monotonic()
        got = await self._detect(frames, sched)
        if isinstance(got, ChunkResult):  # an outage: the driver retries the chunk
            return got
        raw, failed, errors, det_cpu, timed_out, used = got
        if det_cpu is not None:
            cpu["detect"] = det_cpu
        detect_wall = time.monotonic() - t_det
        if failed:
            logger.error("detection failed camera=%s frames=%d/%d: failing closed (%s)", task.camera_id,
                         len(failed), len(frames), "; ".join(errors)[:300])
        redactor = self._redactor(pol, task.camera_id, task.camera_zones)
        try:
            res = await asyncio.to_thread(self._finish, redactor, pol, frames, raw, failed, errors, task)
        except Exception as exc:  # noqa: BLE001 - cannot even encode a fully masked chunk: DLQ
            return ChunkResult(ChunkStage.FINISH, f"{type(exc).__name__}: {exc}")
        return replace(res, detector_timeout=timed_out, cpu_s={**res.cpu_s, **cpu}, detectors_used=tuple(used),
                       detect_wall_s=detect_wall)

    async def redact_many(self, *tasks: ChunkTask) -> tuple[ChunkResult, ...]:
        """Several chunks (of any cameras) in one call, one result per chunk in ``tasks`` order,
        each what :meth:`redact` would have returned for it alone.

        The chunks come as separate arguments, not one list: Ray inlines an argument of up to
        100 KiB in the call itself and puts a larger one in the object store (a put, a fetch
        and the raylet's bookkeeping). Eight one-frame 320x180 chunks pickle to ~102 KB as one
        list, just over, while each is ~13 KB: separate, they travel inline (x0.59 of Ray's CPU
        per chunk in a call-only benchmark, docs/performance.md "Per-chunk overhead of
        one-frame chunks").

        Why: a snapshot camera's chunk is one small frame (320x180 at 0.5 fps), and each chunk
        paid two Ray calls (driver -> chunk actor, chunk actor -> detector, its frames through the
        object store) and two thread hops besides its own work: about as much CPU as its
        detection. Here a batch pays one call of each and one thread hop per step: every chunk
        is decoded, the scheduled frames of all of them go to one detector in one call
        (:meth:`DetectorActor.detect_many`), then every chunk is masked and encoded. The driver
        sends a batch only of small chunks (:func:`~.batching.plan_batches`); a large chunk
        goes alone to :meth:`redact`.

        Per chunk, as alone: an unknown policy or a payload that does not decode is that
        chunk's failure (DLQ), a chunk that cannot be encoded is that chunk's DLQ, and the others
        go on; a detector that raises or times out fails closed the frames it held. A detector
        actor that is unavailable is an outage for every chunk of the batch whose frames were
        sent (the driver retries each); a chunk that failed before detection keeps its failure.
        """
        results: list[ChunkResult | None] = [None] * len(tasks)
        pols: list[PolicyPlan | None] = [self.plan.for_chunk(t.policy_id) for t in tasks]
        for i, (t, pol) in enumerate(zip(tasks, pols)):
            if pol is None:  # the driver checks first
                results[i] = ChunkResult(ChunkStage.FINISH, f"no policy {t.policy_id!r} in this worker")
        todo = [i for i in range(len(tasks)) if results[i] is None]
        decoded = await asyncio.to_thread(self._decode_each, [tasks[i] for i in todo])
        live: list[tuple[int, np.ndarray, list[int], float]] = []  # (task index, frames, schedule, decode CPU-s)
        for i, got in zip(todo, decoded):
            if isinstance(got, Exception):
                results[i] = _decode_failed(got)
                continue
            frames, dec_cpu = got
            pol = pols[i]
            assert pol is not None
            sched = [k for k, s in enumerate(detection_schedule(len(frames), pol.redaction.detect_every)) if s]
            live.append((i, frames, sched, dec_cpu))
        if live:
            own = self.local[self._rr % len(self.local)]
            self._rr += 1
            t_det = time.monotonic()
            timed_out: int | None = None
            try:
                dets: list[Detections | None] = list(await asyncio.wait_for(
                    self.detectors[own].detect_many.remote([frames[sched] for _, frames, sched, _ in live]),
                    self.queue_timeout_s))
                if len(dets) != len(live):
                    raise VeilStreamError(f"detector answered {len(dets)} of {len(live)} chunks")
                why: list[str] = []
            except TimeoutError:
                timed_out, dets, why = own, [None] * len(live), [f"detector unresponsive for {self.queue_timeout_s}s"]
            except Exception as exc:  # noqa: BLE001 - an outage is retried; anything else fails closed
                if is_outage(exc):
                    gone = ChunkResult(error=f"detector unavailable: {str(exc).splitlines()[0][:200]}", outage=True)
                    for i, *_ in live:
                        results[i] = gone
                    return tuple(r if r is not None else gone for r in results)
                dets, why = [None] * len(live), [f"detector error: {str(exc).splitlines()[0][:200]}"]
            detect_wall = time.monotonic() - t_det
            work = []
            for (i, frames, sched, dec_cpu), det in zip(live, dets):
                raw: list[Boxes | None] = [None] * len(frames)
                cpu = {"decode": dec_cpu}
                if det is None:  # the call failed: every frame of the chunk is masked whole
                    failed, errors = list(range(len(frames))), list(why)
                else:
                    for j, fi in enumerate(sched):
                        raw[fi] = det.boxes[j]
                    failed, errors = sorted(sched[j] for j in det.failed), list(det.errors)
                    cpu["detect"] = det.cpu_s
                if failed:
                    logger.error("detection failed camera=%s frames=%d/%d: failing closed (%s)", tasks[i].camera_id,
                                 len(failed), len(frames), "; ".join(errors)[:300])
                pol = pols[i]
                assert pol is not None
                work.append((i, self._redactor(pol, tasks[i].camera_id, tasks[i].camera_zones), pol, frames, raw,
                             failed, errors, cpu))
            finished = await asyncio.to_thread(self._finish_each, work, tasks)
            for (i, *_, cpu), res in zip(work, finished):
                results[i] = (ChunkResult(ChunkStage.FINISH, f"{type(res).__name__}: {res}")
                              if isinstance(res, Exception) else
                              replace(res, detector_timeout=timed_out, cpu_s={**res.cpu_s, **cpu},
                                      detectors_used=(own,), detect_wall_s=detect_wall))
        out = tuple(r for r in results if r is not None)
        assert len(out) == len(tasks)
        return out

    def _decode_each(self, tasks: list[ChunkTask]) -> list[tuple[np.ndarray, float] | Exception]:
        """:meth:`_decode` of every task in this one worker thread; a failure is that task's."""
        out: list[tuple[np.ndarray, float] | Exception] = []
        for t in tasks:
            try:
                out.append(self._decode(t))
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad message, not a crash
                out.append(exc)
        return out

    def _finish_each(self, work: list[Any], tasks: Sequence[ChunkTask]) -> list[ChunkResult | Exception]:
        """:meth:`_finish` of every chunk of a batch in this one worker thread; a chunk that
        cannot even be encoded fully masked is that chunk's failure (DLQ), not the batch's."""
        out: list[ChunkResult | Exception] = []
        for i, redactor, pol, frames, raw, failed, errors, _ in work:
            try:
                out.append(self._finish(redactor, pol, frames, raw, failed, errors, tasks[i]))
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out

    # ---------------------------------------------------------------- detection
    async def _detect(self, frames: np.ndarray, sched: list[int]
                      ) -> tuple[list[Boxes | None], list[int], list[str], float | None, int | None, list[int]] | ChunkResult:
        """Detections for the scheduled frames ``sched`` of ``frames``, from one detector, or split
        in two contiguous halves across two detectors of this node when that ends sooner.

        Returns ``(raw, failed, errors, detect CPU-s or None, index of a timed-out detector or None,
        detectors used)``, or a :class:`ChunkResult` with ``outage`` set when a detector actor
        was unavailable (the driver retries the whole chunk).

        Why split: one detector runs one batch at a time, mostly on one thread, so a large chunk
        (``make demo``'s street camera: ~4 CPU-s of detection) took its whole detection time on
        one core while another detector idled. A split only happens when a second detector of
        this node would finish the second half before this chunk's own detector finished the
        whole (their outstanding pixels compared, :meth:`_split_to`). Halves are contiguous, so the
        plate carry (within one detector call) still runs within each half.

        Fail closed as with one call: if either half raises, times out, or comes back with any
        frame failed (the detector actor answers a batch that raised or passed its deadline with
        every frame failed), every frame of the chunk is marked failed (masked whole), as when
        the single call fails. A chunk sent whole keeps the detector's own failed frames.
        """
        own = self.local[self._rr % len(self.local)]
        self._rr += 1
        parts: list[tuple[int, list[int]]] = [(own, sched)]
        other = await self._split_to(own, frames, sched)
        if other is not None:
            k = (len(sched) + 1) // 2
            parts = [(own, sched[:k]), (other, sched[k:])]
        calls = [asyncio.wait_for(self.detectors[i].detect.remote(frames[idx]), self.queue_timeout_s)
                 for i, idx in parts]
        outs: list[Any] = list(await asyncio.gather(*calls, return_exceptions=True))
        raw: list[Boxes | None] = [None] * len(frames)
        failed: list[int] = []
        errors: list[str] = []
        timed_out: int | None = None
        whole_failed = False
        cpu: float | None = 0.0
        for (i, idx), out in zip(parts, outs):
            if isinstance(out, BaseException) and not isinstance(out, Exception):
                raise out  # cancelled / KeyboardInterrupt: not ours to swallow
            if isinstance(out, TimeoutError):
                timed_out = i if timed_out is None else timed_out
                whole_failed = True
                errors.append(f"detector unresponsive for {self.queue_timeout_s}s")
                self._peers = None  # ask again which detectors are here
            elif isinstance(out, Exception):
                if is_outage(out):
                    self._peers = None
                    return ChunkResult(error=f"detector unavailable: {str(out).splitlines()[0][:200]}", outage=True)
                whole_failed = True
                errors.append(f"detector error: {str(out).splitlines()[0][:200]}")
            else:
                det: Detections = out
                for j, fi in enumerate(idx):
                    raw[fi] = det.boxes[j]
                failed += [idx[j] for j in det.failed]
                errors += [e for e in det.errors if e not in errors]
                if cpu is not None:
                    cpu += det.cpu_s
        if whole_failed:  # one half failed as a call: the whole chunk fails closed, as one call would
            failed, cpu = list(range(len(frames))), None
        elif failed and len(parts) > 1:
            # a detector failed inside a half's batch (it answers with those frames failed): one
            # call would have failed every scheduled frame of the chunk (one frame size, one
            # batch per detector), so the whole chunk fails closed, not just that half
            failed = list(range(len(frames)))
        return raw, sorted(failed), errors, cpu, timed_out, [i for i, _ in parts]

    async def _split_to(self, own: int, frames: np.ndarray, sched: list[int]) -> int | None:
        """The detector to send the second half of ``sched`` to, or ``None`` (send it whole to
        ``own``): another detector of this node whose outstanding pixels are below ``own``'s plus
        half of this chunk's, so that it finishes the second half before ``own`` would finish
        the whole. Any failure to learn the loads means no split."""
        if self.split_min_frames <= 0 or len(sched) < max(2, self.split_min_frames) or len(self.detectors) < 2:
            return None
        peers = [i for i in await self._same_node() if i != own]
        if not peers:
            return None
        ask = [own, *peers]
        try:
            loads = await asyncio.wait_for(asyncio.gather(*(self.detectors[i].pending_px.remote() for i in ask)),
                                           LOAD_QUERY_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a busy, restarting or older detector: send whole
            logger.debug("detector loads unknown (%s): chunk not split", exc)
            return None
        half = _pixels(frames[sched]) // 2
        load = dict(zip(ask, (int(x) for x in loads)))
        best = min(peers, key=lambda i: (load[i], i))
        return best if load[best] < load[own] + half else None

    def _own_node(self) -> str | None:
        """This actor's Ray node id; ``None`` outside Ray (asking Ray then would start one)."""
        import ray

        return self.node_id() if ray.is_initialized() else None

    async def _same_node(self) -> list[int]:
        """Indices of the detectors on this actor's node (decoded frames never leave the node),
        asked of the detectors and cached for :data:`PEERS_REFRESH_S`; its own local ones when
        that cannot be learnt."""
        now = time.monotonic()
        if self._peers is not None and now - self._peers_at < PEERS_REFRESH_S:
            return self._peers
        peers = list(self.local)
        try:
            mine = self._own_node()
            if mine is None:
                raise RuntimeError("not in a Ray actor")
            nodes = await asyncio.wait_for(asyncio.gather(*(d.node_id.remote() for d in self.detectors)),
                                           LOAD_QUERY_TIMEOUT_S)
            peers = sorted(set(peers) | {i for i, n in enumerate(nodes) if n == mine})
        except Exception as exc:  # noqa: BLE001 - not on Ray, a detector restarting: local ones only
            logger.debug("detector nodes unknown (%s): splitting among local detectors only", exc)
        self._peers, self._peers_at = peers, now
        return peers

    def _finish(self, redactor: Redactor, pol: PolicyPlan, frames: np.ndarray, raw: list[Boxes | None],
                failed: list[int], errors: list[str], task: ChunkTask) -> ChunkResult:
        """Mask and re-encode (runs in a worker thread). Fail closed: if masking itself
        fails, every frame is masked whole. ``on_failure=drop`` leaves the frames that
        would be masked whole out instead (``pts_ms`` lists the frames kept)."""
        from operators.codec import encode_h264_chunk

        t0 = _cpu()
        try:
            # the decoded chunk is this call's own: mask it in place (no 83 MB copy per 2 s of
            # 720p); if masking fails half way, the fallback below masks every frame whole
            out_res = redactor.finish(frames, raw, failed, camera_id=task.camera_id, in_place=True)
            out, counts, fail_closed = out_res.frames, out_res.masks_per_class, list(out_res.fail_closed_frames)
        except Exception as exc:  # noqa: BLE001
            logger.error("masking failed camera=%s error=%s: masking every frame whole", task.camera_id, exc)
            out = np.zeros_like(frames)
            counts = {c: 0 for c in redactor.config.classes}
            fail_closed = list(range(len(frames)))
            errors = [*errors, f"mask: {exc}"]
        t1 = _cpu()
        kept_pts, dropped = list(task.pts_ms), 0
        if pol.on_failure is OnFailure.DROP and fail_closed:
            gone = set(int(i) for i in fail_closed)
            keep = [i for i in range(len(out)) if i not in gone]
            out, kept_pts, dropped = out[keep], [task.pts_ms[i] for i in keep], len(gone)
            fail_closed = []
        # one libx264 thread: the same CPU as its default pool (1.5 threads per core plus lookahead,
        # per encode, with several chunks encoding at once), and all of it on this thread, so
        # the encode step's CPU (thread time) is what it costs (the pool's threads were ~75 % of it)
        payload = (encode_h264_chunk(out, fps=task.fps, pts_ms=kept_pts, crf=self.crf, preset=self.preset,
                                     threads=ENCODE_THREADS) if kept_pts else None)
        t2 = _cpu()
        return ChunkResult(payload=payload, pts_ms=tuple(kept_pts), dropped=dropped, masks_per_class=dict(counts),
                           fail_closed_frames=tuple(int(i) for i in fail_closed), errors=tuple(errors),
                           cpu_s={"mask": t1 - t0, "encode": t2 - t1})
