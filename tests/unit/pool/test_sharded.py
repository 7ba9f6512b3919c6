"""The key-id collections spread over small tables answer as one set or dict would."""

from __future__ import annotations

import random

import pytest

from llmgateway.pool.sharded import SHARDS, IdMap, IdSet


def test_an_id_set_holds_what_was_added_and_not_discarded() -> None:
    """Spread over small sets, it answers as one set would."""
    ids = IdSet()
    ids.update(range(1000, 1300))
    ids.update([5, 5, 1000])
    for key_id in (5, 1001, 77):
        ids.discard(key_id)
    assert len(ids) == 299
    assert sorted(ids) == [1000, *range(1002, 1300)]
    assert 1000 in ids and 1001 not in ids and "1000" not in ids


def test_an_id_map_answers_as_a_dict_through_random_changes() -> None:
    """Sets, pops and look-ups in random order leave it equal to a dict given the same."""
    rng = random.Random(7)
    mine: IdMap[str] = IdMap()
    expected: dict[int, str] = {}
    for step in range(5000):
        key_id = rng.randrange(SHARDS * 20)
        if rng.random() < 0.6:
            mine[key_id] = expected[key_id] = f"v{step}"
        else:
            assert mine.pop(key_id, None) == expected.pop(key_id, None)
    assert len(mine) == len(expected)
    assert sorted(mine) == sorted(expected)
    assert sorted(mine.values()) == sorted(expected.values())
    for key_id in range(SHARDS * 20):
        assert (key_id in mine) == (key_id in expected)
        assert mine.get(key_id) == expected.get(key_id)
        assert mine.get(key_id, "none") == expected.get(key_id, "none")
    some = next(iter(expected))
    assert mine[some] == expected[some]


def test_an_empty_id_map_is_false_and_raises_for_a_missing_id() -> None:
    """Truth and `[]` behave as a dict's."""
    mine: IdMap[int] = IdMap()
    assert not mine and len(mine) == 0 and "3" not in mine
    mine[3] = 30
    assert mine and mine.pop(3, None) == 30 and not mine
    with pytest.raises(KeyError):
        mine[3]
