"""Per-key usage: counted in memory, drained as increments in one batch."""

from __future__ import annotations

from datetime import UTC, datetime

from llmgateway.pool.usage import UsageCounter, UsageDelta

T0 = 1_800_000_000.0


def test_requests_and_failures_are_drained_as_increments() -> None:
    counter = UsageCounter()
    counter.count(1, False, T0)
    counter.count(1, True, T0 + 1)
    counter.count(2, False, T0 + 2)
    assert counter.pending(1) == (2, 1, datetime.fromtimestamp(T0 + 1, UTC))
    assert counter.pending(3) is None
    assert sorted(counter.drain(), key=lambda d: d.key_id) == [
        UsageDelta(1, 2, 1, T0 + 1),
        UsageDelta(2, 1, 0, T0 + 2),
    ]
    assert counter.drain() == []
    assert counter.pending(1) is None
    counter.count(1, False, T0 + 5)
    assert counter.drain() == [UsageDelta(1, 1, 0, T0 + 5)]


def test_what_a_forgotten_key_counted_is_not_drained() -> None:
    counter = UsageCounter()
    counter.count(1, False, T0)
    counter.count(2, False, T0)
    counter.forget([1])
    assert [d.key_id for d in counter.drain()] == [2]
    counter.count(1, True, T0 + 3)
    assert counter.drain() == [UsageDelta(1, 1, 1, T0 + 3)]


def test_a_drain_leaves_nothing_per_key_behind() -> None:
    """Between two drains the counter holds the keys used meanwhile only, not every key ever used.

    A pool of 100,000 keys served round-robin would otherwise keep 100,000
    tallies alive for the garbage collector to walk.
    """
    counter = UsageCounter()
    for key_id in range(1000):
        counter.count(key_id, False, T0)
    assert len(counter) == 1000
    assert len(counter.drain()) == 1000
    assert len(counter) == 0
    counter.count(7, False, T0 + 1)
    assert len(counter) == 1 and counter.pending(8) is None
