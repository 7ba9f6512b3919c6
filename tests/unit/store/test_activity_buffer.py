"""Usage and history waiting in the write queue: merged per key, kept in order, restored on failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from llmgateway.core.constants import Status
from llmgateway.store.activity_buffer import ActivityBuffer
from llmgateway.store.key_admin import HistoryEntry, UsageDelta

T0 = datetime(2026, 1, 1, tzinfo=UTC)
E0 = T0.timestamp()


def _change(key_id: int, second: int) -> HistoryEntry:
    at = T0 + timedelta(seconds=second)
    return HistoryEntry(key_id, "m", Status.VALID, Status.RATE_LIMITED, "rate_limited", "", at)


def test_usage_adds_up_per_key_keeping_the_latest_use() -> None:
    """Counts of one key merge; the later last use wins whatever the order of arrival."""
    buffer = ActivityBuffer()
    buffer.add_usage([UsageDelta(1, 2, 1, E0 + 5)])
    buffer.add_usage([UsageDelta(1, 3, 0, E0)])
    buffer.add_usage([UsageDelta(2, 1, 1, None)])
    batch = buffer.take()
    assert sorted(batch.usage, key=lambda d: d.key_id) == [
        UsageDelta(1, 5, 1, E0 + 5),
        UsageDelta(2, 1, 1, None),
    ]
    assert len(buffer) == 0 and not buffer.take()


def test_a_restored_batch_goes_before_what_arrived_since() -> None:
    """A failed write loses nothing: old history first, old and new counts merged."""
    buffer = ActivityBuffer()
    buffer.add_usage([UsageDelta(1, 1, 0, E0)])
    buffer.add_history(_change(1, 1))
    failed = buffer.take()
    buffer.add_usage([UsageDelta(1, 2, 1, E0)])
    buffer.add_history(_change(1, 2))
    buffer.restore(failed)
    again = buffer.take()
    assert again.usage == [UsageDelta(1, 3, 1, E0)]
    assert [h.at for h in again.history] == [T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
