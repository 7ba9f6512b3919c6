"""Keys another process deleted leave the live pool for every model (`KeyPool.remove_keys`)."""

from __future__ import annotations

from collections import Counter

import pytest

from llmgateway.core.constants import ErrorReason
from llmgateway.core.errors import NoUsableKey
from tests.unit.pool.test_pool import MODELS, FakeClock, Sink, fail, make_pool, picks


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink() -> Sink:
    return Sink()


def test_removed_keys_are_never_picked_again(clock: FakeClock, sink: Sink) -> None:
    """Dropped ids leave every model's rotation; the other keys keep rotating."""
    pool = make_pool(clock, sink, count=3)
    assert pool.remove_keys("main", [2, 99]) == len(MODELS)
    for model in MODELS:
        assert set(picks(pool, model, 6)) == {1, 3}
        assert pool.get("main", model, 2) is None
    assert sink.written == []  # the store already dropped them: nothing to write


def test_removing_every_key_empties_the_slot(clock: FakeClock, sink: Sink) -> None:
    """A slot without keys is gone: picking from it says no key is configured."""
    pool = make_pool(clock, sink, count=2)
    pool.remove_keys("main", [1, 2])
    with pytest.raises(NoUsableKey):
        pool.pick("main", MODELS[0])
    assert pool.records("main") == []


def test_other_instances_and_unknown_ids_are_left_alone(clock: FakeClock, sink: Sink) -> None:
    """Ids of another instance, or ids the pool never had, change nothing."""
    pool = make_pool(clock, sink, count=2)
    assert pool.remove_keys("elsewhere", [1, 2]) == 0
    assert pool.remove_keys("main", [7]) == 0
    assert len(pool.records("main")) == 2 * len(MODELS)


def test_a_removed_key_cooling_down_never_returns(clock: FakeClock, sink: Sink) -> None:
    """A key removed while it cools down stays out once its cool-down ends."""
    pool = make_pool(clock, sink, count=2)
    cooling = pool.get("main", MODELS[0], 1)
    assert cooling is not None
    pool.report(cooling, fail(ErrorReason.RATE_LIMITED, retry_after=30.0))
    pool.remove_keys("main", [1])
    clock.advance(31.0)
    assert set(picks(pool, MODELS[0], 6)) == {2}
    assert [k.key_id for k in pool.route("main", MODELS[0]).skipped] == []


def test_a_key_removed_and_added_again_rotates_once(clock: FakeClock, sink: Sink) -> None:
    """The dropped entry left in the ring is shed: the key comes back once per round, not twice."""
    pool = make_pool(clock, sink, count=3)
    kept = pool.records("main")
    pool.remove_keys("main", [2])
    assert pool.add_records(r for r in kept if r.key_id == 2) == len(MODELS)
    chosen = picks(pool, MODELS[0], 30)
    assert Counter(chosen) == {1: 10, 2: 10, 3: 10}
    route = pool.route("main", MODELS[0])
    assert route.usable == 3 and route.next is not None
