"""The keeper's outcomes through real parts: statuses, schedules, scopes, persistence.

A real store (SQLite and PostgreSQL), the fake upstream, the real adapters and
config loader; time is an injected clock and the keeper's sleeps are recorded
instead of slept, so policy schedules are checked exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from llmgateway.core.constants import ALL_MODELS_MARKER, ProviderType, Status
from llmgateway.core.models import KeyRecord
from llmgateway.pool.key_pool import AllKeysTried, KeyPool
from llmgateway.store.protocol import Store
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.integration.keeper_rig import DAY, MODELS, Rig, key_for, open_rig

ALL_TYPES = [ProviderType.OPENAI_LIKE, ProviderType.ANTHROPIC, ProviderType.GEMINI]


@pytest.fixture
async def rig(store: Store, fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Rig]:
    """A keeper rig on each store engine."""
    async with open_rig(store, fake_upstream, tmp_path) as made:
        yield made


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
    await rig.build({"p": rig.section("p", provider_type)})
    await rig.key_sync.sync()
    assert {r.status for r in rig.pool.records()} == {Status.UNTESTED}
    assert await rig.round() > 0
    for label, statuses in EXPECTED.items():
        assert (rig.status("p", label, "model-a"), rig.status("p", label, "model-b")) == statuses
    pool = rig.pool
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
    await rig.build({"p": rig.section("p", health=health)})
    await rig.key_sync.sync()
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
    await rig.build({"p": rig.section("p", models=["model-a"])})
    await rig.key_sync.sync()
    await rig.round()
    record = rig.record("p", "busy", "model-a")
    assert record.next_check_at == rig.clock.at + timedelta(seconds=7200)


async def test_retryable_failure_is_verified_before_it_is_recorded(rig: Rig) -> None:
    """A rate limit is re-probed verification_delay apart, shown meanwhile, a verdict at the third."""
    busy, bad = key_for("p", "busy"), key_for("p", "bad")
    rig.fake.set_key(busy, Behaviour.RATE_LIMITED)
    rig.fake.set_key(bad, Behaviour.INVALID_KEY)
    rig.write_keys("p", [busy, bad])
    health = {"verification_attempts": 3, "verification_delay": "65s", "on_rate_limit": "1h"}
    await rig.build({"p": rig.section("p", models=["model-a"], health=health)})
    await rig.key_sync.sync()
    for attempt in (1, 2):
        await rig.round()
        waiting = rig.record("p", "busy", "model-a")
        # Not a verdict yet, but never shown as untested: the last reason and the next check.
        assert waiting.status is Status.RATE_LIMITED
        assert waiting.next_check_at == rig.clock.at + timedelta(seconds=65)
        assert rig.fake.calls_by_key[busy] == attempt
        rig.clock.advance(65)
    await rig.round()
    assert rig.fake.calls_by_key[busy] == 3
    assert rig.record("p", "busy", "model-a").next_check_at == rig.clock.at + timedelta(hours=1)
    assert rig.fake.calls_by_key[bad] == 1
    assert rig.status("p", "bad", "model-a") is Status.INVALID_KEY
    assert rig.sleep.calls == []  # nothing waits inside a round


async def test_reverification_success_records_valid(rig: Rig) -> None:
    """A retryable failure that passes on re-verification is recorded valid."""
    flaky = key_for("p", "flaky")
    rig.fake.set_key(flaky, Behaviour.SERVER_ERROR)
    rig.write_keys("p", [flaky])
    health = {"verification_attempts": 3, "verification_delay": "10s"}
    await rig.build({"p": rig.section("p", models=["model-a"], health=health)})
    await rig.key_sync.sync()
    await rig.round()
    assert rig.status("p", "flaky", "model-a") is Status.SERVER_ERROR
    rig.fake.set_key(flaky, Behaviour.OK)
    rig.clock.advance(10)
    await rig.round()
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
    await rig.build({"p": rig.section("p", models=["model-a"], health=health)})
    await rig.key_sync.sync()
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
    await rig.build({"s": section})
    await rig.key_sync.sync()
    assert await rig.round() == len(labels)
    assert rig.fake.calls_by_key == Counter({key_for("s", label): 1 for label in labels})
    assert {r.model for r in rig.fake.requests} == {"claude-x"}
    assert {r.model for r in rig.pool.records("s")} == {ALL_MODELS_MARKER}
    assert rig.status("s", "a", ALL_MODELS_MARKER) is Status.VALID
    assert rig.status("s", "d", ALL_MODELS_MARKER) is Status.NO_QUOTA
    assert await rig.round() == 0


async def test_invalid_key_is_probed_once_for_all_its_models(rig: Rig) -> None:
    """A key found invalid for one model is not probed again for the others in that round."""
    bad, good = key_for("p", "bad"), key_for("p", "good")
    rig.fake.set_key(bad, Behaviour.INVALID_KEY)
    rig.fake.set_key(good)
    rig.write_keys("p", [bad, good])
    models = ["model-a", "model-b", "model-c"]
    await rig.build(
        {"p": rig.section("p", models=models)},
        keeper={"max_concurrent_probes_per_instance": 1},
    )
    await rig.key_sync.sync()
    assert await rig.round() == 1 + len(models)
    assert rig.fake.calls_by_key == Counter({bad: 1, good: len(models)})
    assert {rig.status("p", "bad", m) for m in models} == {Status.INVALID_KEY}
    assert {rig.record("p", "bad", m).consecutive_failures for m in models} == {1}


async def test_gateway_pool_sees_invalidated_key_gone_without_a_db_read(rig: Rig) -> None:
    """The pool object the gateway picks from drops a key the moment the keeper invalidates it."""
    rig.fake.set_key(key_for("p", "good"))
    rig.fake.set_key(key_for("p", "revoked"))
    rig.write_keys("p", [key_for("p", "good"), key_for("p", "revoked")])
    keeper = await rig.build({"p": rig.section("p", models=["model-a"])})
    await rig.key_sync.sync()
    pool = rig.pool
    assert {pool.pick("p", "model-a").key for _ in range(4)} == {
        key_for("p", "good"),
        key_for("p", "revoked"),
    }
    rig.fake.set_key(key_for("p", "revoked"), Behaviour.INVALID_KEY)
    assert await keeper.run_once() == 2
    # Nothing was flushed: the store still says untested, the live pool already knows.
    stored = {r.key: r.status for r in await rig.store.load_records("p")}
    assert stored[key_for("p", "revoked")] is Status.UNTESTED
    assert await keeper.run_once() == 0  # the store says due; the pool knows better
    assert {pool.pick("p", "model-a").key for _ in range(10)} == {key_for("p", "good")}
    with pytest.raises(AllKeysTried):
        pool.pick("p", "model-a", exclude=[rig.record("p", "good", "model-a").key_id])


async def test_statuses_survive_a_flush_and_reload(rig: Rig) -> None:
    """After the write queue is flushed, a new pool loaded from the store holds the same state."""
    setup_mixed(rig, "p")
    await rig.build({"p": rig.section("p")})
    await rig.key_sync.sync()
    await rig.round()
    assert rig.queue is not None
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

    reloaded = KeyPool(rig.accessor, clock=rig.clock)
    reloaded.load(await rig.store.load_records())
    assert state(reloaded.records()) == state(rig.pool.records())
    assert Status.VALID in {r.status for r in reloaded.records()}
    calls = sum(rig.fake.calls_by_key.values())
    assert await rig.new_keeper(reloaded).run_once() == 0
    assert sum(rig.fake.calls_by_key.values()) == calls


class ProbeCounter:
    """A probe observer counting recorded probes by (instance, status)."""

    def __init__(self) -> None:
        self.probes: Counter[tuple[str, str]] = Counter()

    def probe_done(self, instance: str, status: str) -> None:
        self.probes[(instance, status)] += 1


async def test_recorded_probes_are_reported_to_the_observer(rig: Rig) -> None:
    """Every recorded probe is counted once by the observer, with its resulting status."""
    setup_mixed(rig, "p")
    await rig.build({"p": rig.section("p", models=["model-a"])})
    observer = ProbeCounter()
    rig.keeper = keeper = rig.new_keeper(observer=observer)
    await rig.key_sync.sync()
    assert await keeper.run_once() == len(MIXED_KEYS)
    assert observer.probes == Counter(
        {
            ("p", "valid"): 2,
            ("p", "invalid_key"): 1,
            ("p", "no_quota"): 1,
            ("p", "rate_limited"): 1,
        }
    )
