"""The selection state of the pool: per (instance, status model) a slot of keys, and the pick.

Picking is O(1) amortised with fair rotation: each slot keeps a ring of key
entries rotated on every pick; condemned or cooling entries are dropped from
the ring lazily when they reach its head (so are entries dropped from the
slot: their cool-down never ends), and cooling ones come back from a heap
ordered by the end of their cool-down. A benched entry (server errors in
a row) stays in the ring but is picked only when no other entry can be.
`SlotTable` holds every slot of the process and finds the entries a change
applies to; it never derives a status itself.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, final

from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.memory import freezing, untrack
from llmgateway.core.models import KeyRecord
from llmgateway.pool.sharded import SHARDS, IdMap

Clock = Callable[[], float]
"""Returns the current time as epoch seconds (time.time); injectable for tests."""


CHECKS_SLACK: Final = 4
"""A slot's heap of verifying checks is swept of its stale items past this many per check
(plus 1,024): stale items sit under an overdue check until it is done."""

DROPPED: Final = math.inf
"""The `cool_until` of an entry dropped from its slot: it never comes back."""


def cooling_until(record: KeyRecord, now: float) -> float:
    """When `record`'s cool-down ends (epoch seconds), or 0.0 when it is over or has none."""
    cool = record.cooldown_until.timestamp() if record.cooldown_until is not None else 0.0
    return cool if cool > now else 0.0


class AllKeysTried(LookupError):
    """Every usable key of the slot is in the caller's `exclude` list (it may reuse one)."""


class Entry:
    """One key in one slot: its current record and its place in the rotation.

    `bench_until` is set when the key is benched (see `llmgateway.pool.benching`):
    still usable, but picked only when no other key is.
    """

    __slots__ = ("record", "in_ring", "cool_until", "bench_until")

    def __init__(self, record: KeyRecord, cool_until: float, *, frozen: bool = False) -> None:
        """`record`'s entry, out of rotation yet; `frozen`: made in a `bulk_load` (no `untrack`)."""
        if not frozen:
            untrack(record)  # a full collection never walks the pool's records (see `untrack`)
        self.record = record
        self.in_ring = False
        self.cool_until = cool_until
        self.bench_until = 0.0


class Slot:
    """The keys of one (instance, status model): ring, cool-down heap, index, tallies."""

    __slots__ = (
        "instance",
        "model",
        "ring",
        "cooling",
        "entries",
        "usable",
        "counts",
        "suspected",
        "checks",
        "why",
        "_ordered",
    )

    def __init__(self, instance: str, model: str) -> None:
        self.instance = instance
        self.model = model
        self.ring: deque[Entry] = deque()
        self.cooling: list[tuple[float, int, Entry]] = []
        self.entries: IdMap[Entry] = IdMap()
        """The slot's entries by key id (in small tables: a slot of 100,000 keys grows without a stall)."""
        self.usable = 0
        """Entries whose status is usable (cooling ones included)."""
        self.counts: Counter[Status] = Counter()
        """Entries per status."""
        self.suspected: Counter[str] = Counter()
        """Verifying entries per suspected reason (`explain` says them without a walk)."""
        self.checks: list[tuple[float, int]] = []
        """(next check, key id) of verifying entries: a heap, shed of stale items at its top."""
        self.why: tuple[float, str] | None = None
        """The last "no usable key" explanation and until when it may be reused."""
        self._ordered: list[int] | None = None

    def put(self, entry: Entry) -> None:
        """Add a new entry (its key id not in the slot yet): index, tallies, rotation."""
        self.entries[entry.record.key_id] = entry
        self._ordered = None
        self.count(entry.record, 1)
        self.admit(entry)

    def extend(self, entries: Sequence[Entry]) -> None:
        """`put` each of `entries` (key ids new to the slot, each once), in bulk.

        The same index, tallies and rotation as one `put` per entry (the ring
        in their order), made in a few passes over them instead of three calls
        per entry: a start-up's 200,000 entries in a fraction of the time.
        """
        shards = self.entries.shards()
        for entry in entries:
            key_id = entry.record.key_id
            shards[key_id % SHARDS][key_id] = entry
        self._ordered = None
        self.why = None
        counts = Counter(entry.record.status for entry in entries)
        self.counts.update(counts)
        if counts[Status.VERIFYING]:
            for entry in entries:
                if entry.record.status is Status.VERIFYING:
                    self._note_verifying(entry.record, 1)
        usable = {status for status in counts if status.is_usable}
        self.usable += sum(counts[status] for status in usable)
        cooling: list[tuple[float, int, Entry]] = []
        for entry in entries:
            if entry.record.status not in usable:
                continue
            if entry.cool_until:
                cooling.append((entry.cool_until, entry.record.key_id, entry))
            elif not entry.in_ring:
                entry.in_ring = True
                self.ring.append(entry)
        if cooling:
            self.cooling += cooling
            heapq.heapify(self.cooling)

    def ordered_ids(self) -> list[int]:
        """The slot's key ids in ascending order (sorted again only after keys came or went)."""
        if self._ordered is None:
            # One sorted run per shard (ids grow, each shard keeps their order): a short merge.
            self._ordered = sorted(self.entries)
        return self._ordered

    def pick(self, now: float, exclude: Sequence[int]) -> KeyRecord | None:
        """The next usable key not in `exclude`, rotating fairly; None when none can be picked.

        A benched entry is returned only when no other usable entry is left.
        Raises AllKeysTried when every usable entry is excluded.
        """
        if self.cooling and self.cooling[0][0] <= now:
            self.thaw(now)
        ring = self.ring
        benched: Entry | None = None
        excluded = False
        for _ in range(len(ring)):
            entry = ring[0]
            if entry.cool_until or not entry.record.status.is_usable:
                ring.popleft()
                entry.in_ring = False
                continue
            ring.rotate(-1)
            if exclude and entry.record.key_id in exclude:
                excluded = True
                continue
            if entry.bench_until:
                if entry.bench_until > now:
                    benched = benched or entry
                    continue
                entry.bench_until = 0.0
            return entry.record
        if benched is not None:
            return benched.record
        if excluded:
            raise AllKeysTried(f"every usable key of {self.instance}/{self.model} was tried")
        return None

    def admit(self, entry: Entry) -> None:
        """Put a usable entry back into rotation (or its cool-down heap)."""
        if not entry.record.status.is_usable:
            return
        if entry.cool_until:
            heapq.heappush(self.cooling, (entry.cool_until, entry.record.key_id, entry))
        elif not entry.in_ring:
            entry.in_ring = True
            self.ring.append(entry)

    def count(self, record: KeyRecord, delta: int) -> None:
        """Add (1) or take away (-1) `record` from the slot's tallies."""
        status = record.status
        self.counts[status] += delta
        if not self.counts[status]:
            del self.counts[status]
        if status.is_usable:
            self.usable += delta
        elif status is Status.VERIFYING:
            self._note_verifying(record, delta)
        self.why = None

    def _note_verifying(self, record: KeyRecord, delta: int) -> None:
        """Count a verifying record in (1) or out (-1) of `suspected`; schedule its check."""
        label = record.reason.value if record.reason else "unknown"
        self.suspected[label] += delta
        if not self.suspected[label]:
            del self.suspected[label]
        if delta > 0 and record.next_check_at is not None:
            # Swept first: the entry may still hold its previous record (see `replace`).
            checks = self.checks
            if len(checks) > CHECKS_SLACK * (self.counts[Status.VERIFYING] + 1024):
                # Stale items stuck under a long-overdue check: keep the current ones only.
                checks[:] = [item for item in checks if self._checked_at(item)]
                heapq.heapify(checks)
            else:
                self._next_check()  # stale items at the top go as new ones come
            heapq.heappush(checks, (record.next_check_at.timestamp(), record.key_id))

    def drop(self, key_ids: Iterable[int]) -> int:
        """Take the entries of `key_ids` out of the slot; return how many were in it.

        The work is in the number dropped, not in the slot's size: a dropped
        entry is marked cooling for ever (`DROPPED`), so the ring and the
        cool-down heap pass it by and shed it lazily, as they shed condemned
        entries (see the module docstring).
        """
        dropped = 0
        for key_id in key_ids:
            entry = self.entries.pop(key_id, None)
            if entry is not None:
                self.count(entry.record, -1)
                entry.cool_until = DROPPED
                dropped += 1
        if dropped:
            self._ordered = None
        return dropped

    def shed(self, count: int) -> None:
        """Let go of up to `count` entries of the rotation, and as many of the cool-down heap.

        For a slot taken out of its table once empty: its dropped entries are
        freed a slice at a time rather than all at once with the slot.
        """
        ring, cooling = self.ring, self.cooling
        for _ in range(min(count, len(ring))):
            ring.pop()
        del cooling[max(len(cooling) - count, 0) :]

    def in_rotation(self) -> Iterator[Entry]:
        """The ring's entries still in the slot, in rotation order (not the dropped ones)."""
        entries = self.entries
        return (e for e in self.ring if entries.get(e.record.key_id) is e)

    def thaw(self, now: float) -> None:
        """Return the entries whose cool-down has ended to the ring."""
        cooling = self.cooling
        while cooling and cooling[0][0] <= now:
            until, _, entry = heapq.heappop(cooling)
            if entry.cool_until == until:
                entry.cool_until = 0.0
                self.admit(entry)

    def soonest(self, now: float) -> float | None:
        """Seconds until the first cooling entry that is still usable returns.

        Read from the top of the cool-down heap, whose stale items (the entry
        left, its cool-down changed, or it is no longer usable) are shed on
        the way: an entry made usable again is pushed anew (`admit`).
        """
        cooling = self.cooling
        while cooling:
            until, _, entry = cooling[0]
            if entry.cool_until == until and entry.record.status.is_usable:
                return max(until - now, 0.0)
            heapq.heappop(cooling)
        return None

    def _next_check(self) -> float | None:
        """The soonest next check of a verifying entry, stale heap items shed on the way."""
        checks = self.checks
        while checks:
            if self._checked_at(checks[0]):
                return checks[0][0]
            heapq.heappop(checks)
        return None

    def _checked_at(self, item: tuple[float, int]) -> bool:
        """Whether the key of `item` is in the slot, verifying, its next check at `item`'s time."""
        entry = self.entries.get(item[1])
        if entry is None:
            return False
        record = entry.record
        check = record.next_check_at
        return (
            record.status is Status.VERIFYING and check is not None and check.timestamp() == item[0]
        )

    def explain(self, now: float) -> str:
        """Why nothing can be picked: the statuses of the slot and the soonest return.

        Made from the slot's tallies and the tops of its heaps, never a walk
        over its entries: a slot of 100,000 unusable keys explains itself in
        microseconds, on the request that finds no key.
        """
        if self.why is not None and self.why[0] > now:
            return self.why[1]
        tally: Counter[str] = Counter()
        for status, count in self.counts.items():
            if status is Status.VERIFYING:
                for suspected, many in self.suspected.items():
                    tally[f"{suspected} (verifying)"] += many
            elif not status.is_usable or status is Status.RATE_LIMITED:
                tally[status.value] += count
        returns = []
        cooling, check = self.soonest(now), self._next_check()
        if cooling is not None:
            returns.append(cooling)
        if check is not None:
            returns.append(check - now)
        parts = [f"{n} {label}" for label, n in sorted(tally.items(), key=lambda i: (-i[1], i[0]))]
        text = f"no usable key for {self.instance}/{self.model}"
        if parts:
            text += ": " + ", ".join(parts)
        if returns:
            text += f" (next back in {max(math.ceil(min(returns)), 0)} s)"
        self.why = (now + 1.0, text)
        return text


@final
class SlotTable:
    """Every slot of the process, by (instance, status model), and look-ups over them."""

    __slots__ = ("slots", "_clock", "deleted")

    def __init__(self, clock: Clock) -> None:
        self.slots: dict[tuple[str, str], Slot] = {}
        self._clock = clock
        self.deleted: set[int] = set()
        """Ids of keys deleted by hand: never added again (ids are not reused), so a stale
        copy read from the store before the delete cannot bring one back."""

    def add(self, record: KeyRecord) -> None:
        """Add `record` as a new entry of its slot (created when missing), unless deleted."""
        if record.key_id in self.deleted:
            return
        slot = self._slot(record.instance, record.model)
        slot.put(Entry(record, cooling_until(record, self._clock())))

    def load(self, records: Iterable[KeyRecord]) -> None:
        """`add` each of `records` (keys not in the table yet, each (key, model) once), in bulk.

        A start-up's load: the entries are grouped by slot and each group
        joins its slot at once (`Slot.extend`). The time a cool-down is
        compared with is read once, not per record.
        """
        now = self._clock()
        frozen = freezing()  # the records are frozen at the load's end: untracking each is waste
        deleted = self.deleted
        groups: dict[tuple[str, str], list[Entry]] = {}
        for record in records:
            if record.key_id in deleted:
                continue
            key = (record.instance, record.model)
            group = groups.get(key)
            if group is None:
                group = groups[key] = []
            group.append(Entry(record, cooling_until(record, now), frozen=frozen))
        for (instance, model), group in groups.items():
            self._slot(instance, model).extend(group)

    def _slot(self, instance: str, model: str) -> Slot:
        """The slot of (instance, model), made empty when it has none yet."""
        slot = self.slots.get((instance, model))
        if slot is None:
            slot = self.slots[(instance, model)] = Slot(instance, model)
        return slot

    def remove(self, instance: str, key_ids: Iterable[int]) -> int:
        """Drop the keys `key_ids` of `instance` for every model; return the entries dropped."""
        gone = set(key_ids)
        dropped = 0
        for (name, model), slot in list(self.slots.items()):
            if name != instance:
                continue
            dropped += slot.drop(gone)
            if not slot.entries:
                del self.slots[(name, model)]
        return dropped

    def entry(self, record: KeyRecord) -> Entry | None:
        """The entry of `record`'s (key, model), or None."""
        slot = self.slots.get((record.instance, record.model))
        return slot.entries.get(record.key_id) if slot else None

    def of_instance(self, instance: str) -> Iterator[Slot]:
        """The slots of `instance`."""
        for (name, _), slot in self.slots.items():
            if name == instance:
                yield slot

    def scope(self, record: KeyRecord, reason: ErrorReason) -> list[tuple[Slot, Entry]]:
        """The (slot, entry) pairs a failure with `reason` of `record`'s key applies to."""
        if reason.is_key_wide:
            found: list[tuple[Slot, Entry]] = []
            for slot in self.of_instance(record.instance):
                entry = slot.entries.get(record.key_id)
                if entry is not None:
                    found.append((slot, entry))
            return found
        own = self.slots.get((record.instance, record.model))
        mine = own.entries.get(record.key_id) if own else None
        return [] if own is None or mine is None else [(own, mine)]

    def scope_valid(self, record: KeyRecord, reason: ErrorReason) -> int:
        """Valid keys in the scope of a failure with `reason` (the key judged included)."""
        if reason.is_key_wide:
            slots = self.of_instance(record.instance)
            return max((s.counts[Status.VALID] for s in slots), default=0)
        slot = self.slots.get((record.instance, record.model))
        return slot.counts[Status.VALID] if slot is not None else 0
