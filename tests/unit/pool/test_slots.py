"""The slot table's bulk load: the same slots as one `add` per record, made in a few passes."""

from __future__ import annotations

import gc
import random
from datetime import UTC, datetime, timedelta

from llmgateway.core.constants import Status
from llmgateway.core.memory import bulk_load
from llmgateway.core.models import KeyRecord
from llmgateway.pool.slots import Slot, SlotTable

NOW = 1_800_000_000.0
STATUSES = (
    Status.VALID,
    Status.UNTESTED,
    Status.INVALID_KEY,
    Status.RATE_LIMITED,
    Status.DISABLED,
    Status.SERVER_ERROR,
    Status.VERIFYING,
)


def mixed_records(count: int, seed: int) -> list[KeyRecord]:
    """Records of two instances and two models, in (key_id, model) order, statuses and
    cool-downs (ended, running, none) drawn at random."""
    rng = random.Random(seed)
    at = datetime.fromtimestamp(NOW, UTC)
    made: list[KeyRecord] = []
    for key_id in range(1, count + 1):
        instance = "one" if key_id % 3 else "two"
        for model in ("m-a", "m-b"):
            cooldown = rng.choice(
                [None, None, at - timedelta(seconds=5), at + timedelta(seconds=30)]
            )
            made.append(
                KeyRecord(
                    key_id=key_id,
                    instance=instance,
                    key=f"sk-slot-{key_id:05d}-abcdefgh",
                    model=model,
                    status=rng.choice(STATUSES),
                    cooldown_until=cooldown,
                )
            )
    return made


def state(slot: Slot) -> tuple[object, ...]:
    """Everything a slot holds, comparable: index, tallies, ring order, cool-down heap, flags."""
    entries = {key_id: slot.entries[key_id] for key_id in slot.entries}
    return (
        sorted(entries),
        [(k, e.record, e.cool_until, e.in_ring, e.bench_until) for k, e in sorted(entries.items())],
        dict(slot.counts),
        slot.usable,
        [e.record.key_id for e in slot.ring],
        sorted((until, key_id) for until, key_id, _ in slot.cooling),
        slot.ordered_ids(),
    )


def test_a_bulk_load_leaves_the_slots_one_add_per_record_would() -> None:
    """Statuses, cool-downs (ended, running), deleted keys and two instances: the same slots."""
    records = mixed_records(600, seed=3)
    one_by_one = SlotTable(lambda: NOW)
    bulk = SlotTable(lambda: NOW)
    for table in (one_by_one, bulk):
        table.deleted.update({4, 5, 300})
    for record in records:
        one_by_one.add(record)
    bulk.load(records)
    assert (
        sorted(bulk.slots)
        == sorted(one_by_one.slots)
        == [
            ("one", "m-a"),
            ("one", "m-b"),
            ("two", "m-a"),
            ("two", "m-b"),
        ]
    )
    for key, slot in one_by_one.slots.items():
        assert state(bulk.slots[key]) == state(slot), key
    assert 4 not in bulk.slots[("one", "m-a")].entries
    loaded = bulk.slots[("one", "m-a")]
    assert loaded.cooling and loaded.ring and loaded.usable < len(loaded.entries)


def test_a_bulk_load_joins_slots_that_already_hold_keys() -> None:
    """Loaded into a table that has entries, the new keys follow the old in rotation."""
    records = mixed_records(90, seed=8)
    first, rest = records[:40], records[40:]
    one_by_one = SlotTable(lambda: NOW)
    bulk = SlotTable(lambda: NOW)
    for record in first:
        one_by_one.add(record)
        bulk.add(record)
    for record in rest:
        one_by_one.add(record)
    bulk.load(rest)
    for key, slot in one_by_one.slots.items():
        assert state(bulk.slots[key]) == state(slot), key


def test_records_loaded_in_a_bulk_load_are_frozen_and_those_outside_untracked() -> None:
    """Inside `bulk_load` the freeze at its end keeps the collector off the records; outside,
    each record is untracked: either way a full collection never walks them."""
    outside = SlotTable(lambda: NOW)
    outside.load(mixed_records(20, seed=1))
    held = [e.record for slot in outside.slots.values() for e in slot.entries.values()]
    assert held and not any(gc.is_tracked(r) for r in held)

    inside = SlotTable(lambda: NOW)
    frozen_before = gc.get_freeze_count()
    with bulk_load():
        inside.load(mixed_records(20, seed=2))
    assert gc.get_freeze_count() >= frozen_before + 40
    kept = [e.record for slot in inside.slots.values() for e in slot.entries.values()]
    assert len(kept) == 40
    assert all(gc.is_tracked(r) for r in kept)  # tracked, but in the permanent generation
