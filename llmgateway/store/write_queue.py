"""The write-behind queue: status updates from the request path, written to the store in batches.

`put()` is synchronous and never waits for the database; a background loop
(`run()`) writes what accumulated, one `store.record()` round trip per batch.
A failed write is kept and retried with backoff, never dropped; `close()`
writes everything left before the process exits. The same flushes write the
pool's per-key usage counts (`put_usage`) and the history of its status
changes (`put_history`), after the statuses.

Whoever must not speak of a change before it is stored (`/-/events`: a
process killed right after announcing a status must not leave the store
without it) takes `mark()` and awaits `written_through(mark)`: it returns
once every record put before the mark is in the store.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Final, final

import structlog

from llmgateway.core.errors import StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.store.activity_buffer import ActivityBatch, ActivityBuffer
from llmgateway.store.key_admin import HistoryEntry, UsageDelta
from llmgateway.store.protocol import Store

log = structlog.get_logger(__name__)

type _RowKey = tuple[int, str]

DEFAULT_CLOSE_TIMEOUT: Final = 10.0
"""Seconds `close()` keeps trying to write what is left."""


@final
class WriteQueue:
    """Coalescing write-behind buffer in front of a Store.

    Records are keyed by (key_id, model): a newer record replaces an older one
    still waiting, so only the last status of each row is written. Logs name
    key ids and counts, never keys.

    Args:
        store: where batches are written.
        max_batch: the most records per `store.record()` call; reaching it wakes the loop.
        interval: seconds between two writes of the background loop.
        retry_delay: the first wait after a failed write, doubled up to `max_retry_delay`.
        max_retry_delay: the longest wait between two attempts.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 500,
        interval: float = 0.2,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._store = store
        self._max_batch = max_batch
        self._interval = interval
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._pending: dict[_RowKey, KeyRecord] = {}
        self._activity = ActivityBuffer()
        self._in_flight = 0
        self._write_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._puts = 0
        self._written = 0
        self._advanced = asyncio.Event()

    @property
    def depth(self) -> int:
        """Records not yet written: waiting plus the batch being written."""
        return len(self._pending) + self._in_flight

    @property
    def activity_depth(self) -> int:
        """Usage deltas (one per key) and history entries not yet written."""
        return len(self._activity)

    @property
    def closed(self) -> bool:
        """True once `close()` has been called."""
        return self._stop.is_set()

    def put(self, record: KeyRecord) -> None:
        """Queue `record` for writing; replaces a waiting record of the same (key_id, model).

        Never blocks and never raises for a store problem. After `close()` the
        record cannot be written any more: it is dropped with an error log.
        """
        if self._stop.is_set():
            log.error(
                "write_queue_update_dropped",
                key_id=record.key_id,
                instance=record.instance,
                model=record.model,
            )
            return
        self._pending[(record.key_id, record.model)] = record
        self._puts += 1
        if len(self._pending) >= self._max_batch:
            self._wake.set()

    def put_usage(self, deltas: Iterable[UsageDelta]) -> None:
        """Queue usage increments (each added to what waits for its key). Never blocks."""
        if self._stop.is_set():
            for delta in deltas:
                log.error("write_queue_usage_dropped", key_id=delta.key_id)
            return
        self._activity.add_usage(deltas)

    def put_history(self, entry: HistoryEntry) -> None:
        """Queue one status change for the key's history (its message already masked)."""
        if self._stop.is_set():
            log.error("write_queue_history_dropped", key_id=entry.key_id, model=entry.model)
            return
        self._activity.add_history(entry)

    def mark(self) -> int:
        """A mark for `written_through`: the number of records put so far."""
        return self._puts

    async def written_through(self, mark: int) -> None:
        """Return once every record put before `mark` is stored (or replaced by a stored newer one).

        Waits as long as the store refuses the writes; cancel it to give up.
        """
        while self._written < mark:
            await self._advanced.wait()

    async def flush(self) -> None:
        """Write everything queued now, batch by batch.

        Raises StoreError when a batch fails; that batch stays queued (behind
        newer records of the same rows) for the next attempt.
        """
        while True:
            # Taking the lock first also waits for a write already in flight.
            async with self._write_lock:
                if not self._pending:
                    await self._write_activity()
                    return
                await self._write_batch()

    async def _write_activity(self) -> None:
        """Write the waiting usage and history (after the statuses: history names their rows).

        On any failure what was not written is put back and the error re-raised.
        """
        batch = self._activity.take()
        if not batch:
            return
        try:
            await self._store.record_usage(batch.usage)
        except BaseException:
            self._activity.restore(batch)
            raise
        try:
            await self._store.record_history(batch.history)
        except BaseException:
            self._activity.restore(ActivityBatch([], batch.history))
            raise

    async def run(self) -> None:
        """The background loop: write every `interval` (sooner when a batch is full) until `close()`.

        A failed write is logged and retried with exponential backoff. Run it
        as one task per queue (see `running()`); it returns once `close()` is called.
        """
        delay = self._retry_delay
        while not self._stop.is_set():
            await self._wait(self._wake, self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                await self.flush()
            except StoreError as exc:
                log.warning(
                    "write_queue_flush_failed",
                    pending=self.depth,
                    retry_in=delay,
                    error=str(exc),
                )
            except Exception:  # outermost guard of a background task: log and keep going
                log.exception("write_queue_flush_crashed", pending=self.depth)
            else:
                delay = self._retry_delay
                continue
            await self._wait(self._stop, delay)
            delay = min(delay * 2, self._max_retry_delay)

    async def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> int:  # noqa: ASYNC109
        """Stop the loop and write everything left, retrying until `timeout` seconds passed.

        Returns the number of records that could not be written (0 unless the
        store kept failing); losing any is logged as an error.
        """
        self._stop.set()
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = self._retry_delay
        while (self.depth or self.activity_depth) and loop.time() < deadline:
            try:
                async with asyncio.timeout_at(deadline):
                    await self.flush()
            except TimeoutError:
                break
            except StoreError as exc:
                log.warning("write_queue_final_flush_failed", error=str(exc))
                await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))
                delay = min(delay * 2, self._max_retry_delay)
        lost = self.depth
        if self.activity_depth:
            log.error("write_queue_closed_with_unwritten_usage", lost=self.activity_depth)
        if lost:
            log.error(
                "write_queue_closed_with_unwritten",
                lost=lost,
                instances=sorted({r.instance for r in self._pending.values()}),
                timeout=timeout,
            )
        return lost

    @asynccontextmanager
    async def running(self, close_timeout: float = DEFAULT_CLOSE_TIMEOUT) -> AsyncIterator[None]:
        """Run the loop as a task for the body of an `async with`; close and await it on exit.

        Fits an aiohttp cleanup context: `async with queue.running(): yield`.
        """
        task = asyncio.create_task(self.run(), name="llmgateway-write-queue")
        try:
            yield
        finally:
            try:
                await self.close(close_timeout)
            finally:
                await task

    async def _write_batch(self) -> None:
        """Write the oldest `max_batch` records; on any failure put them back and re-raise.

        The caller holds `_write_lock`, so batches of one row are written in order.
        """
        # Taking everything pending: once written, every record put until now is stored.
        through = self._puts if len(self._pending) <= self._max_batch else None
        keys = list(itertools.islice(self._pending, self._max_batch))
        batch = [self._pending.pop(k) for k in keys]
        self._in_flight = len(batch)
        try:
            await self._store.record(batch)
        except BaseException:  # StoreError, cancellation: keep the batch, newer records win
            restored = {(r.key_id, r.model): r for r in batch}
            restored.update(self._pending)
            self._pending = restored
            raise
        finally:
            self._in_flight = 0
        if through is not None and through > self._written:
            self._written = through
            advanced, self._advanced = self._advanced, asyncio.Event()
            advanced.set()

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        """Wait until `event` is set or `seconds` passed, whichever comes first."""
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            pass
