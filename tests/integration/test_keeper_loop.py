"""The keeper's loop through real parts: crashes, scale, key sync, shutdown, failed rounds.

Same rig as test_keeper.py: a real store on both engines, the fake upstream,
real adapters, an injected clock; only the shutdown tests wait (briefly) for real.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from llmgateway.core.constants import Status
from llmgateway.core.errors import StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.store.protocol import Store
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.integration.keeper_rig import Rig, key_for, open_rig


@pytest.fixture
async def rig(store: Store, fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Rig]:
    """A keeper rig on each store engine."""
    async with open_rig(store, fake_upstream, tmp_path) as made:
        yield made


async def test_crashing_probes_do_not_stop_the_others(rig: Rig) -> None:
    """A garbage answer and a hanging upstream are classified; every other key is still probed."""
    behaviours = {"garbage": Behaviour.GARBAGE, "hang": Behaviour.HANG}
    good = [f"good{i}" for i in range(6)]
    for label, behaviour in behaviours.items():
        rig.fake.set_key(key_for("p", label), behaviour)
    for label in good:
        rig.fake.set_key(key_for("p", label))
    rig.write_keys("p", [key_for("p", label) for label in [*behaviours, *good]])
    section = rig.section("p", models=["model-a"], timeouts={"first_byte": "300ms"})
    await rig.build({"p": section}, keeper={"max_concurrent_probes": 3})
    await rig.key_sync.sync()
    with capture_logs() as logs:
        assert await rig.round() == len(behaviours) + len(good)
    assert all(rig.status("p", label, "model-a") is Status.VALID for label in good)
    assert rig.status("p", "hang", "model-a") is Status.TIMEOUT
    garbage = rig.status("p", "garbage", "model-a").reason
    assert garbage is not None and garbage.is_server_error
    text = repr(logs)
    assert "probe_failed" in text
    assert all(key_for("p", label) not in text for label in [*behaviours, *good])


async def test_thousands_of_untested_keys_in_one_round(rig: Rig) -> None:
    """2,000 untested keys over two instances are all probed in one round within the limits."""
    per_instance = 1000
    keys = {name: [f"sk-{name}-{i:06d}-bulkbulkbulk" for i in range(per_instance)] for name in "xy"}
    rig.fake.default_behaviour = Behaviour.OK
    owner = {key: name for name, group in keys.items() for key in group}
    for name, group in keys.items():
        rig.write_keys(name, group)
    in_flight: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    async def started(_: Any, __: SimpleNamespace, params: aiohttp.TraceRequestStartParams) -> None:
        name = owner[params.headers["Authorization"].removeprefix("Bearer ")]
        for bucket in (name, "all"):
            in_flight[bucket] += 1
            peak[bucket] = max(peak[bucket], in_flight[bucket])

    async def ended(_: Any, __: SimpleNamespace, params: Any) -> None:
        name = owner[params.headers["Authorization"].removeprefix("Bearer ")]
        for bucket in (name, "all"):
            in_flight[bucket] -= 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(started)
    trace.on_request_end.append(ended)
    trace.on_request_exception.append(ended)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        rig.session = session
        limits = {"max_concurrent_probes": 12, "max_concurrent_probes_per_instance": 8}
        await rig.build(
            {name: rig.section(name, models=["model-a"]) for name in keys}, keeper=limits
        )
        await rig.key_sync.sync()
        assert await rig.round() == 2 * per_instance
    assert rig.fake.calls_by_key == Counter({key: 1 for key in owner})
    assert 1 < peak["all"] <= 12
    assert peak["x"] <= 8 and peak["y"] <= 8
    assert {r.status for r in rig.pool.records()} == {Status.VALID}
    assert await rig.round() == 0


async def test_background_loop_syncs_files_and_stops(rig: Rig) -> None:
    """running() re-reads the keys after keys_sync_interval, probes them, and stops on exit."""
    first, second, stuck = key_for("p", "one"), key_for("p", "two"), key_for("p", "stuck")
    rig.fake.set_key(first)
    rig.fake.set_key(second)
    rig.fake.set_key(stuck, Behaviour.HANG)
    rig.write_keys("p", [first])
    keeper = await rig.build(
        {"p": rig.section("p", models=["model-a"])},
        keeper={"keys_sync_interval": "60s", "check_interval": "10ms"},
    )
    await rig.key_sync.initial()  # the start-up sync; the keeper's own comes an interval later
    rig.keeper = keeper = rig.new_keeper(sleep=asyncio.sleep)  # a real 10 ms idle sleep
    async with keeper.running(lambda: 0.2):
        await rig.fake.wait_for_requests(1)
        rig.write_keys("p", [first, second, stuck])
        await asyncio.sleep(0.05)
        assert rig.fake.calls_by_key[second] == 0  # not re-read before the interval
        rig.clock.advance(61.0)
        await rig.fake.wait_for_requests(3)
    assert rig.status("p", "one", "model-a") is Status.VALID
    assert rig.status("p", "two", "model-a") is Status.VALID
    assert rig.status("p", "stuck", "model-a") is Status.UNTESTED
    assert rig.fake.calls_by_key[stuck] == 1


async def test_stop_lets_an_in_flight_probe_finish(rig: Rig) -> None:
    """A probe already running when stop() is called is finished and recorded."""
    slow = key_for("p", "slow")
    rig.fake.set_key(slow, Behaviour.SLOW_FIRST_BYTE, delay=0.3)
    rig.write_keys("p", [slow])
    keeper = await rig.build({"p": rig.section("p", models=["model-a"])})
    await rig.key_sync.sync()
    async with keeper.running(lambda: 10.0):
        await rig.fake.wait_for_requests(1)
    assert rig.status("p", "slow", "model-a") is Status.VALID
    assert rig.fake.calls_by_key[slow] == 1


async def test_stop_cancels_an_idle_loop_at_once(rig: Rig) -> None:
    """An idle keeper sleeping check_interval is cancelled, not waited for."""
    keeper = await rig.build({"p": rig.section("p", models=["model-a"])})
    idle = asyncio.Event()

    async def forever(seconds: float) -> None:
        idle.set()
        await asyncio.Event().wait()

    rig.keeper = keeper = rig.new_keeper(sleep=forever, with_adapters=False)
    async with asyncio.timeout(5.0), keeper.running(lambda: 60.0):
        await idle.wait()


class FailingOnceStore:
    """The real store, except that its first due-check read fails like a dropped connection."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def lease_due(
        self, instances: Any, now: datetime, limit: int, owner: str, lease_seconds: float
    ) -> list[KeyRecord]:
        if not self.failures:
            self.failures += 1
            raise StoreError("connection lost (test)")
        return await self._store.lease_due(instances, now, limit, owner, lease_seconds)


async def test_a_failed_round_is_logged_and_the_loop_goes_on(rig: Rig) -> None:
    """A round whose store read fails is logged; the next round probes as usual."""
    good = key_for("p", "good")
    rig.fake.set_key(good)
    rig.write_keys("p", [good])
    await rig.build({"p": rig.section("p", models=["model-a"])})
    flaky = FailingOnceStore(rig.store)
    rig.keeper = keeper = rig.new_keeper(store=flaky)
    await rig.key_sync.sync()
    with capture_logs() as logs:
        async with keeper.running(lambda: 5.0):
            await rig.fake.wait_for_requests(1)
    assert flaky.failures == 1
    assert "keeper_round_failed" in [entry["event"] for entry in logs]
    assert rig.status("p", "good", "model-a") is Status.VALID
