"""Reading the pool for operators: tallies per status model, and per-key rows a page at a time.

Both cost what is read, not the size of the pool: a tally comes from the
counts each slot keeps as statuses change (and its cool-down heap, small by
nature), a page bisects each slot's key ids, sorted once per change of the
slot's key set (not of a status). Rows are ordered by instance name, key id
and status model, the order of the store's primary key, so that the store
and the pool page alike.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from llmgateway.core.constants import Status
from llmgateway.core.models import KeyRecord
from llmgateway.pool.slots import Slot


@dataclass(frozen=True, slots=True)
class ModelTally:
    """The rows of one (instance, status model), counted."""

    instance: str
    model: str
    counts: Mapping[Status, int]
    """Rows per status (statuses without rows may be missing or 0)."""
    usable: int
    """Rows in the pool now: a usable status and not cooling down."""
    rows: int
    """Every row of the model (one per key)."""


type Position = tuple[str, int, str]
"""A row's place in the order: (instance, key id, model)."""


def tally(slot: Slot, now: float) -> ModelTally:
    """The counts of `slot` at `now` (epoch seconds)."""
    cooling = {
        entry.record.key_id
        for until, _, entry in slot.cooling
        if entry.cool_until == until and until > now and entry.record.status.is_usable
    }
    return ModelTally(
        slot.instance,
        slot.model,
        dict(slot.counts),
        usable=slot.usable - len(cooling),
        rows=len(slot.entries),
    )


def page(slots: Iterable[Slot], after: Position | None, limit: int) -> list[KeyRecord]:
    """Up to `limit` rows of `slots` that come after `after` in the order, in order."""
    by_instance: dict[str, list[Slot]] = {}
    for slot in slots:
        if after is None or slot.instance >= after[0]:
            by_instance.setdefault(slot.instance, []).append(slot)
    rows: list[KeyRecord] = []
    for instance in sorted(by_instance):
        start = after[1:] if after is not None and instance == after[0] else None
        rows.extend(_instance_page(by_instance[instance], start, limit - len(rows)))
        if len(rows) >= limit:
            break
    return rows


def _instance_page(slots: list[Slot], start: tuple[int, str] | None, limit: int) -> list[KeyRecord]:
    """The first `limit` rows of one instance's slots after (key id, model) `start`."""
    found: list[tuple[int, str, KeyRecord]] = []
    for slot in slots:
        ids = slot.ordered_ids()
        index = 0 if start is None else bisect_left(ids, start[0])
        for key_id in ids[index : index + limit + 1]:
            if start is not None and key_id == start[0] and slot.model <= start[1]:
                continue
            found.append((key_id, slot.model, slot.entries[key_id].record))
    found.sort(key=lambda row: (row[0], row[1]))
    return [record for _, _, record in found[:limit]]
