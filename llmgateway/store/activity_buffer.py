"""Usage increments and status changes waiting in the write queue, taken and restored in batches.

The pool counts each key's requests and failures in memory and hands the
counts over as `UsageDelta`s; every status change it announces becomes a
`HistoryEntry`. Both wait here until the write queue's next flush: usage
coalesces per key, history keeps its order (bounded: when the store stays
unreachable, the oldest changes go first).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, final

from llmgateway.store.key_admin import HistoryEntry, UsageDelta

HISTORY_PENDING_MAX: Final = 100_000
"""Status changes kept waiting at most; beyond, the oldest are dropped."""


def _merged(a: UsageDelta, b: UsageDelta) -> UsageDelta:
    """One delta adding `a` and `b` (the later last use of the two)."""
    last = a.last_used
    if b.last_used is not None and (last is None or b.last_used > last):
        last = b.last_used
    return UsageDelta(a.key_id, a.requests + b.requests, a.failures + b.failures, last)


def add_up(into: dict[int, UsageDelta], deltas: Iterable[UsageDelta]) -> None:
    """Add each of `deltas` to what `into` holds for its key."""
    for delta in deltas:
        old = into.get(delta.key_id)
        into[delta.key_id] = delta if old is None else _merged(old, delta)


@dataclass(frozen=True, slots=True)
class ActivityBatch:
    """What one flush writes: usage deltas (one per key) and history entries (in order)."""

    usage: list[UsageDelta]
    history: list[HistoryEntry]

    def __bool__(self) -> bool:
        return bool(self.usage or self.history)


@final
class ActivityBuffer:
    """Usage deltas and history entries not yet written."""

    __slots__ = ("_usage", "_history", "dropped")

    def __init__(self) -> None:
        self._usage: dict[int, UsageDelta] = {}
        self._history: deque[HistoryEntry] = deque(maxlen=HISTORY_PENDING_MAX)
        self.dropped = 0
        """History entries dropped because too many waited."""

    def __len__(self) -> int:
        return len(self._usage) + len(self._history)

    def add_usage(self, deltas: Iterable[UsageDelta]) -> None:
        """Add each of `deltas` to what waits for its key."""
        add_up(self._usage, deltas)

    def add_history(self, entry: HistoryEntry) -> None:
        """Queue one status change (the oldest waiting one goes when the buffer is full)."""
        if len(self._history) == HISTORY_PENDING_MAX:
            self.dropped += 1
        self._history.append(entry)

    def take(self) -> ActivityBatch:
        """Everything waiting, leaving the buffer empty."""
        batch = ActivityBatch(list(self._usage.values()), list(self._history))
        self._usage = {}
        self._history.clear()
        return batch

    def restore(self, batch: ActivityBatch) -> None:
        """Put back a batch that could not be written, before what arrived since."""
        newer, self._usage = self._usage, {}
        self.add_usage(batch.usage)
        self.add_usage(newer.values())
        later = list(self._history)
        self._history.clear()
        for entry in (*batch.history, *later):
            self.add_history(entry)
