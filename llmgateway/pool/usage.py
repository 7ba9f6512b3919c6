"""Per-key usage counted on the request path: requests, failures, last use.

`UsageCounter.count` is called for every attempt the gateway makes with a
key; it only bumps a key's tally (made at the key's first use since the last
drain). `drain()` hands the increments accumulated since the last drain to
whoever writes them (the store's write-behind queue), in one batch, and drops
the tallies: between two drains the counter holds the keys used in that
second only, however large the pool, and no long-lived object per key for the
garbage collector to walk. Nothing here touches the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Final, final

from llmgateway.store.key_admin import UsageDelta

__all__ = ["FLUSH_INTERVAL", "UsageCounter", "UsageDelta", "draining"]

FLUSH_INTERVAL: Final = 1.0
"""Seconds between two drains of the counters into the write queue."""


@final
class UsageCounter:
    """Counts the requests and failures of the keys in use until they are drained."""

    __slots__ = ("_tallies",)

    def __init__(self) -> None:
        self._tallies: dict[int, list[float]] = {}
        """The keys used since the last drain, in the order of their first use: each one's
        `[key_id, requests, failures, last use]` (a list, cheaper to make than an object)."""

    def __len__(self) -> int:
        """The keys counted since the last drain."""
        return len(self._tallies)

    def forget(self, key_ids: Iterable[int]) -> None:
        """Stop counting `key_ids` (keys deleted); what they counted is dropped."""
        for key_id in key_ids:
            self._tallies.pop(key_id, None)

    def count(self, key_id: int, failed: bool, now: float) -> None:
        """One request made with key `key_id` at `now` (epoch seconds); `failed` if it failed."""
        tally = self._tallies.get(key_id)
        if tally is None:  # the key's first use since the last drain
            self._tallies[key_id] = [key_id, 1, 1 if failed else 0, now]
            return
        tally[1] += 1
        if failed:
            tally[2] += 1
        tally[3] = now

    def drain(self) -> list[UsageDelta]:
        """The increments of every key used since the last drain; the counts start again."""
        tallies, self._tallies = self._tallies, {}
        return list(map(UsageDelta._make, tallies.values()))

    def pending(self, key_id: int) -> tuple[int, int, datetime | None] | None:
        """What key `key_id` counted since the last drain (None: nothing)."""
        tally = self._tallies.get(key_id)
        if tally is None:
            return None
        _, requests, failures, last_used = tally
        return int(requests), int(failures), datetime.fromtimestamp(last_used, UTC)


@asynccontextmanager
async def draining(
    counter: UsageCounter,
    put: Callable[[list[UsageDelta]], None],
    interval: float = FLUSH_INTERVAL,
) -> AsyncIterator[None]:
    """Hand `counter`'s increments to `put` (the write queue's) every `interval` for the body.

    A last drain on exit, so nothing counted is lost at shutdown.
    """

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            put(counter.drain())

    task = asyncio.create_task(loop(), name="llmgateway-usage")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        put(counter.drain())
