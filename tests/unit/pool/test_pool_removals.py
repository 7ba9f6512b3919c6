"""Keys another process deleted leave the live pool for every model (`KeyPool.remove_keys`)."""

from __future__ import annotations

import pytest

from llmgateway.core.errors import NoUsableKey
from tests.unit.pool.test_pool import MODELS, FakeClock, Sink, make_pool, picks


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
