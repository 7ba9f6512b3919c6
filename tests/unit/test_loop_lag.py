"""The event-loop lag monitor: how late the loop wakes a sleeping task."""

from __future__ import annotations

import asyncio
import time

import pytest

from llmgateway.core.loop_lag import LoopLagMonitor


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
