"""The keeper through real parts: a real store (both engines), the fake upstream, real adapters.

Time is an injected clock and the keeper's sleeps are recorded instead of
slept, so policy schedules are checked exactly and nothing waits for real.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from llmgateway.config.loader import load_config
from llmgateway.core.accessor import ConfigAccessor
from llmgateway.core.constants import ALL_MODELS_MARKER, ProviderType, Status
from llmgateway.core.errors import NoUsableKey, StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.db.store import Store
from llmgateway.db.write_queue import WriteQueue
from llmgateway.providers import build_adapter
from llmgateway.services.keeper import Keeper
from llmgateway.services.pool import KeyPool
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream

START = 1_800_000_000.0
DAY = 86400.0
MODELS = ("model-a", "model-b")
ALL_TYPES = [ProviderType.OPENAI_LIKE, ProviderType.ANTHROPIC, ProviderType.GEMINI]


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def at(self) -> datetime:
        """The current time as an aware datetime."""
        return datetime.fromtimestamp(self.now, UTC)


class RecordingSleep:
    """The keeper's sleep: remembers each wait and only yields to the loop."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


def key_for(instance: str, label: str) -> str:
    """A recognisable key value (long enough to be masked as 4...4)."""
    return f"sk-{instance}-{label}-0123456789"


def provider_section(
    fake: FakeUpstream,
    keys_dir: Path,
    provider_type: ProviderType = ProviderType.OPENAI_LIKE,
    *,
    models: Iterable[str] = MODELS,
    shared: bool = False,
    health: Mapping[str, Any] | None = None,
    timeouts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One provider instance of `config/providers.yaml`, pointing at the fake."""
    model_names = list(models)
    return {
        "provider_type": provider_type.value,
        "api_base_url": fake.url,
        "keys_path": str(keys_dir),
        "default_model": model_names[0],
        "shared_key_status": shared,
        "models": {m: {} for m in model_names},
        "access_control": {"gateway_access_token": f"tok-{keys_dir.name}"},
        "timeouts": {"connect": "2s", "first_byte": "5s", **(timeouts or {})},
        "health_policy": {"verification_attempts": 1, **(health or {})},
    }


@dataclass
class Rig:
    """Every real part the keeper works with, plus the test's handles on time."""

    store: Store
    fake: FakeUpstream
    tmp_path: Path
    session: aiohttp.ClientSession
    clock: FakeClock = field(default_factory=FakeClock)
    sleep: RecordingSleep = field(default_factory=RecordingSleep)
    accessor: ConfigAccessor | None = None
    pool: KeyPool | None = None
    queue: WriteQueue | None = None
    keeper: Keeper | None = None

    def keys_dir(self, instance: str) -> Path:
        return self.tmp_path / "keys" / instance

    def write_keys(self, instance: str, keys: Iterable[str]) -> None:
        """Write the instance's key file (the source of truth for its keys)."""
        folder = self.keys_dir(instance)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "keys.txt").write_text("".join(f"{k}\n" for k in keys))

    def section(
        self, instance: str, provider_type: ProviderType = ProviderType.OPENAI_LIKE, **options: Any
    ) -> dict[str, Any]:
        return provider_section(self.fake, self.keys_dir(instance), provider_type, **options)

    async def build(
        self, providers: Mapping[str, Mapping[str, Any]], worker: Mapping[str, Any] | None = None
    ) -> Keeper:
        """Load the config from a YAML file and wire pool, write queue, adapters and keeper."""
        for name in providers:
            self.keys_dir(name).mkdir(parents=True, exist_ok=True)
        document = {
            "worker": {"max_concurrent_probes": 10, **(worker or {})},
            "providers": dict(providers),
        }
        path = self.tmp_path / "providers.yaml"
        path.write_text(json.dumps(document))  # JSON is YAML
        self.accessor = ConfigAccessor(load_config(path, env={}))
        enabled = self.accessor.enabled_providers()
        await self.store.sync_providers([(p.name, p.provider_type) for p in enabled])
        self.queue = WriteQueue(self.store)
        self.pool = KeyPool(enabled, sink=self.queue.put, clock=self.clock)
        self.keeper = self.new_keeper(self.pool)
        return self.keeper

    def new_keeper(self, pool: KeyPool) -> Keeper:
        assert self.accessor is not None
        adapters = {
            p.name: build_adapter(p, clock=self.clock) for p in self.accessor.enabled_providers()
        }
        return Keeper(
            self.accessor, self.store, pool, self.session, adapters, self.clock, self.sleep
        )

    async def round(self) -> int:
        """Flush what the last round queued, then run one keeper round."""
        assert self.queue is not None and self.keeper is not None
        await self.queue.flush()
        return await self.keeper.run_once()

    def status(self, instance: str, label: str, model: str) -> Status:
        return self.record(instance, label, model).status

    def record(self, instance: str, label: str, model: str) -> KeyRecord:
        assert self.pool is not None
        key = key_for(instance, label)
        found = [r for r in self.pool.records(instance) if r.key == key and r.model == model]
        assert len(found) == 1, f"no single record for {label}/{model}"
        return found[0]


@pytest.fixture
async def rig(store: Store, fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Rig]:
    """A keeper test rig on each store engine; the write queue is drained at the end."""
    async with aiohttp.ClientSession() as session:
        made = Rig(store, fake_upstream, tmp_path, session)
        yield made
        if made.keeper is not None:
            await made.keeper.stop(1.0)
        if made.queue is not None:
            await made.queue.close(5.0)


MIXED_KEYS: dict[str, tuple[Behaviour, tuple[str, ...] | None]] = {
    "good": (Behaviour.OK, None),
    "invalid": (Behaviour.INVALID_KEY, None),
    "broke": (Behaviour.NO_QUOTA, None),
    "busy": (Behaviour.RATE_LIMITED, None),
    "half": (Behaviour.NO_MODEL, ("model-b",)),
}

EXPECTED: dict[str, tuple[Status, Status]] = {
    "good": (Status.VALID, Status.VALID),
    "invalid": (Status.INVALID_KEY, Status.INVALID_KEY),
    "broke": (Status.NO_QUOTA, Status.NO_QUOTA),
    "busy": (Status.RATE_LIMITED, Status.RATE_LIMITED),
    "half": (Status.VALID, Status.NO_MODEL),
}


def setup_mixed(rig: Rig, instance: str) -> None:
    """Give the fake and the key file one key of each MIXED_KEYS behaviour."""
    for label, (behaviour, models) in MIXED_KEYS.items():
        rig.fake.set_key(key_for(instance, label), behaviour, models, retry_after=30.0)
    rig.write_keys(instance, [key_for(instance, label) for label in MIXED_KEYS])


@pytest.mark.parametrize("provider_type", ALL_TYPES)
async def test_fresh_pool_converges_per_key_and_model(
    rig: Rig, provider_type: ProviderType
) -> None:
    """Good, invalid, no-quota, rate-limited and no-model keys each end in their own status."""
    setup_mixed(rig, "p")
    keeper = await rig.build({"p": rig.section("p", provider_type)})
    await keeper.sync_keys()
    assert {r.status for r in rig.pool.records()} == {Status.UNTESTED}  # type: ignore[union-attr]
    assert await rig.round() > 0
    for label, statuses in EXPECTED.items():
        assert (rig.status("p", label, "model-a"), rig.status("p", label, "model-b")) == statuses
    pool = rig.pool
    assert pool is not None
    picked_a = {pool.pick("p", "model-a").key for _ in range(10)}
    picked_b = {pool.pick("p", "model-b").key for _ in range(10)}
    assert picked_a == {key_for("p", "good"), key_for("p", "half")}
    assert picked_b == {key_for("p", "good")}  # "busy" is cooling down
    assert {r.model for r in rig.fake.requests} == set(MODELS)


async def test_next_check_follows_the_policy(rig: Rig) -> None:
    """Each outcome schedules its next check after its own health_policy interval."""
    setup_mixed(rig, "p")
    health = {
        "on_success": "1000s",
        "on_invalid_key": "2000s",
        "on_no_quota": "3000s",
        "on_rate_limit": "4000s",
        "on_no_model": "5000s",
    }
    keeper = await rig.build({"p": rig.section("p", health=health)})
    await keeper.sync_keys()
    await rig.round()
    now = rig.clock.at
    expected = {
        ("good", "model-a"): 1000,
        ("invalid", "model-b"): 2000,
        ("broke", "model-a"): 3000,
        ("busy", "model-a"): 4000,
        ("half", "model-a"): 1000,
        ("half", "model-b"): 5000,
    }
    for (label, model), seconds in expected.items():
        record = rig.record("p", label, model)
        assert record.last_checked_at == now
        assert record.next_check_at == now + timedelta(seconds=seconds), (label, model)
    busy = rig.record("p", "busy", "model-a")
    assert busy.cooldown_until == now + timedelta(seconds=30)
    assert busy.status_code == 429
    assert rig.record("p", "good", "model-a").response_ms is not None


async def test_retry_after_beyond_the_policy_wins(rig: Rig) -> None:
    """A provider's Retry-After later than on_rate_limit sets the next check."""
    rig.fake.set_key(key_for("p", "busy"), Behaviour.RATE_LIMITED, retry_after=7200.0)
    rig.write_keys("p", [key_for("p", "busy")])
    keeper = await rig.build({"p": rig.section("p", models=["model-a"])})
    await keeper.sync_keys()
    await rig.round()
    record = rig.record("p", "busy", "model-a")
    assert record.next_check_at == rig.clock.at + timedelta(seconds=7200)


async def test_retryable_failure_is_verified_before_it_is_recorded(rig: Rig) -> None:
    """A rate limit is probed verification_attempts times in all, verification_delay apart."""
    rig.fake.set_key(key_for("p", "busy"), Behaviour.RATE_LIMITED)
    rig.fake.set_key(key_for("p", "bad"), Behaviour.INVALID_KEY)
    rig.write_keys("p", [key_for("p", "busy"), key_for("p", "bad")])
    health = {"verification_attempts": 3, "verification_delay": "65s"}
    keeper = await rig.build({"p": rig.section("p", models=["model-a"], health=health)})
    await keeper.sync_keys()
    await rig.round()
    assert rig.fake.calls_by_key[key_for("p", "busy")] == 3
    assert rig.fake.calls_by_key[key_for("p", "bad")] == 1
    assert rig.sleep.calls == [65.0, 65.0]
    assert rig.status("p", "busy", "model-a") is Status.RATE_LIMITED


async def test_reverification_success_records_valid(rig: Rig) -> None:
    """A retryable failure that passes on re-verification is recorded valid."""
    flaky = key_for("p", "flaky")
    rig.fake.set_key(flaky, Behaviour.SERVER_ERROR)
    rig.write_keys("p", [flaky])
    health = {"verification_attempts": 3, "verification_delay": "10s"}
    keeper = await rig.build({"p": rig.section("p", models=["model-a"], health=health)})
    await keeper.sync_keys()

    async def heal(seconds: float) -> None:
        rig.sleep.calls.append(seconds)
        rig.fake.set_key(flaky, Behaviour.OK)

    keeper = Keeper(
        rig.accessor,  # type: ignore[arg-type]
        rig.store,
        rig.pool,  # type: ignore[arg-type]
        rig.session,
        {"p": build_adapter(rig.accessor.get_provider("p"))},  # type: ignore[union-attr, arg-type]
        rig.clock,
        heal,
    )
    await keeper.run_once()
    assert rig.fake.calls_by_key[flaky] == 2
    assert rig.status("p", "flaky", "model-a") is Status.VALID


async def test_quarantine_and_stop_rules(rig: Rig) -> None:
    """A key failing past quarantine_after is rechecked less often, past stop_checking_after never."""
    bad = key_for("p", "bad")
    rig.fake.set_key(bad, Behaviour.INVALID_KEY)
    rig.write_keys("p", [bad])
    health = {
        "on_invalid_key": "1d",
        "quarantine_after": "3d",
        "quarantine_recheck": "2d",
        "stop_checking_after": "6d",
    }
    keeper = await rig.build({"p": rig.section("p", models=["model-a"], health=health)})
    await keeper.sync_keys()
    start = rig.clock.at
    schedule: list[tuple[int, datetime | None]] = []
    for _ in range(12):
        probed = await rig.round()
        record = rig.record("p", "bad", "model-a")
        schedule.append((probed, record.next_check_at))
        rig.clock.advance(DAY)
    days = [
        (probed, None if at is None else (at - start) / timedelta(days=1))
        for probed, at in schedule
    ]
    assert days == [
        (1, 1.0),  # failing 0d: on_invalid_key
        (1, 2.0),  # 1d
        (1, 3.0),  # 2d
        (1, 5.0),  # 3d: quarantined, recheck in 2d
        (0, 5.0),
        (1, 7.0),  # 5d: still quarantined
        (0, 7.0),
        (1, None),  # 7d: past stop_checking_after, never again
        (0, None),
        (0, None),
        (0, None),
        (0, None),
    ]
    record = rig.record("p", "bad", "model-a")
    assert record.failing_since == start
    assert record.consecutive_failures == 6
    assert rig.fake.calls_by_key[bad] == 6


async def test_shared_instance_probes_each_key_once(rig: Rig) -> None:
    """With shared_key_status one probe per key, on default_model, recorded under __ALL_MODELS__."""
    labels = ["a", "b", "c", "d"]
    for label in labels:
        rig.fake.set_key(key_for("s", label))
    rig.fake.set_key(key_for("s", "d"), Behaviour.NO_QUOTA)
    rig.write_keys("s", [key_for("s", label) for label in labels])
    section = rig.section("s", ProviderType.ANTHROPIC, models=["claude-x", "claude-y"], shared=True)
    keeper = await rig.build({"s": section})
    await keeper.sync_keys()
    assert await rig.round() == len(labels)
    assert rig.fake.calls_by_key == Counter({key_for("s", label): 1 for label in labels})
    assert {r.model for r in rig.fake.requests} == {"claude-x"}
    assert {r.model for r in rig.pool.records("s")} == {ALL_MODELS_MARKER}  # type: ignore[union-attr]
    assert rig.status("s", "a", ALL_MODELS_MARKER) is Status.VALID
    assert rig.status("s", "d", ALL_MODELS_MARKER) is Status.NO_QUOTA
    assert await rig.round() == 0


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
    keeper = await rig.build({"p": section}, worker={"max_concurrent_probes": 3})
    await keeper.sync_keys()
    with capture_logs() as logs:
        assert await rig.round() == len(behaviours) + len(good)
    assert all(rig.status("p", label, "model-a") is Status.VALID for label in good)
    assert rig.status("p", "hang", "model-a") is Status.TIMEOUT
    garbage = rig.status("p", "garbage", "model-a").reason
    assert garbage is not None and garbage.is_server_error
    text = repr(logs)
    assert "probe_failed" in text
    assert all(key_for("p", label) not in text for label in [*behaviours, *good])


async def test_gateway_pool_sees_invalidated_key_gone_without_a_db_read(rig: Rig) -> None:
    """The pool object the gateway picks from drops a key the moment the keeper invalidates it."""
    rig.fake.set_key(key_for("p", "good"))
    rig.fake.set_key(key_for("p", "revoked"))
    rig.write_keys("p", [key_for("p", "good"), key_for("p", "revoked")])
    keeper = await rig.build({"p": rig.section("p", models=["model-a"])})
    await keeper.sync_keys()
    pool = rig.pool
    assert pool is not None
    assert {pool.pick("p", "model-a").key for _ in range(4)} == {
        key_for("p", "good"),
        key_for("p", "revoked"),
    }
    rig.fake.set_key(key_for("p", "revoked"), Behaviour.INVALID_KEY)
    assert await keeper.run_once() == 2
    # Nothing was flushed: the store still says untested, the live pool already knows.
    stored = {r.key: r.status for r in await rig.store.load_records("p")}
    assert stored[key_for("p", "revoked")] is Status.UNTESTED
    assert {pool.pick("p", "model-a").key for _ in range(10)} == {key_for("p", "good")}
    with pytest.raises(NoUsableKey):
        pool.pick("p", "model-a", exclude=[rig.record("p", "good", "model-a").key_id])


async def test_statuses_survive_a_flush_and_reload(rig: Rig) -> None:
    """After the write queue is flushed, a new pool loaded from the store holds the same state."""
    setup_mixed(rig, "p")
    keeper = await rig.build({"p": rig.section("p")})
    await keeper.sync_keys()
    await rig.round()
    assert rig.queue is not None and rig.pool is not None
    await rig.queue.close(5.0)
    rig.queue = None

    def state(records: Iterable[KeyRecord]) -> dict[tuple[str, str], tuple[object, ...]]:
        return {
            (r.key, r.model): (
                r.status,
                r.last_checked_at,
                r.next_check_at,
                r.failing_since,
                r.consecutive_failures,
                r.status_code,
                r.cooldown_until,
            )
            for r in records
        }

    reloaded = KeyPool(rig.accessor.enabled_providers(), clock=rig.clock)  # type: ignore[union-attr]
    reloaded.load(await rig.store.load_records())
    assert state(reloaded.records()) == state(rig.pool.records())
    assert Status.VALID in {r.status for r in reloaded.records()}
    calls = sum(rig.fake.calls_by_key.values())
    assert await rig.new_keeper(reloaded).run_once() == 0
    assert sum(rig.fake.calls_by_key.values()) == calls


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
        worker = {"max_concurrent_probes": 12, "max_concurrent_probes_per_instance": 8}
        keeper = await rig.build(
            {name: rig.section(name, models=["model-a"]) for name in keys}, worker=worker
        )
        await keeper.sync_keys()
        assert await rig.round() == 2 * per_instance
    assert rig.fake.calls_by_key == Counter({key: 1 for key in owner})
    assert 1 < peak["all"] <= 12
    assert peak["x"] <= 8 and peak["y"] <= 8
    assert {r.status for r in rig.pool.records()} == {Status.VALID}  # type: ignore[union-attr]
    assert await rig.round() == 0


async def test_background_loop_syncs_files_and_stops(rig: Rig) -> None:
    """run() syncs keys at start and after keys_sync_interval, probes them, and stops on request."""
    first, second, stuck = key_for("p", "one"), key_for("p", "two"), key_for("p", "stuck")
    rig.fake.set_key(first)
    rig.fake.set_key(second)
    rig.fake.set_key(stuck, Behaviour.HANG)
    rig.write_keys("p", [first])
    keeper = await rig.build(
        {"p": rig.section("p", models=["model-a"])},
        worker={"keys_sync_interval": "60s", "check_interval": "10ms"},
    )
    rig.keeper = Keeper(
        rig.accessor,  # type: ignore[arg-type]
        rig.store,
        rig.pool,  # type: ignore[arg-type]
        rig.session,
        {"p": build_adapter(rig.accessor.get_provider("p"))},  # type: ignore[union-attr, arg-type]
        rig.clock,
    )
    keeper = rig.keeper
    await keeper.start()
    await rig.fake.wait_for_requests(1)
    rig.write_keys("p", [first, second, stuck])
    rig.clock.advance(61.0)
    await rig.fake.wait_for_requests(3)
    await keeper.stop(0.2)
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
    await keeper.start()
    await rig.fake.wait_for_requests(1)
    await keeper.stop(10.0)
    assert rig.status("p", "slow", "model-a") is Status.VALID
    assert rig.fake.calls_by_key[slow] == 1


async def test_stop_cancels_an_idle_loop_at_once(rig: Rig) -> None:
    """An idle keeper sleeping check_interval is cancelled, not waited for."""
    keeper = await rig.build({"p": rig.section("p", models=["model-a"])})
    idle = asyncio.Event()

    async def forever(seconds: float) -> None:
        idle.set()
        await asyncio.Event().wait()

    rig.keeper = keeper = Keeper(
        rig.accessor,  # type: ignore[arg-type]
        rig.store,
        rig.pool,  # type: ignore[arg-type]
        rig.session,
        {},
        rig.clock,
        forever,
    )
    await keeper.start()
    await asyncio.wait_for(idle.wait(), 5.0)
    async with asyncio.timeout(5.0):
        await keeper.stop(60.0)


async def test_invalid_key_is_probed_once_for_all_its_models(rig: Rig) -> None:
    """A key found invalid for one model is not probed again for the others in that round."""
    bad, good = key_for("p", "bad"), key_for("p", "good")
    rig.fake.set_key(bad, Behaviour.INVALID_KEY)
    rig.fake.set_key(good)
    rig.write_keys("p", [bad, good])
    models = ["model-a", "model-b", "model-c"]
    keeper = await rig.build(
        {"p": rig.section("p", models=models)},
        worker={"max_concurrent_probes_per_instance": 1},
    )
    await keeper.sync_keys()
    assert await rig.round() == 1 + len(models)
    assert rig.fake.calls_by_key == Counter({bad: 1, good: len(models)})
    assert {rig.status("p", "bad", m) for m in models} == {Status.INVALID_KEY}
    assert {rig.record("p", "bad", m).consecutive_failures for m in models} == {1}


class FailingOnceStore:
    """The real store, except that its first `fetch_due` fails like a dropped connection."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def fetch_due(self, instances: Any, now: datetime, limit: int) -> list[KeyRecord]:
        if not self.failures:
            self.failures += 1
            raise StoreError("connection lost (test)")
        return await self._store.fetch_due(instances, now, limit)


async def test_a_failed_round_is_logged_and_the_loop_goes_on(rig: Rig) -> None:
    """A round whose store read fails is logged; the next round probes as usual."""
    good = key_for("p", "good")
    rig.fake.set_key(good)
    rig.write_keys("p", [good])
    await rig.build({"p": rig.section("p", models=["model-a"])})
    flaky = FailingOnceStore(rig.store)
    rig.keeper = keeper = Keeper(
        rig.accessor,  # type: ignore[arg-type]
        flaky,  # type: ignore[arg-type]
        rig.pool,  # type: ignore[arg-type]
        rig.session,
        {"p": build_adapter(rig.accessor.get_provider("p"))},  # type: ignore[union-attr, arg-type]
        rig.clock,
        rig.sleep,
    )
    with capture_logs() as logs:
        await keeper.start()
        await rig.fake.wait_for_requests(1)
        await keeper.stop(5.0)
    assert flaky.failures == 1
    assert "keeper_round_failed" in [entry["event"] for entry in logs]
    assert rig.status("p", "good", "model-a") is Status.VALID
