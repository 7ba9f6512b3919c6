"""Memory helpers: lists released a slice at a time; the collector held off during a bulk load."""

from __future__ import annotations

import gc
import weakref

from llmgateway.core.memory import RELEASE_SLICE, bulk_load, release, untrack


def test_release_empties_the_list_and_frees_its_items() -> None:
    """Every item is let go, however many slices it takes; the list object stays usable."""

    class Item:
        freed = 0

        def __del__(self) -> None:
            Item.freed += 1

    items = [Item() for _ in range(2 * RELEASE_SLICE + 5)]
    release(items)
    assert items == []
    assert Item.freed == 2 * RELEASE_SLICE + 5


def test_bulk_load_turns_the_collector_back_on_after_the_last_body() -> None:
    """Nested bodies: the collector stays off until the outer one ends."""
    assert gc.isenabled()
    with bulk_load():
        with bulk_load():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.unfreeze()


def test_untrack_takes_a_value_out_of_the_collector_and_it_is_still_freed() -> None:
    """An untracked value is skipped by collections and freed by reference counting."""

    class Value:
        __slots__ = ("number", "__weakref__")

        def __init__(self) -> None:
            self.number = 1

    value = Value()
    assert gc.is_tracked(value)
    untrack(value)
    assert not gc.is_tracked(value)
    gone = weakref.ref(value)
    del value
    assert gone() is None
