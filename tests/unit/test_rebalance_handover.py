"""A rolling upgrade hands partitions from the old process job to the new one by rebalance.

Two things make that hand-over work: the new job is ready only once its consumers completed
their group join (a job counted ready right after subscribing let the rollout stop the old job
in the middle of the rebalance its join started; on tansu that group never completed it and
the raw topic stopped being consumed and committed), and a member's revoke callback commits
what it finished while the partitions are still its own (it used to be filtered out as "not
assigned", so the new owner redid it)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.kafka import ChunkConsumer
from pipeline.process.consumers import ConsumerActor
from pipeline.stage import Source, StageKafka
from schemas.config import parse_config
from tests.fakes import FakeProducer

TP = ("raw", 0)


class _Client:
    """The confluent-kafka Consumer under a ChunkConsumer: records commits."""

    def __init__(self) -> None:
        self.commits: list[dict[tuple[str, int], int]] = []
        self.refuse = 0  # refuse this many commits, as a broker does mid-rebalance

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        if self.refuse:
            self.refuse -= 1
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
        self.commits.append({(p.topic, p.partition): p.offset for p in offsets})

    def resume(self, parts: list[TopicPartition]) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def stage() -> Any:
    """A StageKafka on a real ChunkConsumer whose client is recorded, not a broker."""
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "metrics": {"enabled": False}})
    st = StageKafka(cfg, "process")
    cc = ChunkConsumer("127.0.0.1:9", "g", ["raw"], on_revoke=st.revoke)
    cc._c.close()
    cc._c = _Client()  # type: ignore[assignment]
    st.consumer, st.producer = cc, FakeProducer()
    return st


def test_a_consumer_has_not_joined_its_group_until_its_first_assignment(stage: Any) -> None:
    cc = stage.consumer
    assert cc.joined is False  # subscribed: its join (and the rebalance it causes) is still running
    cc._assigned(cc._c, [])  # more members than partitions: an empty assignment is a completed join too
    assert cc.joined is True and cc.assigned == set()


def test_a_consumer_actor_is_ready_only_once_its_consumer_joined() -> None:
    """The job's driver logs CONSUMING_LINE (the submitter's readiness, the rollout's go to stop the
    old job) from these answers."""
    consumer = SimpleNamespace(joined=False)
    actor = object.__new__(ConsumerActor)
    actor.index, actor.exit_code, actor.error = 0, None, None
    actor.worker = SimpleNamespace(metrics=SimpleNamespace(ready=True), kafka=SimpleNamespace(consumer=consumer),
                                   produced=0)
    assert actor.status()["ready"] is False  # the loop runs, the group has not assigned anything yet
    consumer.joined = True
    assert actor.status()["ready"] is True
    actor.worker.metrics.ready = False  # stopping
    assert actor.status()["ready"] is False


def test_a_revoke_commits_what_was_finished_before_the_partition_goes(stage: Any) -> None:
    cc = stage.consumer
    cc._assigned(cc._c, [TopicPartition(*TP)])
    stage.started(Source("raw", 0, 5))
    stage.started(Source("raw", 0, 6))
    stage.finished(Source("raw", 0, 5))  # durable, its commit not sent yet when the rebalance comes
    cc._revoked(cc._c, [TopicPartition(*TP)])
    assert cc._c.commits == [{TP: 6}]  # offset 6 was in flight: its new owner redoes it, not 5
    assert cc.assigned == set() and stage.tracker.inflight() == 0


def test_lost_partitions_are_not_committed(stage: Any) -> None:
    """Lost (the session expired): another member may own them already."""
    cc = stage.consumer
    cc._assigned(cc._c, [TopicPartition(*TP)])
    stage.started(Source("raw", 0, 5))
    stage.finished(Source("raw", 0, 5))
    cc._lost(cc._c, [TopicPartition(*TP)])
    assert cc._c.commits == [] and cc.assigned == set() and stage.tracker.inflight() == 0


def test_a_refused_commit_is_offered_again_and_the_revoke_commits_it(stage: Any) -> None:
    """A commit the broker refused (a rebalance in progress) used to count as done: nothing
    offered it again, not even the revoke callback, and the partition's new owner redid it."""
    cc = stage.consumer
    cc._assigned(cc._c, [TopicPartition(*TP)])
    stage.started(Source("raw", 0, 5))
    stage.finished(Source("raw", 0, 5))
    cc._c.refuse = 1
    stage.commit()
    assert cc._c.commits == [] and stage.tracker.committable() == {TP: 6}
    cc._revoked(cc._c, [TopicPartition(*TP)])
    assert cc._c.commits == [{TP: 6}]


def test_every_stage_on_the_runtime_is_ready_only_once_its_consumer_joined() -> None:
    """Sink, raw sink and local-mode process /readyz: the same gate as the job's consumer actors."""
    from pipeline.runtime import BaseHandler, RuntimeSettings, TestingSource, runtime_on_lists

    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "metrics": {"enabled": False}})
    source = TestingSource([])
    source.joined = False  # type: ignore[attr-defined]
    rt = runtime_on_lists(StageKafka(cfg, "sink"), BaseHandler(), RuntimeSettings(group="g", topics=("in",)), source)
    rt.step()
    assert rt.metrics.ready is False
    source.joined = True  # type: ignore[attr-defined]
    rt.step()
    assert rt.metrics.ready is True
