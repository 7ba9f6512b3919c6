"""Route inspection: which key a slot would serve next, and why each other key is skipped.

A read-only walk over one slot's state (its rotation ring, its cool-down
heap, its entries) that mirrors what the pick does without changing
anything: the first entry of the ring that is usable, not cooling and not
benched is next; when there is none, a key whose cool-down has just ended
(the pick thaws it first), else a benched key (the pick falls back to one).
Every other key that cannot be picked now is listed with the reason: its
status (`disabled`, a fatal reason, `verifying` with the suspected reason),
cooling until a time, benched until a time. Keys merely waiting for their
turn are not skipped. It costs one pass over the slot: an admin request,
never the request path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from llmgateway.core.constants import Status
from llmgateway.core.masking import mask_key
from llmgateway.core.models import KeyRecord

MAX_SKIPPED: Final = 100
"""The most skipped keys one inspection lists (the counts cover them all)."""


class EntryView(Protocol):
    """What the inspection reads of a pool entry."""

    @property
    def record(self) -> KeyRecord:
        """The entry's current record."""

    @property
    def cool_until(self) -> float:
        """Epoch seconds its cool-down ends (0: not cooling)."""

    @property
    def bench_until(self) -> float:
        """Epoch seconds its bench ends (0: not benched)."""


class EntriesView(Protocol):
    """What the inspection reads of a slot's entries by key id."""

    def __iter__(self) -> Iterator[int]:
        """Every key id, in no particular order."""

    def __getitem__(self, key_id: int) -> EntryView:
        """The entry of `key_id`."""

    def values(self) -> Iterable[EntryView]:
        """Every entry, in no particular order."""


class SlotView(Protocol):
    """What the inspection reads of a pool slot."""

    def in_rotation(self) -> Iterable[EntryView]:
        """The rotation, next first (entries still in the slot only)."""

    @property
    def entries(self) -> EntriesView:
        """Every entry of the slot by key id."""


@dataclass(frozen=True, slots=True)
class SkippedKey:
    """A key that would not be picked now, and why."""

    key_id: int
    key: str
    """Masked."""
    why: str


@dataclass(frozen=True, slots=True)
class RouteView:
    """The outcome of inspecting one (instance, model)."""

    instance: str
    model: str
    """The model asked about."""
    status_model: str
    """The slot it is served from (`__ALL_MODELS__` with shared statuses, the default model
    for an unknown one)."""
    usable: int
    next: KeyRecord | None
    skipped: tuple[SkippedKey, ...]
    counts: Mapping[str, int]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def skip_reason(entry: EntryView, now: float) -> str | None:
    """Why `entry` cannot be picked at `now` (None: it can be, in its turn)."""
    record = entry.record
    status = record.status
    if status is Status.VERIFYING:
        suspected = record.reason.value if record.reason is not None else "unknown"
        text = f"verifying ({suspected})"
        if record.next_check_at is not None:
            text += f", probe due {record.next_check_at.isoformat().replace('+00:00', 'Z')}"
        return text
    if not status.is_usable:
        return f"status {status.value}"
    if entry.cool_until and entry.cool_until > now:
        return f"cooling down until {_iso(entry.cool_until)}"
    if entry.bench_until and entry.bench_until > now:
        return f"benched after server errors until {_iso(entry.bench_until)}"
    return None


def inspect_slot(
    instance: str,
    model: str,
    status_model: str,
    slot: SlotView | None,
    now: float,
    limit: int = MAX_SKIPPED,
) -> RouteView:
    """What a pick in `slot` would return at `now`, and why the other keys are skipped.

    `slot` None (no key at all for the model) gives an empty view. The
    skipped keys come in rotation order first, then the keys out of the
    rotation by id; at most `limit` of them.
    """
    if slot is None:
        return RouteView(instance, model, status_model, 0, None, (), {})
    counts: Counter[str] = Counter()
    usable = 0
    for entry in slot.entries.values():
        status = entry.record.status
        counts[status.value] += 1
        usable += status.is_usable
    chosen = _next_entry(slot, now)
    skipped: list[SkippedKey] = []
    seen: set[int] = set()
    for entry in _in_order(slot):
        key_id = entry.record.key_id
        if key_id in seen or entry is chosen:
            continue
        seen.add(key_id)
        why = skip_reason(entry, now)
        if why is not None:
            skipped.append(SkippedKey(key_id, mask_key(entry.record.key), why))
            if len(skipped) >= limit:
                break
    return RouteView(
        instance,
        model,
        status_model,
        usable,
        chosen.record if chosen is not None else None,
        tuple(skipped),
        dict(counts),
    )


def _next_entry(slot: SlotView, now: float) -> EntryView | None:
    """The entry a pick would return at `now` (no exclusions), or None."""
    benched: EntryView | None = None
    for entry in slot.in_rotation():
        record = entry.record
        if not record.status.is_usable or (entry.cool_until and entry.cool_until > now):
            continue
        if entry.bench_until and entry.bench_until > now:
            benched = benched or entry
            continue
        return entry
    # Cool-downs that have ended: the pick thaws them back into the ring first.
    thawed = [
        e
        for e in slot.entries.values()
        if e.record.status.is_usable and e.cool_until and e.cool_until <= now
    ]
    if thawed:
        return min(thawed, key=lambda e: (e.cool_until, e.record.key_id))
    return benched


def _in_order(slot: SlotView) -> Iterable[EntryView]:
    """The ring's entries in rotation order, then every other entry by key id."""
    yield from slot.in_rotation()
    for key_id in sorted(slot.entries):
        yield slot.entries[key_id]
