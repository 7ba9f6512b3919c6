"""Per-key usage and status history travel through the write queue to a real store, both engines."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from llmgateway.core.constants import ProviderType, Status
from llmgateway.core.errors import StoreError
from llmgateway.store.key_admin import HistoryEntry, UsageDelta
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.sqlite import SqliteStore
from llmgateway.store.write_queue import WriteQueue

type AnyStore = SqliteStore | PostgresStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FlakyUsage:
    """A Store boundary double: usage writes fail `failures` times, then reach the real store."""

    def __init__(self, inner: AnyStore, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def record_usage(self, deltas: Sequence[UsageDelta]) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreError("injected failure")
        await self.inner.record_usage(deltas)

    async def record_history(self, entries: Sequence[HistoryEntry]) -> None:
        await self.inner.record_history(entries)


async def _one_key(store: AnyStore) -> int:
    await store.sync_providers([("inst", ProviderType.OPENAI_LIKE)])
    report = await store.add_keys("inst", ["sk-usage-queue-key-000001"], ["m"], NOW)
    return report.added[0]


def _change(key_id: int, i: int) -> HistoryEntry:
    at = NOW + timedelta(seconds=i)
    return HistoryEntry(key_id, "m", Status.VALID, Status.RATE_LIMITED, "rate_limited", "429", at)


async def test_usage_and_history_are_written_by_a_flush(store: AnyStore) -> None:
    """Counts put one by one are summed per key; history rows arrive in order."""
    key_id = await _one_key(store)
    queue = WriteQueue(store)
    for i in range(10):
        queue.put_usage([UsageDelta(key_id, 1, i % 2, NOW.timestamp() + i)])
    queue.put_history(_change(key_id, 1))
    queue.put_history(_change(key_id, 2))
    assert queue.activity_depth == 3
    await queue.flush()
    assert queue.activity_depth == 0
    stored = await store.get_key(key_id)
    assert stored is not None
    assert (stored.usage.requests, stored.usage.failures) == (10, 5)
    assert stored.usage.last_used_at == NOW + timedelta(seconds=9)
    history = await store.key_history(key_id)
    assert [h.at for h in history] == [NOW + timedelta(seconds=2), NOW + timedelta(seconds=1)]


async def test_a_failed_usage_write_is_kept_and_merged_with_later_counts(
    store: AnyStore,
) -> None:
    """Nothing is lost when the store refuses a flush: the next one writes old and new counts."""
    key_id = await _one_key(store)
    queue = WriteQueue(FlakyUsage(store, failures=1))  # type: ignore[arg-type]
    queue.put_usage([UsageDelta(key_id, 3, 1, NOW.timestamp())])
    queue.put_history(_change(key_id, 1))
    try:
        await queue.flush()
    except StoreError:
        pass
    else:
        raise AssertionError("the injected failure did not happen")
    queue.put_usage([UsageDelta(key_id, 2, 0, NOW.timestamp())])
    await queue.flush()
    stored = await store.get_key(key_id)
    assert stored is not None and (stored.usage.requests, stored.usage.failures) == (5, 1)
    assert len(await store.key_history(key_id)) == 1


async def test_close_writes_what_is_left(store: AnyStore) -> None:
    """Closing the queue writes the usage still waiting; later puts are dropped."""
    key_id = await _one_key(store)
    queue = WriteQueue(store)
    queue.put_usage([UsageDelta(key_id, 4, 0, NOW.timestamp())])
    assert await queue.close() == 0
    queue.put_usage([UsageDelta(key_id, 100, 0, NOW.timestamp())])
    stored = await store.get_key(key_id)
    assert stored is not None and stored.usage.requests == 4
