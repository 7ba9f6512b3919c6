"""The event-loop lag monitor: how late the loop runs a timer, as a Prometheus histogram.

A request waits for the event loop whenever something else holds it: any
callback that runs for 50 ms adds up to 50 ms to every request in flight. The
monitor is one task asleep for `interval` seconds at a time; each time it
wakes it observes how much later than asked it woke up. A stall of S seconds
shows as a lag of at least S - `interval`, so the default interval (10 ms) is
well below the 20 ms an operation may hold the loop. One wake-up costs a
clock read and one histogram observation: a few microseconds, 100 times a
second.

A lag is not always the gateway's doing: when other processes hold the CPU
(or a container's CPU limit holds the process back), the loop's thread waits
on a run queue and every timer fires late. Where Linux tells how long a
thread has waited for a CPU (`/proc/thread-self/schedstat`), the monitor
also observes, for each lag, the part not spent waiting so: the lag the
gateway's own work caused (its callbacks, a collection, one of its threads
holding the GIL), `llmgateway_event_loop_own_lag_seconds`. A lag much larger
than its own part means a starved CPU, not a stall to fix in the gateway.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, Protocol, final

import structlog

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

log = structlog.get_logger("llmgateway.core.loop_lag")

DEFAULT_INTERVAL: Final = 0.01
"""Seconds the monitor sleeps between two measurements."""


SCHEDSTAT: Final = "/proc/thread-self/schedstat"
"""Linux: the calling thread's time on a CPU, time waiting for one (ns), and times run."""


class CpuWait(Protocol):
    """The total time a thread has waited for a CPU so far (`ThreadCpuWait`)."""

    def __call__(self) -> float:
        """Seconds waited since the thread started; raises OSError when it cannot be read."""

    def close(self) -> None:
        """Let go of what the reading holds."""


@final
class ThreadCpuWait:
    """The calling thread's total wait for a CPU, read from `SCHEDSTAT` (Linux).

    The file is opened once by the thread to be read (it then names that
    thread whoever reads it) and read again from its start each time: one
    `pread` of a few dozen bytes, under 2 microseconds.
    """

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def of_this_thread(cls) -> ThreadCpuWait | None:
        """The reading for the calling thread; None where the system does not tell."""
        try:
            fd = os.open(SCHEDSTAT, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        reading = cls(fd)
        try:
            reading()
        except OSError:
            reading.close()
            return None
        return reading

    def __call__(self) -> float:
        """Seconds this thread has spent runnable but waiting for a CPU."""
        fields = os.pread(self._fd, 128, 0).split()
        try:
            return int(fields[1]) / 1e9
        except (IndexError, ValueError) as exc:
            raise OSError(f"unexpected {SCHEDSTAT}: {fields!r}") from exc

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


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
        own: receives, for every lag, the part the loop's thread did not spend
            waiting for a CPU (`llmgateway_event_loop_own_lag_seconds`); nothing
            where that wait cannot be read.
        cpu_wait: opens the reading of the calling thread's wait for a CPU
            (`ThreadCpuWait.of_this_thread`); injectable for tests.
    """

    def __init__(
        self,
        observer: LagObserver,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.perf_counter,
        *,
        own: LagObserver | None = None,
        cpu_wait: Callable[[], CpuWait | None] = ThreadCpuWait.of_this_thread,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._observer = observer
        self._interval = interval
        self._clock = clock
        self._own = own
        self._cpu_wait = cpu_wait

    async def run(self) -> None:
        """Measure until cancelled (the CPU wait is read on the loop's thread, opened here)."""
        waits = self._cpu_wait() if self._own is not None else None
        try:
            await self._measure(waits)
        finally:
            if waits is not None:
                waits.close()

    async def _measure(self, waits: CpuWait | None) -> None:
        """Each lag, and its own part while `waits` can be read."""
        interval = self._interval
        clock = self._clock
        observe = self._observer.observe
        own = self._own.observe if self._own is not None else None
        waited = self._waited(waits)
        while True:
            expected = clock() + interval
            await asyncio.sleep(interval)
            lag = max(clock() - expected, 0.0)
            observe(lag)
            if waited is not None and own is not None:
                before, waited = waited, self._waited(waits)
                if waited is not None:
                    own(max(lag - (waited - before), 0.0))

    def _waited(self, waits: CpuWait | None) -> float | None:
        """The thread's total CPU wait now; None once it cannot be read (logged once)."""
        if waits is None:
            return None
        try:
            return waits()
        except OSError as exc:
            log.warning("loop_cpu_wait_unreadable", error=str(exc))
            return None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """`async with monitor.running():` the monitor runs as a task for the body."""
        task = asyncio.create_task(self.run(), name="llmgateway-loop-lag")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
