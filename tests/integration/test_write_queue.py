"""The write-behind queue in front of a real store, on both engines."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from llmgateway.core.constants import ProviderType, Status
from llmgateway.core.errors import StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.sqlite import SqliteStore
from llmgateway.store.write_queue import WriteQueue

type AnyStore = SqliteStore | PostgresStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SAFETY = 10.0  # seconds: only reached when the behaviour under test is broken


class RecordingStore:
    """A Store boundary double: forwards `record` to a real store, failing the first `failures` calls.

    It remembers the size of every batch and signals each successful write.
    """

    def __init__(self, inner: AnyStore, failures: int = 0) -> None:
        self.inner = inner
        self.failures = failures
        self.batches: list[list[KeyRecord]] = []
        self.written = asyncio.Event()
        self.called = asyncio.Event()
        self.gate: asyncio.Event | None = None

    async def record(self, records: Sequence[KeyRecord]) -> None:
        self.batches.append(list(records))
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise StoreError("injected failure")
        await self.inner.record(records)
        self.written.set()


async def seeded(store: AnyStore, count: int) -> list[KeyRecord]:
    """`count` untested rows of one instance."""
    await store.sync_providers([("inst", ProviderType.OPENAI_LIKE)])
    await store.sync_keys("inst", [f"sk-queue-key-{i:04d}" for i in range(count)], ["m"], NOW)
    return await store.load_records("inst")


def valid(rows: list[KeyRecord], code: int = 200) -> list[KeyRecord]:
    return [replace(r, status=Status.VALID, status_code=code) for r in rows]


async def test_close_writes_everything_queued(store: AnyStore) -> None:
    """Records put and never flushed by the loop are in the store after close()."""
    rows = valid(await seeded(store, 5))
    queue = WriteQueue(store, interval=3600)
    for r in rows:
        queue.put(r)
    assert queue.depth == 5
    assert await queue.close(timeout=SAFETY) == 0
    assert queue.depth == 0
    assert await store.load_records("inst") == rows


async def test_running_context_flushes_on_exit(store: AnyStore) -> None:
    """The cleanup-context shape stops the loop and flushes what was put in its body."""
    rows = valid(await seeded(store, 3))
    queue = WriteQueue(store, interval=3600)
    async with queue.running(close_timeout=SAFETY):
        for r in rows:
            queue.put(r)
    assert queue.closed
    assert await store.load_records("inst") == rows


async def test_last_put_of_a_row_wins(store: AnyStore) -> None:
    """Two puts of one (key, model) coalesce into one write of the later record."""
    (row,) = await seeded(store, 1)
    recording = RecordingStore(store)
    queue = WriteQueue(recording, interval=3600)
    queue.put(replace(row, status=Status.TIMEOUT))
    queue.put(replace(row, status=Status.VALID))
    assert queue.depth == 1
    await queue.flush()
    assert [[r.status for r in b] for b in recording.batches] == [[Status.VALID]]
    assert (await store.load_records("inst"))[0].status is Status.VALID


async def test_flush_writes_batches_of_max_batch(store: AnyStore) -> None:
    """Seven records with max_batch=3 take three store.record calls of 3, 3 and 1."""
    rows = valid(await seeded(store, 7))
    recording = RecordingStore(store)
    queue = WriteQueue(recording, max_batch=3, interval=3600)
    for r in rows:
        queue.put(r)
    await queue.flush()
    assert [len(b) for b in recording.batches] == [3, 3, 1]
    assert await store.load_records("inst") == rows


async def test_full_batch_wakes_the_loop(store: AnyStore) -> None:
    """Reaching max_batch writes at once, without waiting for the (hour-long) interval."""
    rows = valid(await seeded(store, 3))
    recording = RecordingStore(store)
    queue = WriteQueue(recording, max_batch=3, interval=3600)
    async with queue.running(close_timeout=SAFETY):
        for r in rows:
            queue.put(r)
        await asyncio.wait_for(recording.written.wait(), SAFETY)
        assert queue.depth == 0


async def test_failed_flush_is_retried_not_dropped(store: AnyStore) -> None:
    """The loop retries a batch the store refused twice, and the third attempt writes it."""
    rows = valid(await seeded(store, 4))
    recording = RecordingStore(store, failures=2)
    queue = WriteQueue(recording, interval=0.001, retry_delay=0.001)
    with capture_logs() as logs:
        async with queue.running(close_timeout=SAFETY):
            for r in rows:
                queue.put(r)
            await asyncio.wait_for(recording.written.wait(), SAFETY)
    assert len(recording.batches) == 3
    assert await store.load_records("inst") == rows
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 2
    assert "sk-queue-key" not in repr(logs)


async def test_broken_store_connection_recovers(store: AnyStore) -> None:
    """Updates queued while the store is closed are written once it is reopened."""
    rows = valid(await seeded(store, 2))
    queue = WriteQueue(store, interval=3600, retry_delay=0.001)
    await store.close()
    for r in rows:
        queue.put(r)
    with pytest.raises(StoreError, match="not open"):
        await queue.flush()
    assert queue.depth == 2
    await store.open()
    await queue.flush()
    assert queue.depth == 0
    assert await store.load_records("inst") == rows


async def test_newer_put_during_a_failed_write_wins(store: AnyStore) -> None:
    """A record put while an older one of the same row is failing is the one finally stored."""
    (row,) = await seeded(store, 1)
    recording = RecordingStore(store, failures=1)
    recording.gate = asyncio.Event()
    queue = WriteQueue(recording, interval=3600)
    queue.put(replace(row, status=Status.VALID))
    first = asyncio.create_task(queue.flush())
    await asyncio.wait_for(recording.called.wait(), SAFETY)
    queue.put(replace(row, status=Status.NO_QUOTA))
    recording.gate.set()
    with pytest.raises(StoreError):
        await first
    await queue.flush()
    assert [[r.status for r in b] for b in recording.batches] == [
        [Status.VALID],
        [Status.NO_QUOTA],
    ]
    assert (await store.load_records("inst"))[0].status is Status.NO_QUOTA


async def test_close_gives_up_loudly_after_the_deadline(store: AnyStore) -> None:
    """When the store keeps failing, close() returns the lost count and logs it, without keys."""
    rows = valid(await seeded(store, 3))
    recording = RecordingStore(store, failures=10**9)
    queue = WriteQueue(recording, interval=3600, retry_delay=0.001)
    for r in rows:
        queue.put(r)
    with capture_logs() as logs:
        lost = await queue.close(timeout=0.05)
    assert lost == 3
    errors = [e for e in logs if e["log_level"] == "error"]
    assert errors and errors[-1]["lost"] == 3
    assert "sk-queue-key" not in repr(logs)
    assert {r.status for r in await store.load_records("inst")} == {Status.UNTESTED}


async def test_put_after_close_is_dropped_with_an_error(store: AnyStore) -> None:
    """A record put after close() cannot be written; it is reported, not silently kept."""
    (row,) = await seeded(store, 1)
    queue = WriteQueue(store)
    await queue.close(timeout=SAFETY)
    with capture_logs() as logs:
        queue.put(replace(row, status=Status.VALID))
    assert queue.depth == 0
    assert [e["key_id"] for e in logs if e["log_level"] == "error"] == [row.key_id]
