"""`veilstream redact` overlaps decode, detect+mask and encode on threads: order, errors, early exit."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.redact_file import _prefetched


def test_items_come_in_order_and_a_producer_error_is_raised_after_them():
    def chunks():
        yield from range(5)
        raise ValueError("corrupt tail")

    got = []
    with pytest.raises(ValueError, match="corrupt tail"):
        for x in _prefetched(chunks()):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_leaving_early_stops_the_decoder_thread_within_one_hand_over():
    produced = []

    def chunks():
        for i in range(1000):
            produced.append(i)
            yield i

    for x in _prefetched(chunks(), depth=1):
        if x == 2:
            break
    time.sleep(0.3)
    assert len(produced) <= 5  # at most the item in hand, the one queued and one waiting
    assert not any(t.name == "veil-decode" and t.is_alive() for t in threading.enumerate())
