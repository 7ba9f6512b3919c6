"""The periodic pool summary: one log line per instance every `logging.summary_interval`.

Each line gives the instance's key counts by status (from the live pool) and
the requests, retries and failed upstream attempts since the previous line
(from `Metrics`). `running()` runs the loop for the body of an `async with`:
a failed round is logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, final

import structlog

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.core.constants import Status
from llmgateway.pool.key_pool import KeyPool
from llmgateway.web.metrics import Metrics, RequestTally

log = structlog.get_logger("llmgateway.summary")

Sleep = Callable[[float], Awaitable[None]]
"""Waits the given number of seconds (asyncio.sleep); injectable for tests."""

MIN_INTERVAL: Final = 1.0
"""A shorter configured interval is raised to this (a zero would spin)."""


@final
class PoolSummary:
    """Writes the summary lines of the enabled instances; remembers the last counts for the deltas.

    The interval is `logging.summary_interval`; `sleep` is injectable for tests.
    """

    def __init__(
        self,
        accessor: ConfigAccessor,
        pool: KeyPool,
        metrics: Metrics | None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._instances = tuple(p.name for p in accessor.enabled_providers())
        self._interval = max(accessor.logging.summary_interval, MIN_INTERVAL)
        self._pool = pool
        self._metrics = metrics
        self._sleep = sleep
        self._last: dict[str, RequestTally] = {}

    def use(self, accessor: ConfigAccessor) -> None:
        """Summarise the instances of `accessor`, at its interval, from the next line on."""
        self._instances = tuple(p.name for p in accessor.enabled_providers())
        self._interval = max(accessor.logging.summary_interval, MIN_INTERVAL)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the periodic summary for the body; cancel it on exit."""
        task = asyncio.create_task(self._run(), name="llmgateway-summary")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def emit(self) -> None:
        """Log one `pool summary` line per instance."""
        by_instance: dict[str, Counter[Status]] = {name: Counter() for name in self._instances}
        for tally in self._pool.tallies():  # the pool's own counts: no walk over every key
            counts = by_instance.get(tally.instance)
            if counts is not None:
                counts.update(tally.counts)
        for instance in self._instances:
            statuses = by_instance[instance]
            now = self._metrics.tally(instance) if self._metrics else RequestTally()
            last = self._last.get(instance, RequestTally())
            self._last[instance] = now
            log.info(
                "pool_summary",
                instance=instance,
                keys=sum(statuses.values()),
                usable=sum(n for s, n in statuses.items() if s.is_usable),
                statuses={s.value: statuses[s] for s in Status if statuses[s]},
                requests=now.requests - last.requests,
                retries=now.retries - last.retries,
                failures=now.failures - last.failures,
            )

    async def _run(self) -> None:
        while True:
            await self._sleep(self._interval)
            try:
                self.emit()
            except Exception:  # the loop's outermost guard: log, then the next round
                log.exception("pool_summary_failed")
