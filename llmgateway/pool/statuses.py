"""Applying a new record to a pool entry: tallies, rotation, the store's queue, logs and events.

Whatever decided the record (a verdict of this process, or another
process's write seen through the change feed), `StatusWriter` is where it
lands; it derives nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import final

import structlog

from llmgateway.core.constants import Status
from llmgateway.core.logs import mask_key
from llmgateway.core.memory import untrack
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.pool.events import EventHub
from llmgateway.pool.slots import Clock, Entry, Slot, SlotTable, cooling_until

log = structlog.get_logger("llmgateway.pool")

RecordSink = Callable[[KeyRecord], None]
"""Receives every changed record (the write-behind queue's `put`)."""

HistorySink = Callable[[KeyRecord, KeyRecord, datetime], None]
"""Receives every status change this process decides: (old, new, when), for the key's history."""


@final
class StatusWriter:
    """Makes records current in the slot table and tells the store, the logs and subscribers."""

    __slots__ = ("_table", "_clock", "_sink", "_hub", "_served", "history")

    def __init__(
        self,
        table: SlotTable,
        clock: Clock,
        sink: RecordSink | None,
        hub: EventHub,
        served: Callable[[str], bool],
    ) -> None:
        self._table = table
        self._clock = clock
        self._sink = sink
        self._hub = hub
        self._served = served
        self.history: HistorySink | None = None
        """Told of every status change decided here (the store's history of the key)."""

    def use(self, served: Callable[[str], bool]) -> None:
        """Tell the instances served here by `served` from now on (a reload)."""
        self._served = served

    def set(self, slot: Slot, entry: Entry, new: KeyRecord, result: CheckResult) -> None:
        """Make `new` the entry's record: tallies, rotation, the store's queue, logs, events."""
        old = entry.record
        self.replace(slot, entry, new)
        if self._sink is not None:
            self._sink(new)
        if old.status is not new.status:
            log.info(
                "key_status_changed",
                instance=new.instance,
                model=new.model,
                key=mask_key(new.key),
                old=old.status.value,
                new=new.status.value,
                reason=new.reason.value if new.reason else None,
                status_code=result.status_code,
                message=result.message[:200],
            )
            # `at` is when the status was observed, as stored: the newest observation wins.
            at = new.last_checked_at or datetime.fromtimestamp(self._clock(), UTC)
            if self.history is not None:
                self.history(old, new, at)
            self._hub.status_changed(old, new, at)

    def force(self, record: KeyRecord) -> bool:
        """Make `record` current whatever the pool holds (a change made by hand, already stored).

        A (key, model) not in the pool is added when the record carries its
        key and the instance is served here. Returns True when applied.
        """
        found = self._held(record)
        if isinstance(found, bool):
            return found
        slot, entry = found
        self._take(slot, entry, record)
        return True

    def _held(self, record: KeyRecord) -> tuple[Slot, Entry] | bool:
        """The slot and entry holding `record`'s (key, model); else whether it was added.

        A (key, model) not in the pool is added when the record carries its
        key and the instance is served here (True); otherwise nothing (False).
        """
        if not self._served(record.instance):
            return False
        slot = self._table.slots.get((record.instance, record.model))
        entry = slot.entries.get(record.key_id) if slot else None
        if slot is not None and entry is not None:
            return slot, entry
        if not record.key:
            return False
        self._table.add(record)
        return True

    def _take(self, slot: Slot, entry: Entry, record: KeyRecord) -> None:
        """Make `record` (the pool's copy of the key kept) current, announcing a status change."""
        old = entry.record
        new = replace(record, key=old.key)
        self.replace(slot, entry, new)
        if old.status is not new.status:
            self._hub.status_changed(old, new, new.last_checked_at or datetime.now(UTC))

    def replace(self, slot: Slot, entry: Entry, new: KeyRecord) -> None:
        """Make `new` the entry's record in the slot (tallies, rotation); log an emptied slot."""
        old = entry.record
        before = slot.usable
        if old.status is not new.status or new.status is Status.VERIFYING:
            slot.count(old, -1)  # (a verifying key's suspicion and next check are tallied too)
            slot.count(new, 1)
        untrack(new)
        entry.record = new
        entry.cool_until = cooling_until(new, self._clock())
        slot.admit(entry)
        if before and not slot.usable:
            log.warning(
                "model_pool_empty",
                instance=new.instance,
                model=new.model,
                why=slot.explain(self._clock()),
            )
        elif slot.usable and not before and slot.entries:
            log.info("model_pool_recovered", instance=new.instance, model=new.model)

    def apply_remote(self, record: KeyRecord) -> bool:
        """Take a record another process wrote, when it is newer than the pool's; True if taken.

        See `KeyPool.apply_remote`.
        """
        found = self._held(record)
        if isinstance(found, bool):
            return found
        slot, entry = found
        old = entry.record
        if record.last_checked_at is None or (
            old.last_checked_at is not None and record.last_checked_at <= old.last_checked_at
        ):
            return False
        self._take(slot, entry, record)
        return True
