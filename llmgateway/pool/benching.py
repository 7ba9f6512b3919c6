"""Benching: a key answering server errors in a row on traffic is picked last for a while.

Server errors never condemn a key (the upstream, not the key, is failing).
After `SERVER_ERROR_STREAK` of them in a row from one key it is benched for
`keeper.server_error_cooldown`: still usable, but picked only when no other
key of its slot is (see `Slot.pick`). A success on traffic ends the streak.
"""

from __future__ import annotations

from typing import Final, final

import structlog

from llmgateway.core.logs import mask_key
from llmgateway.core.models import KeyRecord
from llmgateway.pool.slots import SlotTable

log = structlog.get_logger("llmgateway.pool")

SERVER_ERROR_STREAK: Final = 3
"""Server errors in a row from one key on traffic before it is benched."""


@final
class Bench:
    """The server-error streaks of the keys seen on traffic, and the benching they lead to."""

    __slots__ = ("streaks", "_table", "seconds")

    def __init__(self, table: SlotTable, seconds: float) -> None:
        self.streaks: dict[tuple[str, str, int], int] = {}
        """(instance, model, key id) → server errors in a row (only keys with a streak)."""
        self._table = table
        self.seconds = seconds
        """How long a benched key stays benched (`keeper.server_error_cooldown`)."""

    def server_error(self, record: KeyRecord, now: float) -> None:
        """Count a server error of `record`'s key; bench the key when the streak is long enough."""
        streak_key = (record.instance, record.model, record.key_id)
        streak = self.streaks.get(streak_key, 0) + 1
        if streak < SERVER_ERROR_STREAK:
            self.streaks[streak_key] = streak
            return
        self.streaks.pop(streak_key, None)
        entry = self._table.entry(record)
        if entry is None:
            return
        entry.bench_until = now + self.seconds
        log.info(
            "key_benched",
            instance=record.instance,
            model=record.model,
            key=mask_key(record.key),
            server_errors=streak,
            seconds=self.seconds,
        )
