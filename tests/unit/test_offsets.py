from pipeline.offsets import OffsetTracker, may_submit, should_pause

TP = ("veil.chunks.raw", 0)


def test_empty_tracker_commits_nothing():
    t = OffsetTracker()
    assert t.committable() == {}
    assert t.inflight() == 0


def test_out_of_order_completion_commits_only_contiguous_prefix():
    t = OffsetTracker()
    for off in (10, 11, 12):
        t.started(TP, off)
    t.finished(TP, 12)
    assert t.committable() == {}  # 10 and 11 still in flight
    t.finished(TP, 10)
    assert t.committable() == {TP: 11}
    t.mark_committed({TP: 11})
    assert t.committable() == {}
    t.finished(TP, 11)
    assert t.committable() == {TP: 13}


def test_gaps_in_offsets_do_not_block():
    t = OffsetTracker()
    t.started(TP, 5)
    t.started(TP, 9)  # offsets 6-8 were compacted away or are control records
    t.finished(TP, 9)
    assert t.committable() == {}
    t.finished(TP, 5)
    assert t.committable() == {TP: 10}


def test_revoked_partition_is_forgotten_and_late_completion_ignored():
    t = OffsetTracker()
    t.started(TP, 1)
    t.started(TP, 2)
    assert t.revoke([TP]) == 2
    t.finished(TP, 1)
    assert t.committable() == {}
    assert t.inflight() == 0


def test_partitions_are_independent():
    t = OffsetTracker()
    other = ("veil.chunks.raw", 1)
    t.started(TP, 0)
    t.started(other, 0)
    t.finished(other, 0)
    assert t.committable() == {other: 1}
    assert t.inflight(TP) == 1


def test_backpressure_predicates():
    assert may_submit(0, 0, 4, 2)
    assert not may_submit(4, 0, 4, 2)
    assert not may_submit(1, 2, 4, 2)
    assert should_pause(2, 2) and not should_pause(1, 2)
