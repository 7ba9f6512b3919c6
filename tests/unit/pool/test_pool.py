"""The live key pool: rotation, failure scopes, cool-downs, events and writes, on an injected clock."""

from __future__ import annotations

import asyncio
import gc
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from enum import Enum

import pytest

from llmgateway.config.schemas import ModelConfig, ProviderConfig
from llmgateway.core.constants import ALL_MODELS_MARKER, ErrorReason, ProviderType, Status
from llmgateway.core.errors import KeysCoolingDown, NoUsableKey
from llmgateway.core.logs import mask_key
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.pool.key_pool import SLICE, AllKeysTried, KeyPool
from tests.support.config import accessor_of

START = 1_800_000_000.0
MODELS = ("model-a", "model-b")


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def provider(name: str = "main", shared: bool = False, cooldown: float = 60.0) -> ProviderConfig:
    """A provider instance with two models."""
    config = ProviderConfig(
        name=name,
        provider_type=ProviderType.OPENAI_LIKE,
        api_base_url="http://127.0.0.1:1",
        default_model="model-a",
        shared_key_status=shared,
        models={m: ModelConfig() for m in MODELS},
    )
    return replace(
        config, gateway_policy=replace(config.gateway_policy, rate_limit_cooldown=cooldown)
    )


def key_of(key_id: int) -> str:
    """The key value of key `key_id` (long enough to be masked, not starred)."""
    return f"sk-test-{key_id:04d}-abcdefgh"


def records(
    count: int, instance: str = "main", models: tuple[str, ...] = MODELS
) -> list[KeyRecord]:
    """`count` untested keys, one record per model."""
    return [
        KeyRecord(key_id=i, instance=instance, key=key_of(i), model=m, status=Status.UNTESTED)
        for i in range(1, count + 1)
        for m in models
    ]


class Sink:
    """Collects every record the pool hands to its write sink."""

    def __init__(self) -> None:
        self.written: list[KeyRecord] = []

    def __call__(self, record: KeyRecord) -> None:
        self.written.append(record)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink() -> Sink:
    return Sink()


def make_pool(
    clock: FakeClock,
    sink: Sink,
    count: int = 3,
    shared: bool = False,
    cooldown: float = 60.0,
) -> KeyPool:
    pool = KeyPool(
        accessor_of(provider(shared=shared, cooldown=cooldown)),
        sink=sink,
        clock=clock,
        rng=lambda: 0.5,
    )
    models = (ALL_MODELS_MARKER,) if shared else MODELS
    pool.load(records(count, models=models))
    return pool


def fail(reason: ErrorReason, retry_after: float | None = None) -> CheckResult:
    return CheckResult(
        reason=reason, status_code=400, message=reason.value, retry_after=retry_after
    )


def picks(pool: KeyPool, model: str, n: int) -> list[int]:
    return [pool.pick("main", model).key_id for _ in range(n)]


class TestRotation:
    def test_rotation_is_fair(self, clock: FakeClock, sink: Sink) -> None:
        """Every usable key is picked equally often, in a stable round robin."""
        pool = make_pool(clock, sink, count=4)
        chosen = picks(pool, "model-a", 40)
        assert Counter(chosen) == {1: 10, 2: 10, 3: 10, 4: 10}
        assert chosen[:4] == chosen[4:8]

    def test_exclude_skips_keys_already_tried(self, clock: FakeClock, sink: Sink) -> None:
        """A key in `exclude` is never returned while another usable key exists."""
        pool = make_pool(clock, sink, count=3)
        for _ in range(6):
            assert pool.pick("main", "model-a", exclude=[1, 2]).key_id == 3

    def test_everything_excluded_is_all_keys_tried(self, clock: FakeClock, sink: Sink) -> None:
        """When every usable key is excluded, pick raises AllKeysTried (the caller may reuse one)."""
        pool = make_pool(clock, sink, count=2)
        with pytest.raises(AllKeysTried):
            pool.pick("main", "model-a", exclude=[1, 2])

    def test_unknown_slot_is_no_usable_key(self, clock: FakeClock, sink: Sink) -> None:
        """A model or instance without keys raises NoUsableKey."""
        pool = make_pool(clock, sink)
        with pytest.raises(NoUsableKey):
            pool.pick("main", "model-z")
        with pytest.raises(NoUsableKey):
            pool.pick("other", "model-a")

    def test_slot_model_maps_unknown_models_to_the_default(
        self, clock: FakeClock, sink: Sink
    ) -> None:
        """A configured model has its own slot; an unknown one uses default_model's."""
        pool = make_pool(clock, sink)
        assert pool.slot_model("main", "model-b") == "model-b"
        assert pool.slot_model("main", "gpt-unknown") == "model-a"

    def test_shared_instance_uses_one_slot_for_every_model(
        self, clock: FakeClock, sink: Sink
    ) -> None:
        """With shared_key_status every model is served from `__ALL_MODELS__`."""
        pool = make_pool(clock, sink, shared=True)
        assert pool.slot_model("main", "model-b") == ALL_MODELS_MARKER
        assert pool.slot_model("main", "anything") == ALL_MODELS_MARKER
        assert pool.pick("main", ALL_MODELS_MARKER).model == ALL_MODELS_MARKER


class TestFailureScope:
    def test_fatal_key_leaves_rotation(self, clock: FakeClock, sink: Sink) -> None:
        """A key reported invalid is never picked again."""
        pool = make_pool(clock, sink, count=3)
        bad = pool.pick("main", "model-a")
        pool.report(bad, fail(ErrorReason.INVALID_KEY))
        assert set(picks(pool, "model-a", 30)) == {1, 2, 3} - {bad.key_id}

    def test_key_wide_reason_condemns_every_model(self, clock: FakeClock, sink: Sink) -> None:
        """invalid_key and no_access take the key out of every model of its instance."""
        pool = make_pool(clock, sink, count=3)
        for key_id, reason in ((1, ErrorReason.INVALID_KEY), (2, ErrorReason.NO_ACCESS)):
            record = pool.get("main", "model-a", key_id)
            assert record is not None
            pool.report(record, fail(reason))
        assert set(picks(pool, "model-b", 10)) == {3}
        for key_id, reason in ((1, ErrorReason.INVALID_KEY), (2, ErrorReason.NO_ACCESS)):
            held = pool.get("main", "model-b", key_id)
            assert held is not None
            assert (held.status, held.reason) == (Status.VERIFYING, reason)

    @pytest.mark.parametrize("reason", [ErrorReason.NO_QUOTA, ErrorReason.NO_MODEL])
    def test_model_scoped_reason_keeps_other_models(
        self, clock: FakeClock, sink: Sink, reason: ErrorReason
    ) -> None:
        """no_quota and no_model take the key out of that model only."""
        pool = make_pool(clock, sink, count=2)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(reason))
        assert set(picks(pool, "model-a", 10)) == {2}
        assert set(picks(pool, "model-b", 10)) == {1, 2}
        assert pool.get("main", "model-b", 1).status is Status.UNTESTED  # type: ignore[union-attr]

    def test_shared_instance_failure_covers_every_model(self, clock: FakeClock, sink: Sink) -> None:
        """On a shared instance a no_quota key is gone for every requested model."""
        pool = make_pool(clock, sink, count=2, shared=True)
        record = pool.get("main", ALL_MODELS_MARKER, 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.NO_QUOTA))
        for model in ("model-a", "model-b", "unknown"):
            slot = pool.slot_model("main", model)
            assert {pool.pick("main", slot).key_id for _ in range(4)} == {2}

    def test_probe_success_brings_a_condemned_key_back(self, clock: FakeClock, sink: Sink) -> None:
        """A condemned key whose probe succeeds rejoins the rotation."""
        pool = make_pool(clock, sink, count=2)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.NO_QUOTA))
        assert set(picks(pool, "model-a", 4)) == {2}
        pool.report(record, CheckResult(reason=None, status_code=200), probe=True)
        assert set(picks(pool, "model-a", 4)) == {1, 2}
        assert pool.get("main", "model-a", 1).status is Status.VALID  # type: ignore[union-attr]

    def test_last_key_condemned_is_no_usable_key(self, clock: FakeClock, sink: Sink) -> None:
        """When every key is condemned, pick raises NoUsableKey, not KeysCoolingDown."""
        pool = make_pool(clock, sink, count=2)
        for key_id in (1, 2):
            record = pool.get("main", "model-a", key_id)
            assert record is not None
            pool.report(record, fail(ErrorReason.INVALID_KEY))
        with pytest.raises(NoUsableKey):
            pool.pick("main", "model-a")


class TestCooldown:
    def test_rate_limited_key_cools_down_then_returns(self, clock: FakeClock, sink: Sink) -> None:
        """A rate-limited key is skipped until its retry-after passes, then picked again."""
        pool = make_pool(clock, sink, count=2)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.RATE_LIMITED, retry_after=30.0))
        assert set(picks(pool, "model-a", 6)) == {2}
        clock.advance(29.0)
        assert set(picks(pool, "model-a", 6)) == {2}
        clock.advance(1.0)
        assert set(picks(pool, "model-a", 6)) == {1, 2}

    def test_default_cooldown_without_retry_after(self, clock: FakeClock, sink: Sink) -> None:
        """Without a retry-after the key cools down for `rate_limit_cooldown`."""
        pool = make_pool(clock, sink, count=2, cooldown=90.0)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.RATE_LIMITED))
        clock.advance(89.0)
        assert set(picks(pool, "model-a", 4)) == {2}
        clock.advance(1.0)
        assert set(picks(pool, "model-a", 4)) == {1, 2}

    def test_rate_limit_is_model_scoped(self, clock: FakeClock, sink: Sink) -> None:
        """A key rate limited for one model stays in rotation for the others."""
        pool = make_pool(clock, sink, count=2)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.RATE_LIMITED, retry_after=30.0))
        assert set(picks(pool, "model-b", 4)) == {1, 2}

    def test_all_cooling_reports_the_soonest_return(self, clock: FakeClock, sink: Sink) -> None:
        """When every key cools down, KeysCoolingDown carries the soonest return."""
        pool = make_pool(clock, sink, count=3)
        for key_id, wait in ((1, 300.0), (2, 40.0), (3, 120.0)):
            record = pool.get("main", "model-a", key_id)
            assert record is not None
            pool.report(record, fail(ErrorReason.RATE_LIMITED, retry_after=wait))
        clock.advance(10.0)
        with pytest.raises(KeysCoolingDown) as caught:
            pool.pick("main", "model-a")
        assert caught.value.retry_after == pytest.approx(30.0)
        clock.advance(30.0)
        assert pool.pick("main", "model-a").key_id == 2

    def test_condemned_keys_do_not_count_as_cooling(self, clock: FakeClock, sink: Sink) -> None:
        """A cooling key later condemned does not make the pool report a cool-down."""
        pool = make_pool(clock, sink, count=1)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.RATE_LIMITED, retry_after=30.0))
        pool.report(record, fail(ErrorReason.INVALID_KEY))
        with pytest.raises(NoUsableKey):
            pool.pick("main", "model-a")
        clock.advance(60.0)
        with pytest.raises(NoUsableKey):
            pool.pick("main", "model-a")

    def test_extended_cooldown_is_not_cut_short(self, clock: FakeClock, sink: Sink) -> None:
        """A second, longer rate limit keeps the key out past the first cool-down's end."""
        pool = make_pool(clock, sink, count=2)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.RATE_LIMITED, retry_after=10.0))
        pool.report(record, fail(ErrorReason.RATE_LIMITED, retry_after=100.0))
        clock.advance(50.0)
        assert set(picks(pool, "model-a", 4)) == {2}
        clock.advance(50.0)
        assert set(picks(pool, "model-a", 4)) == {1, 2}

    def test_stored_cooldown_survives_a_load(self, clock: FakeClock, sink: Sink) -> None:
        """A record loaded with a future cooldown_until is skipped until it passes."""
        pool = KeyPool(accessor_of(provider()), sink=sink, clock=clock)
        until = datetime.fromtimestamp(START + 20.0, UTC)
        loaded = records(2, models=("model-a",))
        loaded[0] = replace(loaded[0], status=Status.RATE_LIMITED, cooldown_until=until)
        pool.load(loaded)
        assert set(picks(pool, "model-a", 4)) == {2}
        clock.advance(20.0)
        assert set(picks(pool, "model-a", 4)) == {1, 2}


class TestGatewayReports:
    def test_success_on_a_valid_key_writes_nothing(self, clock: FakeClock, sink: Sink) -> None:
        """A gateway success with a key already valid neither writes nor announces."""
        pool = make_pool(clock, sink, count=1)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, CheckResult(reason=None), probe=True)
        sink.written.clear()
        events = pool.subscribe()
        pool.report(pool.pick("main", "model-a"), CheckResult(reason=None))
        assert sink.written == []
        assert events.empty()

    def test_success_on_an_untested_key_records_it_valid(
        self, clock: FakeClock, sink: Sink
    ) -> None:
        """A gateway success with an untested key records it valid."""
        pool = make_pool(clock, sink, count=1)
        pool.report(pool.pick("main", "model-a"), CheckResult(reason=None, status_code=200))
        assert [r.status for r in sink.written] == [Status.VALID]

    @pytest.mark.parametrize(
        "reason",
        [
            ErrorReason.SERVER_ERROR,
            ErrorReason.TIMEOUT,
            ErrorReason.NETWORK_ERROR,
            ErrorReason.OVERLOADED,
            ErrorReason.SERVICE_UNAVAILABLE,
            ErrorReason.STREAM_DISCONNECT,
            ErrorReason.BAD_REQUEST,
        ],
    )
    def test_server_and_client_errors_change_nothing(
        self, clock: FakeClock, sink: Sink, reason: ErrorReason
    ) -> None:
        """A server-side or client-side failure seen by the gateway never penalises the key."""
        pool = make_pool(clock, sink, count=1)
        record = pool.pick("main", "model-a")
        pool.report(record, fail(reason))
        assert sink.written == []
        assert pool.get("main", "model-a", 1) == record
        assert pool.pick("main", "model-a").key_id == 1

    def test_probe_server_error_is_recorded_but_key_stays_usable(
        self, clock: FakeClock, sink: Sink
    ) -> None:
        """A probe's server error is written, and the key stays in rotation."""
        pool = make_pool(clock, sink, count=1)
        record = pool.pick("main", "model-a")
        pool.report(record, fail(ErrorReason.SERVER_ERROR), probe=True)
        assert [r.status for r in sink.written] == [Status.SERVER_ERROR]
        assert pool.pick("main", "model-a").key_id == 1

    def test_sink_receives_each_changed_record(self, clock: FakeClock, sink: Sink) -> None:
        """Every applied report hands the new record to the sink, one per affected model."""
        pool = make_pool(clock, sink, count=2)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.INVALID_KEY))
        assert sorted((r.key_id, r.model, r.status) for r in sink.written) == [
            (1, "model-a", Status.VERIFYING),
            (1, "model-b", Status.VERIFYING),
        ]
        expected_at = datetime.fromtimestamp(START, UTC)
        assert all(r.last_checked_at == expected_at for r in sink.written)
        # confirm_within 30 s, jittered to 0.25..0.75 of it (the injected rng gives 0.5).
        assert all(r.next_check_at == expected_at + timedelta(seconds=15) for r in sink.written)


class TestEvents:
    async def test_subscribers_get_status_changes_with_masked_key(
        self, clock: FakeClock, sink: Sink
    ) -> None:
        """A status change is delivered to every subscriber, key masked."""
        pool = make_pool(clock, sink, count=1)
        first, second = pool.subscribe(), pool.subscribe()
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.NO_QUOTA))
        for queue in (first, second):
            event = await asyncio.wait_for(queue.get(), 1.0)
            assert (event.instance, event.model, event.old, event.new) == (
                "main",
                "model-a",
                Status.UNTESTED,
                Status.VERIFYING,
            )
            assert event.key == mask_key(key_of(1))
            assert key_of(1) not in str(event.as_dict())
            assert event.as_dict()["at"].endswith("Z")

    def test_unchanged_status_is_not_announced(self, clock: FakeClock, sink: Sink) -> None:
        """A second identical failure is written but produces no event."""
        pool = make_pool(clock, sink, count=1)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.NO_QUOTA))
        events = pool.subscribe()
        pool.report(record, fail(ErrorReason.NO_QUOTA))
        assert events.empty()
        assert len(sink.written) == 2

    def test_unsubscribed_queue_gets_nothing(self, clock: FakeClock, sink: Sink) -> None:
        """After unsubscribe the queue receives no more events."""
        pool = make_pool(clock, sink, count=1)
        events = pool.subscribe()
        pool.unsubscribe(events)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.INVALID_KEY))
        assert events.empty()


class TestSnapshotAndSync:
    def test_records_snapshot_per_instance(self, clock: FakeClock, sink: Sink) -> None:
        """records() lists every (key, model) of the pool, or of one instance."""
        pool = KeyPool(accessor_of(provider("main"), provider("other")), sink=sink, clock=clock)
        pool.load(records(2, "main") + records(1, "other"))
        assert len(pool.records()) == 6
        assert {r.instance for r in pool.records("other")} == {"other"}

    async def test_a_resync_adds_drops_and_keeps_state(self, clock: FakeClock, sink: Sink) -> None:
        """Merging the stored rows, then dropping what is missing, keeps in-memory state."""
        pool = make_pool(clock, sink, count=3)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.NO_QUOTA))
        await resync(pool, "main", [r for r in records(4) if r.key_id != 2])
        assert pool.get("main", "model-a", 2) is None
        assert pool.get("main", "model-a", 1).status is Status.VERIFYING  # type: ignore[union-attr]
        assert set(picks(pool, "model-a", 8)) == {3, 4}
        assert set(picks(pool, "model-b", 9)) == {1, 3, 4}

    async def test_dropping_an_instance_leaves_the_others_alone(
        self, clock: FakeClock, sink: Sink
    ) -> None:
        """Every key of one instance leaves; every other instance's keys stay."""
        pool = KeyPool(accessor_of(provider("main"), provider("other")), sink=sink, clock=clock)
        pool.load(records(2, "main") + records(2, "other"))
        await pool.drop_instance("main")
        assert pool.records("main") == []
        assert len(pool.records("other")) == 4

    async def test_a_large_drop_goes_in_slices(self, clock: FakeClock, sink: Sink) -> None:
        """Dropping more than a slice of keys lets the loop run between slices, and empties all."""
        count = 2 * SLICE + 1
        pool = KeyPool(accessor_of(provider("main"), provider("other")), sink=sink, clock=clock)
        pool.load(records(count, "main") + records(1, "other"))
        turns = 0

        async def count_turns() -> None:
            nonlocal turns
            while True:
                await asyncio.sleep(0)
                turns += 1

        missing = await pool.key_ids("main")  # (the copy takes turns of its own)
        counter = asyncio.create_task(count_turns())
        await pool.drop_missing("main", missing)
        counter.cancel()
        # Per model: three slices of ids, then the rotation shed in three; in one block, 1.
        assert turns >= 2 * 5
        assert pool.records("main") == []
        with pytest.raises(NoUsableKey, match="no key configured"):
            pool.pick("main", "model-a")  # its slots left the table
        assert len(pool.records("other")) == len(MODELS)


async def resync(pool: KeyPool, instance: str, stored: Sequence[KeyRecord]) -> None:
    """What a reconciliation does with `stored`: merge each row, drop what is not stored."""
    missing = await pool.key_ids(instance)
    for record in stored:
        if record.model in missing:
            missing[record.model].discard(record.key_id)
        pool.merge_stored(record)
    await pool.drop_missing(instance, missing)


def valid_pool(clock: FakeClock, sink: Sink, count: int) -> KeyPool:
    """A pool whose keys were all proven to work by a probe."""
    pool = make_pool(clock, sink, count=count)
    for record in pool.records():
        pool.report(record, CheckResult(reason=None, status_code=200), probe=True)
    sink.written.clear()
    return pool


class TestVerdicts:
    def test_a_traffic_verdict_is_verifying_until_a_probe_confirms_it(
        self, clock: FakeClock, sink: Sink
    ) -> None:
        """Traffic: verifying, out of the pool; the probe failing alike applies the long interval."""
        pool = valid_pool(clock, sink, count=3)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.NO_QUOTA))
        held = pool.get("main", "model-a", 1)
        assert held is not None
        assert (held.status, held.reason) == (Status.VERIFYING, ErrorReason.NO_QUOTA)
        assert 1 not in picks(pool, "model-a", 6)
        clock.advance(15)
        pool.report(held, fail(ErrorReason.NO_QUOTA), probe=True)
        confirmed = pool.get("main", "model-a", 1)
        assert confirmed is not None and confirmed.status is Status.NO_QUOTA
        assert confirmed.next_check_at == datetime.fromtimestamp(clock(), UTC) + timedelta(hours=6)

    def test_a_successful_probe_puts_a_verifying_key_back_at_once(
        self, clock: FakeClock, sink: Sink
    ) -> None:
        """A key-wide suspicion cleared by a probe: the key serves that model again."""
        pool = valid_pool(clock, sink, count=2)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        pool.report(record, fail(ErrorReason.INVALID_KEY))
        assert set(picks(pool, "model-a", 4)) == {2}
        held = pool.get("main", "model-a", 1)
        assert held is not None
        pool.report(held, CheckResult(reason=None, status_code=200), probe=True)
        assert set(picks(pool, "model-a", 4)) == {1, 2}

    def test_the_no_usable_key_message_says_why(self, clock: FakeClock, sink: Sink) -> None:
        """503's message counts the statuses and says when the next key may come back."""
        pool = valid_pool(clock, sink, count=2)
        for key_id, reason in ((1, ErrorReason.INVALID_KEY), (2, ErrorReason.NO_QUOTA)):
            record = pool.get("main", "model-a", key_id)
            assert record is not None
            pool.report(record, fail(reason))
        with pytest.raises(NoUsableKey) as raised:
            pool.pick("main", "model-a")
        assert str(raised.value) == (
            "no usable key for main/model-a: 1 invalid_key (verifying), "
            "1 no_quota (verifying) (next back in 15 s)"
        )


def walked_explanation(pool: KeyPool, model: str, now: float) -> str:
    """The no-usable-key explanation made the slow way: a walk over every record of the slot."""
    tally: Counter[str] = Counter()
    returns: list[float] = []
    for record in pool.records("main"):
        if record.model != model:
            continue
        if record.status is Status.VERIFYING:
            tally[f"{record.reason.value if record.reason else 'unknown'} (verifying)"] += 1
            if record.next_check_at is not None:
                returns.append(record.next_check_at.timestamp() - now)
        elif not record.status.is_usable or record.status is Status.RATE_LIMITED:
            tally[record.status.value] += 1
        cooling = record.cooldown_until.timestamp() if record.cooldown_until else 0.0
        if record.status.is_usable and cooling > now:
            returns.append(cooling - now)
    parts = [f"{n} {label}" for label, n in sorted(tally.items(), key=lambda i: (-i[1], i[0]))]
    text = f"no usable key for main/{model}" + (": " + ", ".join(parts) if parts else "")
    if returns:
        text += f" (next back in {max(math.ceil(min(returns)), 0)} s)"
    return text


@pytest.mark.parametrize("seed", range(20))
def test_the_explanation_from_tallies_matches_a_walk_over_the_keys(seed: int) -> None:
    """Across random outcomes, probes and time, the tallied explanation equals the walked one."""
    rng = random.Random(seed)
    clock, sink = FakeClock(), Sink()
    pool = make_pool(clock, sink, count=6)
    reasons = [
        ErrorReason.INVALID_KEY,
        ErrorReason.NO_QUOTA,
        ErrorReason.RATE_LIMITED,
        ErrorReason.NO_MODEL,
        ErrorReason.SERVER_ERROR,
    ]
    explained = 0
    for _ in range(300):
        record = pool.get("main", rng.choice(MODELS), rng.randint(1, 6))
        assert record is not None
        draw = rng.random()
        if draw < 0.5:
            pool.report(record, fail(rng.choice(reasons)))
        elif draw < 0.8:
            outcome = rng.choice([None, *reasons])
            result = fail(outcome) if outcome else CheckResult(reason=None, status_code=200)
            pool.report(record, result, probe=True)
        else:
            clock.advance(rng.choice([1, 5, 20, 90]))
        for model in MODELS:
            try:
                pool.pick("main", model)
            except NoUsableKey as exc:
                explained += 1
                assert walked_explanation(pool, model, clock()) in str(exc)
            except KeysCoolingDown:
                pass
            clock.advance(1.01)  # past the explanation's one-second reuse
    assert explained  # the draws do empty the slots now and then


class TestServerErrors:
    def test_three_server_errors_in_a_row_bench_a_key(self, clock: FakeClock, sink: Sink) -> None:
        """After 3 server errors a key is picked only when no other is; its status never changes."""
        pool = make_pool(clock, sink, count=2)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        for _ in range(3):
            pool.report(record, fail(ErrorReason.SERVER_ERROR))
        assert set(picks(pool, "model-a", 6)) == {2}
        assert pool.pick("main", "model-a", exclude=[2]).key_id == 1  # still usable alone
        clock.advance(31)
        assert set(picks(pool, "model-a", 6)) == {1, 2}
        assert sink.written == []

    def test_a_success_resets_the_streak(self, clock: FakeClock, sink: Sink) -> None:
        """Server errors must come in a row: a success in between starts the count again."""
        pool = make_pool(clock, sink, count=2)
        record = pool.get("main", "model-a", 1)
        assert record is not None
        for _ in range(2):
            pool.report(record, fail(ErrorReason.SERVER_ERROR))
        pool.served(record, 200)
        pool.report(record, fail(ErrorReason.SERVER_ERROR))
        assert set(picks(pool, "model-a", 6)) == {1, 2}


class TestIncidents:
    async def test_an_incident_stops_condemning_and_is_announced(
        self, clock: FakeClock, sink: Sink
    ) -> None:
        """Half the working keys failing alike: no further key leaves, touched ones recheck in 10 s."""
        pool = valid_pool(clock, sink, count=4)
        events = pool.subscribe()
        incident = None
        for key_id in (1, 2, 3):
            record = pool.get("main", "model-a", key_id)
            assert record is not None
            incident = pool.report(record, fail(ErrorReason.INVALID_KEY))
        assert incident is not None
        soon = datetime.fromtimestamp(clock(), UTC) + timedelta(seconds=10)
        for key_id in (1, 2, 3):
            held = pool.get("main", "model-b", key_id)
            assert held is not None
            assert (held.status, held.next_check_at) == (Status.VERIFYING, soon)
        fourth = pool.get("main", "model-a", 4)
        assert fourth is not None
        assert pool.report(fourth, fail(ErrorReason.INVALID_KEY)) is incident
        assert pool.get("main", "model-a", 4).status is Status.VALID  # type: ignore[union-attr]
        kinds = []
        while not events.empty():
            event = events.get_nowait()
            kinds.append(getattr(event, "kind", "status"))
        assert kinds.count("incident_started") == 1

    def test_probes_recheck_touched_keys_on_a_backoff_and_end_the_incident(
        self, clock: FakeClock, sink: Sink
    ) -> None:
        """A touched key failing its probe waits 20 s more; every touched key back ends it."""
        pool = valid_pool(clock, sink, count=3)
        for key_id in (1, 2, 3):
            record = pool.get("main", "model-a", key_id)
            assert record is not None
            pool.report(record, fail(ErrorReason.INVALID_KEY))
        assert len(pool.incidents()) == 1
        clock.advance(10)
        first = pool.get("main", "model-a", 1)
        assert first is not None
        pool.report(first, fail(ErrorReason.INVALID_KEY), probe=True)
        again = pool.get("main", "model-a", 1)
        assert again is not None and again.status is Status.VERIFYING
        assert again.next_check_at == datetime.fromtimestamp(clock(), UTC) + timedelta(seconds=20)
        for key_id in (1, 2, 3):
            for model in MODELS:
                record = pool.get("main", model, key_id)
                assert record is not None
                pool.report(record, CheckResult(reason=None, status_code=200), probe=True)
        assert pool.incidents() == []
        assert set(picks(pool, "model-a", 6)) == {1, 2, 3}


class TestCollector:
    """The pool's records are out of the cyclic collector's lists: a full collection skips them."""

    def test_records_loaded_and_replaced_are_not_tracked(
        self, clock: FakeClock, sink: Sink
    ) -> None:
        """Loaded records, and the ones a report puts in their place, are never walked."""
        pool = make_pool(clock, sink, count=3)
        assert not any(gc.is_tracked(r) for r in pool.records("main"))
        record = pool.pick("main", "model-a")
        pool.report(record, fail(ErrorReason.INVALID_KEY))
        held = pool.get("main", "model-a", record.key_id)
        assert held is not None and held is not record
        assert not gc.is_tracked(held)

    def test_a_record_refers_to_nothing_that_could_refer_back(self) -> None:
        """What makes untracking safe: every field is a number, string, time, enum or None."""
        now = datetime.now(UTC)
        record = KeyRecord(
            key_id=1,
            instance="main",
            key=key_of(1),
            model="model-a",
            status=Status.RATE_LIMITED,
            last_checked_at=now,
            next_check_at=now,
            failing_since=now,
            consecutive_failures=2,
            status_code=429,
            message="slow down",
            response_ms=12,
            cooldown_until=now,
            reason=ErrorReason.RATE_LIMITED,
        )
        for field in fields(KeyRecord):
            value = getattr(record, field.name)
            assert isinstance(value, int | float | str | datetime | Enum), field.name
