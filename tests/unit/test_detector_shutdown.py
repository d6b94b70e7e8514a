"""The detector actor's batch loop stops cleanly when Ray ends the actor (``__ray_shutdown__``):
no "Task was destroyed but it is pending!" and no ``RuntimeError('Event loop is closed')``
traceback in the operators' logs at a normal stop."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from operators.types import Boxes
from pipeline.process.actors import Detections, DetectorActor


def bare_detector() -> DetectorActor:
    d = DetectorActor.__new__(DetectorActor)  # no ONNX sessions: the batching loop only
    d.max_batch_frames, d.max_wait_s, d._queue, d._loop_task, d._loop = 64, 0.01, None, None, None
    d.calls, d.batches, d._pending_px, d.timeout_s = 0, 0, 0, 5.0
    d._run = lambda chunks: [Detections([Boxes.empty()] * len(c), [], []) for c in chunks]  # type: ignore[method-assign]
    return d


def test_shutdown_before_any_call_is_a_no_op():
    bare_detector().__ray_shutdown__()


def test_ray_shutdown_stops_the_batch_loop_on_the_actors_event_loop():
    # like an async Ray actor: the event loop runs in its own thread, the hook is called from another
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    errors: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(str(ctx.get("message"))))
    d = bare_detector()
    try:
        res = asyncio.run_coroutine_threadsafe(d.detect(np.zeros((2, 8, 8, 3), np.uint8)), loop).result(5.0)
        assert res.failed == [] and len(res.boxes) == 2
        task = d._loop_task
        assert task is not None and not task.done()  # the loop waits for the next caller
        d.__ray_shutdown__()
        assert task.done() and task.cancelled()
        d.__ray_shutdown__()  # twice is harmless
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        loop.close()
    del task, d
    import gc

    gc.collect()
    assert errors == []


def test_callers_still_queued_at_shutdown_fail_closed():
    async def scenario() -> Detections:
        d = bare_detector()
        d._queue = asyncio.Queue()
        d._loop = asyncio.get_running_loop()
        d._loop_task = d._loop.create_task(asyncio.sleep(3600))  # a loop that never takes the item
        fut: asyncio.Future[Detections] = d._loop.create_future()
        await d._queue.put((np.zeros((3, 8, 8, 3), np.uint8), fut))
        await d._stop_batch_loop()
        return await fut

    res = asyncio.run(scenario())
    assert res.failed == [0, 1, 2] and res.boxes == [None] * 3 and "stopped" in res.errors[0]


def test_ray_shutdown_stops_the_batch_loop_when_ray_already_stopped_the_event_loop():
    # what the pinned Ray does: the actor's loop is stopped (not closed) when the hook runs
    loop = asyncio.new_event_loop()
    errors: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(str(ctx.get("message"))))
    d = bare_detector()
    try:
        res = loop.run_until_complete(d.detect(np.zeros((1, 8, 8, 3), np.uint8)))
        assert len(res.boxes) == 1
        task = d._loop_task
        assert task is not None and not task.done() and not loop.is_running()
        d.__ray_shutdown__()
        assert task.done() and task.cancelled()
    finally:
        loop.close()
    del task, d
    import gc

    gc.collect()
    assert errors == []
