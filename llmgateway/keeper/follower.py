"""The pool follower: keeps this process's live pool in step with the other processes.

Several gateway processes (workers of one host, or hosts) share one database
and each has its own `KeyPool`. What one of them changes reaches the others
through the store's change feed (PostgreSQL `LISTEN/NOTIFY`, or the SQLite
change counter) within a second: the statuses it records, and the keys a key
sync (or any other edit of the keys) added or removed. A record is only
applied when it is newer than the pool's own (`KeyPool.apply_remote`).

Changes are applied in the order they were committed. Most need no store
access and are applied as they arrive; a change naming added keys (or asking
for an instance's reload) needs their rows read first, so it and everything
after it wait in a backlog, applied by one task in order. A periodic
reconciliation reloads the whole store and heals anything missed. Keys
that reach the pool this way go through the `KeySync` (masker first).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final, final

import structlog

from llmgateway.core.errors import StoreError
from llmgateway.core.memory import bulk_load
from llmgateway.core.models import KeyRecord
from llmgateway.core.turns import in_slices
from llmgateway.keeper.key_sync import KeySync
from llmgateway.pool.key_pool import Clock, KeyPool
from llmgateway.store.changes import Changes
from llmgateway.store.protocol import Store

log = structlog.get_logger(__name__)

RECONCILE_INTERVAL: Final = 30.0
"""Seconds between two full reloads of the store into the pool, at least."""

RECONCILE_SHARE: Final = 0.02
"""The largest share of the time periodic reconciliations may take.

A reconciliation reads every row: 100,000 keys × 2 models take about 1.6 s of
CPU on PostgreSQL, which every 30 s would keep an idle gateway 5% busy. The
pause after a pass is at least the pass's duration divided by this share (a
2 s pass: 100 s). The feed applies changes at once and a feed that reconnects
resyncs at once: the periodic pass only heals what a live feed missed.
"""


def reconcile_pause(minimum: float, took: float) -> float:
    """Seconds to wait before the next periodic reconciliation, the last having taken `took`."""
    return max(minimum, took / RECONCILE_SHARE)


FEED_RESTART_DELAY: Final = 1.0
"""Seconds before a crashed feed is started again."""


@final
class PoolFollower:
    """Applies what other processes record to `pool`: feed at once, full reload periodically.

    `instances` are the instances this process serves (the pool's); keys
    new to the pool are registered and applied through `key_sync`.
    `running()` runs the feed and the reconciliation loop for the body of an
    `async with`. `view()` is the follower's part of `/-/status`.
    """

    def __init__(
        self,
        store: Store,
        pool: KeyPool,
        key_sync: KeySync,
        instances: Sequence[str],
        *,
        reconcile_interval: float = RECONCILE_INTERVAL,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._pool = pool
        self._key_sync = key_sync
        self._instances = tuple(instances)
        self._interval = reconcile_interval
        self._clock = clock
        self.feed = store.change_feed()
        self.applied = 0
        """Records of other processes applied to the pool (feed and reconciliations)."""
        self.reconciliations = 0
        self.last_reconciled_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._backlog: deque[Changes] = deque()
        self._backlog_ready = asyncio.Event()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the feed, the backlog and the periodic reconciliation for the body."""
        await self._start()
        try:
            yield
        finally:
            await self._stop()

    async def _start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._run_feed(), name="llmgateway-change-feed"),
            asyncio.create_task(self._run_backlog(), name="llmgateway-change-backlog"),
            asyncio.create_task(self._reconcile_loop(), name="llmgateway-reconcile"),
        ]

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def use(self, instances: Sequence[str]) -> None:
        """Follow `instances` from now on (a reload changed what this process serves)."""
        self._instances = tuple(instances)

    def deliver(self, changes: Changes) -> None:
        """Apply what another process changed (the feed's callback), in commit order.

        Applied at once unless it needs rows from the store or earlier
        changes still wait for theirs: then it joins the backlog.
        """
        if self._backlog or any(change.needs_store for change in changes.keys):
            self._backlog.append(changes)
            self._backlog_ready.set()
            return
        self._apply(changes)

    def _apply(self, changes: Changes) -> None:
        """Apply the records of `changes`, then its removals (a few: a notification's)."""
        self._apply_records(changes.records)
        for change in changes.keys:
            if change.removed:
                self.applied += self._pool.remove_keys(change.instance, change.removed)

    async def _apply_in_slices(self, changes: Changes, loaded: Sequence[KeyRecord]) -> None:
        """Apply `loaded` (rows of added keys), the records, then the removals, in slices.

        Another process's key sync adding and removing 1,000 keys brings 2,000
        records: applied at once, they held the loop 20-35 ms beside traffic.
        """
        async for records in in_slices([*loaded, *changes.records]):
            self._apply_records(records)
        for change in changes.keys:
            async for key_ids in in_slices(change.removed):
                self.applied += self._pool.remove_keys(change.instance, key_ids)

    def _apply_records(self, records: Sequence[KeyRecord]) -> None:
        fresh = {
            r.key
            for r in records
            if r.key and self._pool.get(r.instance, r.model, r.key_id) is None
        }
        if fresh:
            self._key_sync.register(fresh)  # masked in logs before the pool can pick them
        for record in records:
            if self._pool.apply_remote(record):
                self.applied += 1

    async def _run_backlog(self) -> None:
        """Apply the backlog in order, reading the rows its key-set changes need."""
        while True:
            await self._backlog_ready.wait()
            self._backlog_ready.clear()
            while self._backlog:
                changes = self._backlog[0]
                try:
                    loaded = await self._load(changes)
                except StoreError as exc:  # the resync below reloads everything instead
                    log.warning("change_apply_failed", error=str(exc))
                    self._backlog.clear()
                    await self._resync_quietly()
                    break
                await self._apply_in_slices(changes, loaded)
                self._backlog.popleft()

    async def _load(self, changes: Changes) -> list[KeyRecord]:
        """The rows of the keys `changes` added (reloading instances that asked for it)."""
        added: list[int] = []
        for change in changes.keys:
            if change.instance not in self._instances:
                continue
            if change.reload:
                with bulk_load():
                    await self._reload(change.instance)
            added.extend(change.added)
        loaded = await self._store.load_key_records(added)
        await self._key_sync.register_off_loop(r.key for r in loaded)  # before `_apply`
        return loaded

    async def _resync_quietly(self) -> None:
        try:
            await self._resync()
        except StoreError as exc:  # the periodic reconciliation heals it later
            log.warning("pool_resync_failed", error=str(exc))

    async def reconcile(self) -> int:
        """Reload every record of the served instances; return how many were applied.

        Keys added or removed in the store (another process's key sync)
        join or leave the pool; newer statuses replace the pool's. The store
        is read and merged a page at a time (`KeySync.reconcile`), so a
        reconciliation never holds a second copy of a large pool.
        """
        applied = 0
        with bulk_load():
            async for taken in self._key_sync.reconcile(self._instances):
                applied += taken
                self.applied += taken
        self.reconciliations += 1
        self.last_reconciled_at = self._clock()
        return applied

    async def _reload(self, instance: str) -> None:
        """Bring `instance` in step with the store (another process asked for it)."""
        async for taken in self._key_sync.reconcile((instance,)):
            self.applied += taken

    def view(self) -> dict[str, Any]:
        """The pool's view of the store, for `/-/status`."""
        last = self.last_reconciled_at
        return {
            **self.feed.state.as_dict(),
            "records_applied": self.applied,
            "reconciliations": self.reconciliations,
            "last_reconciled_at": _iso(last),
            "last_received_at": _iso(self.feed.state.last_received_at),
        }

    async def _run_feed(self) -> None:
        while True:
            try:
                await self.feed.run(self.deliver, self._resync)
            except asyncio.CancelledError:
                raise
            except Exception:  # the feed task's outermost guard: log, start it again
                log.exception("change_feed_crashed")
            await asyncio.sleep(FEED_RESTART_DELAY)

    async def _resync(self) -> None:
        applied = await self.reconcile()
        log.info("pool_resynced", applied=applied)

    async def _reconcile_loop(self) -> None:
        pause = self._interval
        while True:
            await asyncio.sleep(pause)
            started = time.perf_counter()
            try:
                await self.reconcile()
            except StoreError as exc:
                log.warning("pool_reconcile_failed", error=str(exc))
            except Exception:  # the loop's outermost guard: log, try again next time
                log.exception("pool_reconcile_crashed")
            pause = reconcile_pause(self._interval, time.perf_counter() - started)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    text = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
