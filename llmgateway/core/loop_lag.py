"""The event-loop lag monitor: how late the loop runs a timer, as a Prometheus histogram.

A request waits for the event loop whenever something else holds it: any
callback that runs for 50 ms adds up to 50 ms to every request in flight. The
monitor is one task asleep for `interval` seconds at a time; each time it
wakes it observes how much later than asked it woke up. A stall of S seconds
shows as a lag of at least S - `interval`, so the default interval (10 ms) is
well below the 20 ms an operation may hold the loop. One wake-up costs a
clock read and one histogram observation: a few microseconds, 100 times a
second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, Protocol, final

LAG_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""From healthy (under a millisecond) to a loop held for seconds; 0.02 s is the stall bound."""

DEFAULT_INTERVAL: Final = 0.01
"""Seconds the monitor sleeps between two measurements."""


class LagObserver(Protocol):
    """Receives each measured lag (a Prometheus `Histogram`'s `observe`)."""

    def observe(self, amount: float) -> None:
        """Record one lag, in seconds."""


@final
class LoopLagMonitor:
    """Measures, every `interval` seconds, how late the running loop wakes a sleeping task.

    Args:
        observer: receives every lag in seconds (the `llmgateway_event_loop_lag_seconds`
            histogram).
        interval: seconds between two measurements.
        clock: a monotonic clock (time.perf_counter); injectable for tests.
    """

    def __init__(
        self,
        observer: LagObserver,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._observer = observer
        self._interval = interval
        self._clock = clock

    async def run(self) -> None:
        """Measure until cancelled."""
        interval = self._interval
        clock = self._clock
        observe = self._observer.observe
        while True:
            expected = clock() + interval
            await asyncio.sleep(interval)
            observe(max(clock() - expected, 0.0))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """`async with monitor.running():` the monitor runs as a task for the body."""
        task = asyncio.create_task(self.run(), name="llmgateway-loop-lag")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
