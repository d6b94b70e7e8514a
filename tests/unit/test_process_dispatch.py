"""The process worker sends each chunk to the chunk actor with the least decoded pixels in flight
(each chunk actor feeds its own detector: turn-taking could pile every large chunk on one)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pipeline.process.actors import ChunkTask
from pipeline.process.worker import ProcessWorker


class _Actor:
    def __init__(self, name: str, sent: list[tuple[str, str]]) -> None:
        self.redact = SimpleNamespace(remote=lambda task: self._remote(name, task, sent))

    @staticmethod
    def _remote(name: str, task: ChunkTask, sent: list[tuple[str, str]]) -> object:
        sent.append((name, task.camera_id))
        return object()  # a fresh "ref" per call


def _worker(n: int) -> tuple[ProcessWorker, list[tuple[str, str]], dict[Any, Any]]:
    sent: list[tuple[str, str]] = []
    w = ProcessWorker.__new__(ProcessWorker)  # no Kafka, no Ray: only the dispatch is under test
    w.workers = [_Actor(f"a{i}", sent) for i in range(n)]
    w._rr = 0
    w._sent = {}
    inflight: dict[Any, Any] = {}
    w.handler = SimpleNamespace(inflight=inflight)  # type: ignore[assignment]
    return w, sent, inflight


def _task(cam: str, frames: int, wh: tuple[int, int]) -> ChunkTask:
    return ChunkTask("h264", b"", cam, 25.0, tuple(range(frames)), wh[0], wh[1])


def test_large_chunks_spread_over_actors_small_ones_fill_in() -> None:
    w, sent, inflight = _worker(2)
    street = _task("street", 61, (640, 272))  # 10.6 Mpx
    tiny = _task("tiny", 120, (176, 144))  # 3.0 Mpx
    # in turn, every street chunk would go to the same actor (1st, 3rd, 5th)
    for t in (street, tiny, street, tiny, street, tiny):
        inflight[w._submit_task(t)] = t
    per_actor: dict[str, list[str]] = {"a0": [], "a1": []}
    for actor, cam in sent:
        per_actor[actor].append(cam)
    assert sorted(per_actor["a0"]) == ["street", "street", "tiny"]
    assert sorted(per_actor["a1"]) == ["street", "tiny", "tiny"]


def test_finished_chunks_no_longer_count_and_ties_take_turns() -> None:
    w, sent, inflight = _worker(2)
    big = _task("street", 61, (640, 272))
    r = w._submit_task(big)
    inflight[r] = big
    del inflight[r]  # it came back: a0 is idle again
    for _ in range(4):
        inflight[w._submit_task(_task("tiny", 1, (1, 1)))] = None
        inflight.clear()
    assert [a for a, _ in sent] == ["a1", "a0", "a1", "a0", "a1"]


def test_one_actor_gets_everything() -> None:
    w, sent, inflight = _worker(1)
    for _ in range(3):
        inflight[w._submit_task(_task("c", 10, (64, 64)))] = None
    assert [a for a, _ in sent] == ["a0"] * 3
