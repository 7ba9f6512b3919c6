"""The live key pool: per (instance, model) the keys usable now, shared by keeper and gateway.

Picking is O(1) amortised with fair rotation: each slot keeps a ring of key
entries rotated on every pick; condemned or cooling entries are dropped from
the ring lazily when they reach its head, and cooling ones come back from a
heap ordered by the end of their cool-down. Every change is applied in memory
at once, handed to a write sink (the store's write-behind queue) and announced
to subscribers; nothing here touches the database.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import final

from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.constants import ALL_MODELS_MARKER, ErrorReason, Status
from llmgateway.core.errors import KeysCoolingDown, NoUsableKey
from llmgateway.core.logs import mask_key
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.services.policy import next_record

Clock = Callable[[], float]
"""Returns the current time as epoch seconds (time.time); injectable for tests."""

RecordSink = Callable[[KeyRecord], None]
"""Receives every changed record (the write-behind queue's `put`)."""

EVENT_QUEUE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A key's status changed for a model (what `/-/events` sends)."""

    instance: str
    model: str
    key: str
    old: Status
    new: Status
    reason: str
    at: datetime

    def as_dict(self) -> dict[str, str]:
        """The JSON object of DESIGN.md's `/-/events` stream (key already masked)."""
        return {
            "instance": self.instance,
            "model": self.model,
            "key": self.key,
            "old": self.old.value,
            "new": self.new.value,
            "reason": self.reason,
            "at": self.at.isoformat().replace("+00:00", "Z"),
        }


class _Entry:
    """One key in one slot: its current record and its place in the rotation."""

    __slots__ = ("record", "in_ring", "cool_until")

    def __init__(self, record: KeyRecord, cool_until: float) -> None:
        self.record = record
        self.in_ring = False
        self.cool_until = cool_until


class _Slot:
    """The keys of one (instance, status model): ring, cool-down heap, index by key id."""

    __slots__ = ("ring", "cooling", "entries")

    def __init__(self) -> None:
        self.ring: deque[_Entry] = deque()
        self.cooling: list[tuple[float, int, _Entry]] = []
        self.entries: dict[int, _Entry] = {}

    def admit(self, entry: _Entry) -> None:
        """Put a usable entry back into rotation (or its cool-down heap)."""
        if not entry.record.status.is_usable:
            return
        if entry.cool_until:
            heapq.heappush(self.cooling, (entry.cool_until, entry.record.key_id, entry))
        elif not entry.in_ring:
            entry.in_ring = True
            self.ring.append(entry)

    def thaw(self, now: float) -> None:
        """Return the entries whose cool-down has ended to the ring."""
        cooling = self.cooling
        while cooling and cooling[0][0] <= now:
            until, _, entry = heapq.heappop(cooling)
            if entry.cool_until == until:
                entry.cool_until = 0.0
                self.admit(entry)

    def soonest(self, now: float) -> float | None:
        """Seconds until the first cooling entry that is still usable returns."""
        for until, _, entry in sorted(self.cooling):
            if entry.cool_until == until and entry.record.status.is_usable:
                return max(until - now, 0.0)
        return None


@dataclass(frozen=True, slots=True)
class _Instance:
    """What the pool needs to know of a provider instance."""

    config: ProviderConfig
    models: frozenset[str]

    def slot_model(self, model: str) -> str:
        """The status model a request for `model` is served from."""
        if self.config.shared_key_status:
            return ALL_MODELS_MARKER
        return model if model in self.models else self.config.default_model


@final
class KeyPool:
    """Live, in-memory key pool of every enabled provider instance.

    The keeper and the gateway both `pick` and `report` here; the pool decides
    what a result means for the key (scope, cool-down, policy) so that callers
    never do.
    """

    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        sink: RecordSink | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._clock = clock
        self._sink = sink
        self._instances: dict[str, _Instance] = {
            p.name: _Instance(p, frozenset(p.models)) for p in providers
        }
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._subscribers: list[asyncio.Queue[StatusEvent]] = []
        self._listeners: list[Callable[[StatusEvent], None]] = []

    # -- building ---------------------------------------------------------

    def load(self, records: Iterable[KeyRecord]) -> None:
        """Replace the pool's content with `records` (start-up, from the store)."""
        self._slots.clear()
        for record in records:
            self._add(record)

    def sync_instance(self, instance: str, records: Iterable[KeyRecord]) -> None:
        """Reconcile one instance with the store after a key sync.

        Entries already in the pool keep their (newer) in-memory state; new
        (key, model) rows are added; rows no longer stored are dropped.
        """
        fresh: dict[tuple[str, int], KeyRecord] = {(r.model, r.key_id): r for r in records}
        for (name, model), slot in list(self._slots.items()):
            if name != instance:
                continue
            for key_id in [k for k in slot.entries if (model, k) not in fresh]:
                slot.entries.pop(key_id)
            slot.ring = deque(e for e in slot.ring if e.record.key_id in slot.entries)
            slot.cooling = [c for c in slot.cooling if c[1] in slot.entries]
            heapq.heapify(slot.cooling)
            if not slot.entries:
                del self._slots[(name, model)]
        for (model, key_id), record in fresh.items():
            existing = self._slots.get((instance, model))
            if existing is None or key_id not in existing.entries:
                self._add(record)

    def _add(self, record: KeyRecord) -> None:
        slot = self._slots.setdefault((record.instance, record.model), _Slot())
        cool = record.cooldown_until.timestamp() if record.cooldown_until else 0.0
        entry = _Entry(record, cool if cool > self._clock() else 0.0)
        slot.entries[record.key_id] = entry
        slot.admit(entry)

    # -- the request path -------------------------------------------------

    def slot_model(self, instance: str, model: str) -> str:
        """The status model under which a request for `model` picks its key."""
        return self._instances[instance].slot_model(model)

    def pick(self, instance: str, model: str, exclude: Sequence[int] = ()) -> KeyRecord:
        """A usable key for `model` of `instance`, rotating fairly; never one in `exclude`.

        `model` is a status model (see `slot_model`). Raises KeysCoolingDown
        when every usable key not excluded is cooling down, NoUsableKey when
        there is none at all.
        """
        slot = self._slots.get((instance, model))
        if slot is None:
            raise NoUsableKey(f"no key configured for {instance}/{model}")
        now = self._clock()
        if slot.cooling and slot.cooling[0][0] <= now:
            slot.thaw(now)
        ring = slot.ring
        for _ in range(len(ring)):
            entry = ring[0]
            if entry.cool_until or not entry.record.status.is_usable:
                ring.popleft()
                entry.in_ring = False
                continue
            ring.rotate(-1)
            if exclude and entry.record.key_id in exclude:
                continue
            return entry.record
        soonest = slot.soonest(now)
        if soonest is not None:
            raise KeysCoolingDown(
                f"every key of {instance}/{model} is cooling down", retry_after=soonest
            )
        raise NoUsableKey(f"no usable key left for {instance}/{model}")

    def report(self, record: KeyRecord, result: CheckResult, *, probe: bool = False) -> None:
        """Apply the outcome of a call made with `record`'s key for its model.

        Fatal reasons take the key out for their scope (every model of the
        instance for `invalid_key`/`no_access`); a rate limit cools the key
        down; a success brings it back. From the gateway (`probe=False`) a
        server-side or client-side failure changes nothing, and a success of
        an already valid key writes nothing. Probes always record.
        """
        reason = result.reason
        if not probe:
            if reason is None:
                current = self._entry(record)
                if current is None or current.record.status is Status.VALID:
                    return
            elif not (reason.is_fatal or reason is ErrorReason.RATE_LIMITED):
                return
        if reason is not None and reason.is_key_wide:
            for slot in self._instance_slots(record.instance):
                entry = slot.entries.get(record.key_id)
                if entry is not None:
                    self._apply(slot, entry, result)
            return
        target = self._slots.get((record.instance, record.model))
        found = target.entries.get(record.key_id) if target else None
        if target is not None and found is not None:
            self._apply(target, found, result)

    def _apply(self, slot: _Slot, entry: _Entry, result: CheckResult) -> None:
        old = entry.record
        instance = self._instances.get(old.instance)
        if instance is None:
            return
        config = instance.config
        now_ts = self._clock()
        now = datetime.fromtimestamp(now_ts, UTC)
        new = next_record(
            old, result, now, config.health_policy, config.gateway_policy.rate_limit_cooldown
        )
        entry.record = new
        entry.cool_until = new.cooldown_until.timestamp() if new.cooldown_until else 0.0
        slot.admit(entry)
        if self._sink is not None:
            self._sink(new)
        if old.status is not new.status:
            self._announce(old, new, result, now)

    # -- other processes ---------------------------------------------------

    def apply_remote(self, record: KeyRecord) -> bool:
        """Take a record another process wrote, when it is newer than the pool's; True if taken.

        Newer means a later `last_checked_at` (every recorded outcome sets
        it), so a process's own records coming back, or an older state read
        from the store while a newer one waits in the write queue, change
        nothing. The record is applied as is (status, schedule, cool-down)
        without deriving anything and without going to the sink: its writer
        already stored it. A status change is announced to subscribers.
        `record.key` may be blank (notifications carry no key): the pool's
        copy is kept. A (key, model) not in the pool is added when the record
        carries its key and the instance is served here, else ignored.
        """
        if record.instance not in self._instances:
            return False
        slot = self._slots.get((record.instance, record.model))
        entry = slot.entries.get(record.key_id) if slot else None
        if slot is None or entry is None:
            if not record.key:
                return False
            self._add(record)
            return True
        old = entry.record
        if record.last_checked_at is None or (
            old.last_checked_at is not None and record.last_checked_at <= old.last_checked_at
        ):
            return False
        new = replace(record, key=old.key)
        entry.record = new
        cool = new.cooldown_until.timestamp() if new.cooldown_until else 0.0
        entry.cool_until = cool if cool > self._clock() else 0.0
        slot.admit(entry)
        if old.status is not new.status:
            reason = new.message or new.status.value
            self._emit(old, new, reason, new.last_checked_at or datetime.now(UTC))
        return True

    def remove_keys(self, instance: str, key_ids: Iterable[int]) -> int:
        """Drop the keys `key_ids` of `instance` for every model (deleted from the store).

        Returns the number of (key, model) entries dropped; unknown ids are ignored.
        """
        gone = set(key_ids)
        dropped = 0
        for (name, model), slot in list(self._slots.items()):
            if name != instance:
                continue
            hits = [key_id for key_id in gone if slot.entries.pop(key_id, None) is not None]
            if not hits:
                continue
            dropped += len(hits)
            slot.ring = deque(e for e in slot.ring if e.record.key_id in slot.entries)
            slot.cooling = [c for c in slot.cooling if c[1] in slot.entries]
            heapq.heapify(slot.cooling)
            if not slot.entries:
                del self._slots[(name, model)]
        return dropped

    def _announce(self, old: KeyRecord, new: KeyRecord, result: CheckResult, at: datetime) -> None:
        self._emit(old, new, result.message or new.status.value, at)

    def _emit(self, old: KeyRecord, new: KeyRecord, reason: str, at: datetime) -> None:
        if not self._subscribers and not self._listeners:
            return
        event = StatusEvent(
            instance=new.instance,
            model=new.model,
            key=mask_key(new.key),
            old=old.status,
            new=new.status,
            reason=reason[:200],
            at=at,
        )
        for listener in self._listeners:
            listener(event)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    def _entry(self, record: KeyRecord) -> _Entry | None:
        slot = self._slots.get((record.instance, record.model))
        return slot.entries.get(record.key_id) if slot else None

    def _instance_slots(self, instance: str) -> Iterator[_Slot]:
        for (name, _), slot in self._slots.items():
            if name == instance:
                yield slot

    # -- observers --------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[StatusEvent]:
        """A queue receiving every status change from now on (oldest dropped when full)."""
        queue: asyncio.Queue[StatusEvent] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[StatusEvent]) -> None:
        """Stop delivering events to `queue`."""
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    def add_listener(self, listener: Callable[[StatusEvent], None]) -> None:
        """Call `listener` synchronously on every status change (metrics)."""
        self._listeners.append(listener)

    def records(self, instance: str | None = None) -> list[KeyRecord]:
        """A snapshot of every current record (one instance or all)."""
        return [
            entry.record
            for (name, _), slot in self._slots.items()
            if instance is None or name == instance
            for entry in slot.entries.values()
        ]

    def get(self, instance: str, model: str, key_id: int) -> KeyRecord | None:
        """The current record of one (key, model), or None."""
        slot = self._slots.get((instance, model))
        entry = slot.entries.get(key_id) if slot else None
        return entry.record if entry else None

    def usable_count(self, instance: str, model: str) -> int:
        """How many keys of the slot are usable and not cooling down now."""
        slot = self._slots.get((instance, model))
        if slot is None:
            return 0
        now = self._clock()
        return sum(
            1
            for e in slot.entries.values()
            if e.record.status.is_usable and (not e.cool_until or e.cool_until <= now)
        )
