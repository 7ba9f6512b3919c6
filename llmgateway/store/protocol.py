"""The store interface shared by the SQLite and PostgreSQL engines: what the product uses.

Keeper, gateway (through the write queue) and `llmgateway status` talk to a
`Store`; `open_store(url)` picks the engine from `database.url`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from llmgateway.core.constants import ProviderType, Status
from llmgateway.core.models import KeyRecord
from llmgateway.store.changes import ChangeFeed

CLOSE_TIMEOUT = 10.0
"""Seconds `Store.close()` waits for the connections in use by default."""


@dataclass(frozen=True, slots=True)
class KeySyncReport:
    """What one key sync changed for an instance."""

    added: int
    removed: int
    total: int


@dataclass(frozen=True, slots=True)
class StatusCount:
    """How many (key, model) rows of one instance and model are in one status."""

    instance: str
    model: str
    status: Status
    count: int
    cooling: int = 0
    """Of those, the rows still cooling down at the time asked."""


class Store(Protocol):
    """Persistent key statuses, per (key, model), for every provider instance.

    Every method is async and never blocks the event loop. Times are
    timezone-aware UTC. A failing operation raises `StoreError`.
    """

    @property
    def shared_between_hosts(self) -> bool:
        """True when processes on other hosts may share the database (PostgreSQL).

        False for a store only the processes of one host can reach (an SQLite
        file): a lone process on it has no one to follow, and one of its
        processes probes for all.
        """

    async def open(self) -> None:
        """Connect and apply pending migrations (raises SchemaTooNew if the db is newer)."""

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:  # noqa: ASYNC109
        """Release every connection, within `timeout` seconds (then drop them).

        Raises StoreError when they could not be closed cleanly in time; they
        are released anyway.
        """

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""

    async def sync_providers(self, providers: Sequence[tuple[str, ProviderType]]) -> None:
        """Insert or update one row per configured instance (name, type)."""

    async def sync_keys(
        self, instance: str, keys: Sequence[str], models: Sequence[str], now: datetime
    ) -> KeySyncReport:
        """Make the instance's stored keys and (key, model) rows match `keys` × `models`.

        New keys get `untested` rows due at `now`; keys not in `keys` are
        deleted with their statuses; rows of models not in `models` are
        deleted and missing ones created `untested`. Keys added or removed
        are announced to the other processes' change feeds.
        """

    async def load_records(self, instance: str | None = None) -> list[KeyRecord]:
        """Every (key, model) record, of one instance or all."""

    async def load_key_records(self, key_ids: Sequence[int]) -> list[KeyRecord]:
        """Every (key, model) record of the keys `key_ids` (ids no longer stored are skipped)."""

    async def lease_due(
        self,
        instances: Sequence[str],
        now: datetime,
        limit: int,
        owner: str,
        lease_seconds: float,
    ) -> list[KeyRecord]:
        """Lease up to `limit` due records to `owner` until `now + lease_seconds`, untested first.

        Records whose `next_check_at` is NULL (checking stopped) and rows
        leased to anyone until after `now` are skipped; the returned rows are
        leased atomically: concurrent callers (other processes, other hosts)
        never get the same row. Recording a status for a row ends its lease;
        an expired lease (its holder died) is taken over.
        """

    async def renew_leases(
        self, owner: str, rows: Sequence[tuple[int, str]], until: datetime
    ) -> int:
        """Extend to `until` the leases `owner` still holds on `rows` ((key_id, model) pairs).

        Rows whose lease ended (their status was recorded) or passed to
        another owner are left alone. Returns the number of leases extended.
        """

    async def record(self, records: Sequence[KeyRecord]) -> None:
        """Write the status fields of each (key_id, model) in one round trip.

        Ends the rows' leases and announces the records to the other
        processes' change feeds.
        """

    async def records_page(
        self, instance: str | None, after: tuple[int, str] | None, limit: int
    ) -> list[KeyRecord]:
        """Up to `limit` records (of `instance`, or all) after (key_id, model) `after`, in order.

        Pages follow the primary key: `after` is the last row of the page before
        (None: from the first row).
        """

    async def status_counts(self, now: datetime) -> list[StatusCount]:
        """Rows counted per instance, model and status (and cooling at `now`), in SQL."""

    async def key_counts(self) -> dict[str, int]:
        """The number of stored keys of each instance (instances with keys only)."""

    def exclusive(self, name: str, *, wait: bool = False) -> AbstractAsyncContextManager[bool]:
        """`async with store.exclusive("keysync") as got:` one process at a time.

        `got` is True when this process holds the named lock for the body,
        False when another process holds it (never False with `wait`). A
        holder that dies releases it.
        """

    def change_feed(self) -> ChangeFeed:
        """A new feed of the records other processes write (see `llmgateway.store.changes`)."""
