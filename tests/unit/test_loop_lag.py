"""The event-loop lag monitor: how late the loop wakes a sleeping task."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from llmgateway.core.loop_lag import SCHEDSTAT, LoopLagMonitor, ThreadCpuWait


class Observed:
    """Collects every lag the monitor reports."""

    def __init__(self) -> None:
        self.lags: list[float] = []

    def observe(self, amount: float) -> None:
        self.lags.append(amount)


async def test_a_blocked_loop_shows_as_lag() -> None:
    """Holding the loop 150 ms is seen as a lag of at least 150 ms minus one interval."""
    observed = Observed()
    async with LoopLagMonitor(observed, interval=0.01).running():
        await asyncio.sleep(0.05)
        time.sleep(0.15)  # noqa: ASYNC251 - the whole loop waits: what a stall does
        await asyncio.sleep(0.05)
    assert max(observed.lags) >= 0.14
    assert min(observed.lags) >= 0.0
    assert len(observed.lags) >= 3


def test_the_interval_must_be_positive() -> None:
    """A zero interval would spin: refused."""
    with pytest.raises(ValueError, match="interval"):
        LoopLagMonitor(Observed(), interval=0)


class ScriptedWait:
    """A CPU-wait reading that advances by scripted amounts, then fails (or not)."""

    def __init__(self, steps: list[float], fail_after: bool = False) -> None:
        self.total = 0.0
        self.steps = steps
        self.fail_after = fail_after
        self.closed = False

    def __call__(self) -> float:
        if self.steps:
            self.total += self.steps.pop(0)
        elif self.fail_after:
            raise OSError("gone")
        return self.total

    def close(self) -> None:
        self.closed = True


class StolenCpu:
    """A CPU-wait reading whose total grows by the time spent in `taken()` (another process's turn)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.closed = False

    def __call__(self) -> float:
        return self.total

    def taken(self, seconds: float) -> None:
        """Hold the loop `seconds`, as if the thread were waiting for a CPU all along."""
        begin = time.perf_counter()
        time.sleep(seconds)
        self.total += time.perf_counter() - begin

    def close(self) -> None:
        self.closed = True


async def test_a_lag_spent_waiting_for_a_cpu_is_not_the_loops_own() -> None:
    """A stall the thread spent waiting for a CPU shows in the lag, not in its own part."""
    lags, own = Observed(), Observed()
    cpu = StolenCpu()
    async with LoopLagMonitor(lags, interval=0.01, own=own, cpu_wait=lambda: cpu).running():
        await asyncio.sleep(0.035)
        cpu.taken(0.15)
        await asyncio.sleep(0.05)
    assert cpu.closed
    assert len(own.lags) == len(lags.lags)
    stalled = max(range(len(lags.lags)), key=lags.lags.__getitem__)
    assert lags.lags[stalled] >= 0.14
    assert own.lags[stalled] < 0.02


async def test_own_lag_is_the_whole_lag_when_no_cpu_was_waited_for() -> None:
    """The gateway's own stall (no CPU wait) is its own lag in full."""
    lags, own = Observed(), Observed()
    waits = ScriptedWait([])
    async with LoopLagMonitor(lags, interval=0.01, own=own, cpu_wait=lambda: waits).running():
        await asyncio.sleep(0.03)
        time.sleep(0.15)  # noqa: ASYNC251 - the whole loop waits: what a stall does
        await asyncio.sleep(0.03)
    assert max(own.lags) >= 0.14
    assert own.lags == lags.lags


async def test_an_unreadable_cpu_wait_leaves_the_lag_measured() -> None:
    """The wait stops being readable: the own part stops, the lag goes on, the file is closed."""
    lags, own = Observed(), Observed()
    waits = ScriptedWait([0.0, 0.0], fail_after=True)
    async with LoopLagMonitor(lags, interval=0.01, own=own, cpu_wait=lambda: waits).running():
        await asyncio.sleep(0.1)
    assert waits.closed
    assert len(own.lags) == 1
    assert len(lags.lags) >= 4


async def test_no_reading_means_no_own_part() -> None:
    """Where the system does not tell the wait (None), only the lag is observed."""
    lags, own = Observed(), Observed()
    async with LoopLagMonitor(lags, interval=0.01, own=own, cpu_wait=lambda: None).running():
        await asyncio.sleep(0.05)
    assert lags.lags and not own.lags


@pytest.mark.skipif(not Path(SCHEDSTAT).exists(), reason="Linux tells a thread's CPU wait")
def test_the_thread_cpu_wait_is_read_again_from_the_start_each_time() -> None:
    """The real reading: a number of seconds that never goes back, read many times."""
    reading = ThreadCpuWait.of_this_thread()
    assert reading is not None
    try:
        first = reading()
        sum(range(200_000))
        values = [reading() for _ in range(50)]
        assert first >= 0.0
        assert values == sorted(values) and values[0] >= first
    finally:
        reading.close()
