"""Several gateway processes on one database: leases, locks, change feeds.

Each "process" is a `Peer`: its own store connection(s), write queue, live
pool, keeper and follower, as one `serve` process would have them; the peers
share one database and one fake upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import pytest

from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.models import CheckResult
from llmgateway.keeper.follower import PoolFollower
from llmgateway.keeper.keeper import Keeper
from llmgateway.pool.key_pool import KeyPool, StatusEvent
from llmgateway.providers import build_adapter
from llmgateway.store.pg_listener import APPLICATION_NAME
from llmgateway.store.protocol import Store
from llmgateway.store.sqlite import SqliteStore
from llmgateway.store.write_queue import WriteQueue
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.integration.keeper_rig import Rig, key_for, open_rig
from tests.support.databases import Database

POSTGRES = [pytest.param("postgres", marks=pytest.mark.postgres)]
SQLITE = ["sqlite"]
KEYS = 200
LEASE = 60.0
WAIT = 10.0
"""Seconds a bounded wait for a notification or a probe gets before the test fails."""


class Peer:
    """One gateway process's parts on the shared database."""

    def __init__(self, rig: Rig, store: Store, *, solo: bool = False, lease: float = LEASE) -> None:
        self.store = store
        self.queue = WriteQueue(store)
        self.pool = KeyPool(rig.accessor, sink=self.queue.put, clock=rig.clock)
        adapters = {
            p.name: build_adapter(p, clock=rig.clock) for p in rig.accessor.enabled_providers()
        }
        self.key_sync = rig.new_key_sync(self.pool, store)
        self.keeper = Keeper(
            rig.accessor,
            store,
            self.pool,
            rig.session,
            adapters,
            self.key_sync,
            rig.clock,
            _short_sleep,
            solo=solo,
            lease_seconds=lease,
        )
        names = [p.name for p in rig.accessor.enabled_providers()]
        self.follower = PoolFollower(
            store, self.pool, self.key_sync, names, reconcile_interval=3600.0
        )
        self.events = self.pool.subscribe()
        self._queue_task: asyncio.Task[None] | None = None
        self._running = AsyncExitStack()

    async def start(self, *, follow: bool = True) -> None:
        """Load the pool from the store, run the write queue and (optionally) the follower."""
        self.pool.load(await self.store.load_records())
        self._queue_task = asyncio.create_task(self.queue.run())
        if follow:
            await self._running.enter_async_context(self.follower.running())

    async def run_keeper(self) -> None:
        """Run the keeper's background loop until `stop()`."""
        await self._running.enter_async_context(self.keeper.running(lambda: 2.0))

    async def stop(self) -> None:
        """Stop the keeper and follower, drain the queue, close the store."""
        await self._running.aclose()
        await self.queue.close(5.0)
        if self._queue_task is not None:
            await self._queue_task
        await self.store.close()

    async def next_event(self, new: Status) -> StatusEvent:
        """The next status event of this pool turning a key `new` (bounded wait)."""
        async with asyncio.timeout(WAIT):
            while True:
                event = await self.events.get()
                if event.new is new:
                    return event


async def _short_sleep(seconds: float) -> None:
    await asyncio.sleep(min(seconds, 0.02))


@pytest.fixture
async def rig(
    database: Database, fake_upstream: FakeUpstream, tmp_path: Path
) -> AsyncIterator[Rig]:
    store = database.new_store()
    await store.open()
    try:
        async with open_rig(store, fake_upstream, tmp_path) as opened:
            yield opened
    finally:
        await store.close()


async def _peers(
    rig: Rig,
    database: Database,
    stack: AsyncExitStack,
    count: int,
    *,
    lease: float = LEASE,
    **options: bool,
) -> list[Peer]:
    peers: list[Peer] = []
    for _ in range(count):
        store = database.new_store()
        await store.open()
        peer = Peer(rig, store, solo=options.get("solo", False), lease=lease)
        stack.push_async_callback(peer.stop)
        await peer.start(follow=options.get("follow", True))
        peers.append(peer)
    return peers


async def _setup_keys(
    rig: Rig, count: int = KEYS, behaviour: Behaviour = Behaviour.OK
) -> list[str]:
    keys = [key_for("p", f"k{i:03d}") for i in range(count)]
    for key in keys:
        rig.fake.set_key(key, behaviour)
    rig.write_keys("p", keys)
    await rig.build({"p": rig.section("p", models=["model-a"])})
    await rig.key_sync.sync()
    return keys


@pytest.mark.parametrize("database", POSTGRES, indirect=True)
async def test_three_keepers_probe_every_due_key_exactly_once(rig: Rig, database: Database) -> None:
    """Three keepers on one database share a round of 200 due keys: each key probed once."""
    keys = await _setup_keys(rig)
    async with AsyncExitStack() as stack:
        peers = await _peers(rig, database, stack, 3, follow=False)
        recorded = await asyncio.gather(*(p.keeper.run_once() for p in peers))
        assert sum(recorded) == KEYS
        assert all(n > 0 for n in recorded), recorded
        assert {k: rig.fake.calls_by_key[k] for k in keys} == dict.fromkeys(keys, 1)
        for peer in peers:
            await peer.queue.flush()
        # Every lease was ended by the recorded result: nothing is due or leased any more.
        assert await peers[0].store.lease_due(["p"], rig.clock.at, KEYS, "x", LEASE) == []


@pytest.mark.parametrize("database", POSTGRES + SQLITE, indirect=True)
async def test_checks_leased_by_a_dead_keeper_are_taken_over_after_the_lease(
    rig: Rig, database: Database
) -> None:
    """A keeper cancelled after leasing leaves its checks to the others once the lease expires."""
    keys = await _setup_keys(rig, 100, Behaviour.HANG)
    async with AsyncExitStack() as stack:
        dying, survivor = await _peers(rig, database, stack, 2, follow=False)
        round_task = asyncio.create_task(dying.keeper.run_once())
        await rig.fake.wait_for_requests(1, within=WAIT)
        round_task.cancel()
        await asyncio.gather(round_task, return_exceptions=True)
        for key in keys:
            rig.fake.set_key(key)
        rig.fake.reset()

        first = await survivor.keeper.run_once()
        leased_by_dead = set(keys) - set(rig.fake.calls_by_key)
        assert first == len(keys) - len(leased_by_dead)
        assert leased_by_dead, "the dying keeper leased nothing"
        await survivor.queue.flush()
        assert await survivor.keeper.run_once() == 0  # still leased to the dead keeper

        rig.clock.advance(LEASE + 1)
        assert await survivor.keeper.run_once() == len(leased_by_dead)
        assert {k: rig.fake.calls_by_key[k] for k in keys} == dict.fromkeys(keys, 1)


@pytest.mark.parametrize("database", POSTGRES + SQLITE, indirect=True)
async def test_a_key_condemned_in_one_process_leaves_the_other_pool(
    rig: Rig, database: Database
) -> None:
    """A key a request condemned in process A is never picked by process B after the change reaches B."""
    keys = await _setup_keys(rig, 3)
    async with AsyncExitStack() as stack:
        a, b = await _peers(rig, database, stack, 2)
        record = a.pool.pick("p", "model-a")
        a.pool.report(record, CheckResult(ErrorReason.INVALID_KEY, 401, "revoked"))
        event = await b.next_event(Status.VERIFYING)
        assert event.instance == "p" and event.model == "model-a"
        picked = {b.pool.pick("p", "model-a").key for _ in range(30)}
        assert picked == set(keys) - {record.key}
        assert b.follower.applied >= 1
        # A ignores its own notification: nothing arrived from elsewhere.
        assert a.follower.applied == 0


@pytest.mark.parametrize("database", POSTGRES, indirect=True)
async def test_a_terminated_listener_reconnects_and_resyncs(rig: Rig, database: Database) -> None:
    """pg_terminate_backend on the listener: it reconnects and reloads what it missed meanwhile."""
    keys = await _setup_keys(rig, 2)
    async with AsyncExitStack() as stack:
        (b,) = await _peers(rig, database, stack, 1)
        async with asyncio.timeout(WAIT):
            while not b.follower.feed.state.connected:  # noqa: ASYNC110 (a state, no event)
                await asyncio.sleep(0.01)
        conn = await asyncpg.connect(database.location)
        try:
            # A change no notification announces: only a resync can bring it.
            await conn.execute(
                "UPDATE key_model_status SET status = 'no_quota', last_checked_at = now() "
                "WHERE key_id = (SELECT id FROM api_keys WHERE key_value = $1)",
                keys[0],
            )
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                APPLICATION_NAME,
            )
        finally:
            await conn.close()
        assert killed == 1
        event = await b.next_event(Status.NO_QUOTA)
        assert b.follower.feed.state.reconnects == 1
        assert b.follower.feed.state.connected
        assert event.new is Status.NO_QUOTA
        assert {b.pool.pick("p", "model-a").key for _ in range(10)} == {keys[1]}


@pytest.mark.parametrize("database", SQLITE, indirect=True)
async def test_sqlite_workers_one_probes_the_other_follows(rig: Rig, database: Database) -> None:
    """Two SQLite workers: one keeper probes each key once, the other worker's pool follows."""
    keys = await _setup_keys(rig, 20)
    async with AsyncExitStack() as stack:
        peers = await _peers(rig, database, stack, 2, solo=True)
        for peer in peers:
            await peer.run_keeper()
        async with asyncio.timeout(WAIT):
            while not any(p.keeper.active for p in peers):  # noqa: ASYNC110 (a state, no event)
                await asyncio.sleep(0.01)
        active = next(p for p in peers if p.keeper.active)
        standby = next(p for p in peers if p is not active)
        await rig.fake.wait_for_requests(len(keys), within=WAIT)
        for _ in keys:
            await standby.next_event(Status.VALID)
        assert not standby.keeper.active
        assert {k: rig.fake.calls_by_key[k] for k in keys} == dict.fromkeys(keys, 1)
        assert {r.status for r in standby.pool.records()} == {Status.VALID}

        rig.clock.advance(1.0)  # the request comes after the probes
        record = standby.pool.pick("p", "model-a")
        standby.pool.report(record, CheckResult(ErrorReason.INVALID_KEY, 401, "revoked"))
        await active.next_event(Status.VERIFYING)
        assert record.key not in {active.pool.pick("p", "model-a").key for _ in range(40)}


async def test_sqlite_exclusive_lock_is_held_by_one_store_at_a_time(tmp_path: Path) -> None:
    """Two stores on one SQLite file: the named lock is granted to one, then to the other."""
    first = SqliteStore(tmp_path / "gw.db")
    second = SqliteStore(tmp_path / "gw.db")
    await first.open()
    await second.open()
    try:
        async with (
            first.exclusive("keysync") as got_first,
            second.exclusive("keysync") as got_second,
        ):
            assert (got_first, got_second) == (True, False)
        async with second.exclusive("keysync") as again:
            assert again
    finally:
        await first.close()
        await second.close()


async def _until(predicate: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until `predicate()` holds."""
    try:
        async with asyncio.timeout(WAIT):
            while not predicate():  # noqa: ASYNC110 (a state, no event)
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"not within {WAIT} s: {what}")


@pytest.mark.parametrize("database", POSTGRES + SQLITE, indirect=True)
async def test_keys_a_sync_adds_and_removes_reach_the_other_pool_through_the_feed(
    rig: Rig, database: Database
) -> None:
    """A key-file sync in process A: B's pool drops the removed key and gains the new one.

    B's periodic reconciliation is an hour away: only its change feed can bring them.
    """
    keys = await _setup_keys(rig, 3)
    async with AsyncExitStack() as stack:
        a, b = await _peers(rig, database, stack, 2)
        await _until(lambda: b.follower.reconciliations >= 1, "B's feed started and caught up")
        added = key_for("p", "new")
        rig.fake.set_key(added)
        rig.write_keys("p", [*keys[1:], added])
        await a.key_sync.sync()

        def b_keys() -> set[str]:
            return {r.key for r in b.pool.records("p")}

        await _until(lambda: b_keys() == {*keys[1:], added}, "B's pool follows the key file")
        picked = {b.pool.pick("p", "model-a").key for _ in range(30)}
        assert picked == {*keys[1:], added}
        assert b.follower.reconciliations == 1  # the first one only: the feed brought them


@pytest.mark.parametrize("database", POSTGRES + SQLITE, indirect=True)
async def test_a_check_outlasting_its_lease_is_renewed_not_taken_over(
    rig: Rig, database: Database
) -> None:
    """The holder renews the lease while its probe runs: another keeper never runs the check too."""
    (key,) = await _setup_keys(rig, 1)
    rig.fake.set_key(key, Behaviour.SLOW_FIRST_BYTE, delay=3.0)
    async with AsyncExitStack() as stack:
        holder, other = await _peers(rig, database, stack, 2, lease=0.6, follow=False)
        checking = asyncio.create_task(holder.keeper.run_once())
        await rig.fake.wait_for_requests(1, within=WAIT)
        # Far past the lease as first granted; then a renewal lands.
        rig.clock.advance(10.0)
        renewed = holder.keeper.leases.renewals
        await _until(lambda: holder.keeper.leases.renewals > renewed, "a renewal after the leap")
        assert await other.keeper.run_once() == 0
        assert await checking == 1
        assert rig.fake.calls_by_key[key] == 1


@pytest.mark.parametrize("database", POSTGRES + SQLITE, indirect=True)
async def test_renewal_stops_with_its_holder_and_the_check_is_taken_over(
    rig: Rig, database: Database
) -> None:
    """A holder that dies mid-probe renews nothing more: after one lease, the check moves on."""
    (key,) = await _setup_keys(rig, 1)
    rig.fake.set_key(key, Behaviour.HANG)
    async with AsyncExitStack() as stack:
        dying, survivor = await _peers(rig, database, stack, 2, lease=0.6, follow=False)
        checking = asyncio.create_task(dying.keeper.run_once())
        await rig.fake.wait_for_requests(1, within=WAIT)
        checking.cancel()
        await asyncio.gather(checking, return_exceptions=True)
        rig.fake.set_key(key)
        assert await survivor.keeper.run_once() == 0  # the lease still holds
        rig.clock.advance(0.6 + 0.1)
        assert await survivor.keeper.run_once() == 1
        assert rig.fake.calls_by_key[key] == 2
