"""Leases of due checks: how long one lasts, and how the keeper holding it keeps it.

A keeper leases the due checks it is about to run (`Store.lease_due`): no other
process runs them while the lease lasts, and recording a check's result ends
its lease. A lease lasts `lease_length(providers)`: the longest probe timeout
of the instances (`timeouts.connect + first_byte + idle`, what one probe may
take at most), within MIN_LEASE..MAX_LEASE seconds.

A check may take longer than one probe: it waits for a probe slot, and a
retryable failure is probed again after `verification_delay`. While its checks
run, the keeper renews their leases every third of the lease length
(`LeaseRenewer`), so a lease runs out only when its holder died or lost the
database. Another process then takes the check over on its next round: within
one lease length plus its `worker.check_interval` after the holder's death,
which is within twice the probe timeout whenever that timeout is at least
MIN_LEASE and `worker.check_interval` (the defaults: 185 s, 30 s and 5 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Final, final

import structlog

from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.errors import StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.pool.key_pool import Clock
from llmgateway.store.protocol import Store

log = structlog.get_logger(__name__)

MIN_LEASE: Final = 3.0
"""Seconds a lease lasts at least (a renewal must always land before it runs out)."""

MAX_LEASE: Final = 30.0
"""Seconds a lease lasts at most: a dead holder's checks wait no longer than this."""

RENEWALS_PER_LEASE: Final = 3
"""A held lease is renewed this many times per lease length."""


def probe_timeout(provider: ProviderConfig) -> float:
    """The longest one probe of `provider` may take: connect, first byte, then the body."""
    timeouts = provider.timeouts
    return timeouts.connect + timeouts.first_byte + timeouts.idle


def lease_length(providers: Iterable[ProviderConfig]) -> float:
    """Seconds a lease lasts: the longest probe timeout, within MIN_LEASE..MAX_LEASE."""
    longest = max((probe_timeout(p) for p in providers), default=MAX_LEASE)
    return min(max(longest, MIN_LEASE), MAX_LEASE)


@final
class LeaseRenewer:
    """Keeps the leases of the checks a keeper runs alive until they are done.

    `holding(records)` is the span during which the keeper runs those checks;
    while any is held, a task renews them every `length / RENEWALS_PER_LEASE`
    seconds until `clock() + length`. A renewal that fails is logged: the
    leases then run out, and at worst another process probes a key again.
    """

    def __init__(self, store: Store, owner: str, length: float, clock: Clock = time.time) -> None:
        self._store = store
        self._owner = owner
        self.length = length
        self._clock = clock
        self._held: dict[tuple[int, str], int] = {}
        self._task: asyncio.Task[None] | None = None
        self.renewals = 0
        """Renewal rounds written so far."""

    @asynccontextmanager
    async def holding(self, records: Sequence[KeyRecord]) -> AsyncIterator[None]:
        """Renew the leases of `records` for the body of the `async with`."""
        rows = [(r.key_id, r.model) for r in records]
        for row in rows:
            self._held[row] = self._held.get(row, 0) + 1
        if self._held and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._renew(), name="llmgateway-lease-renewal")
        try:
            yield
        finally:
            for row in rows:
                left = self._held.pop(row) - 1
                if left:
                    self._held[row] = left
            if not self._held and self._task is not None:
                task, self._task = self._task, None
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _renew(self) -> None:
        interval = self.length / RENEWALS_PER_LEASE
        while self._held:
            await asyncio.sleep(interval)
            until = datetime.fromtimestamp(self._clock() + self.length, UTC)
            try:
                await self._store.renew_leases(self._owner, list(self._held), until)
            except StoreError as exc:
                log.warning("lease_renewal_failed", held=len(self._held), error=str(exc))
                continue
            self.renewals += 1
