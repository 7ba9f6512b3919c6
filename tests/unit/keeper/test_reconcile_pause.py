"""The periodic reconciliation's pause: never shorter than configured, longer after a long pass."""

from __future__ import annotations

import asyncio

import pytest

from llmgateway.keeper import follower as follower_module
from llmgateway.keeper.follower import RECONCILE_SHARE, PoolFollower, reconcile_pause


def test_a_quick_pass_keeps_the_configured_interval() -> None:
    assert reconcile_pause(30.0, 0.1) == 30.0


def test_a_long_pass_waits_long_enough_to_stay_within_its_share() -> None:
    """A 2 s pass (100,000 keys on PostgreSQL) waits 100 s: 2% of the time at most."""
    pause = reconcile_pause(30.0, 2.0)
    assert pause == pytest.approx(2.0 / RECONCILE_SHARE) == pytest.approx(100.0)
    assert 2.0 / (2.0 + pause) <= RECONCILE_SHARE


async def test_the_loop_waits_after_each_pass_as_long_as_that_pass_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Passes of 0.1 s, 4 s and 0.1 s: pauses of 30 s, 30 s, 200 s, then 30 s again."""
    follower = PoolFollower.__new__(PoolFollower)
    follower._interval = 30.0
    clock = [0.0]
    took = iter([0.1, 4.0, 0.1])
    pauses: list[float] = []

    async def reconcile() -> int:
        clock[0] += next(took)
        return 0

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 4:
            raise asyncio.CancelledError

    monkeypatch.setattr(follower, "reconcile", reconcile)
    monkeypatch.setattr(follower_module.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(follower_module.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        await follower._reconcile_loop()
    assert pauses == [30.0, 30.0, pytest.approx(200.0), 30.0]
