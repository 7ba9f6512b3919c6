"""The store interface shared by the SQLite and PostgreSQL engines: what the product uses.

Keeper, gateway (through the write queue) and `llmgateway status` talk to a
`Store`; `open_store(url)` picks the engine from `database.url`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from llmgateway.core.constants import ProviderType, Status
from llmgateway.core.models import KeyRecord
from llmgateway.store.changes import ChangeFeed
from llmgateway.store.key_admin import (
    AddReport,
    DeleteReport,
    HistoryEntry,
    Job,
    JobState,
    KeyFilter,
    KeyPage,
    Selection,
    StoredKey,
    UsageDelta,
)

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


@dataclass(frozen=True, slots=True)
class StoredCounts:
    """What the store holds, counted: (key, model) rows by status, and keys, per instance."""

    statuses: list[StatusCount]
    """Per instance, model and status, in that order."""
    keys: dict[str, int]
    """Stored keys per instance (instances with keys only)."""


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
        self,
        instance: str,
        keys: Sequence[str],
        models: Sequence[str],
        now: datetime,
        *,
        files: Mapping[str, str] | None = None,
    ) -> KeySyncReport:
        """Make the instance's file keys and (key, model) rows match `keys` × `models`.

        `keys` are the keys of the instance's key files and inline list;
        `files` names each one's file as configured (`keys/x/a.txt`, `inline`).
        New keys get `untested` rows due at `now`; file keys not in `keys`
        are deleted with their statuses, unless they were added through the
        key admin too (they then only lose their file mark); rows of models
        not in `models` are deleted and missing ones created `untested`
        (`disabled` for a disabled key). Keys added or removed are announced
        to the other processes' change feeds.
        """

    async def load_records(self, instance: str | None = None) -> list[KeyRecord]:
        """Every (key, model) record, of one instance or all."""

    async def load_key_records(self, key_ids: Sequence[int]) -> list[KeyRecord]:
        """Every (key, model) record of the keys `key_ids` (ids no longer stored are skipped)."""

    async def missing_keys(self, key_ids: Sequence[int]) -> list[int]:
        """The ids of `key_ids` that no stored key has, in the order given."""

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

    async def stored_counts(self, now: datetime) -> StoredCounts:
        """Rows per instance, model and status (and cooling at `now`), and keys, in SQL."""

    def exclusive(self, name: str, *, wait: bool = False) -> AbstractAsyncContextManager[bool]:
        """`async with store.exclusive("keysync") as got:` one process at a time.

        `got` is True when this process holds the named lock for the body,
        False when another process holds it (never False with `wait`). A
        holder that dies releases it.
        """

    def change_feed(self) -> ChangeFeed:
        """A new feed of the records other processes write (see `llmgateway.store.changes`)."""

    # -- the key admin (see llmgateway.store.key_admin) ----------------------

    async def list_keys(self, flt: KeyFilter, *, after: int | None, limit: int) -> KeyPage:
        """One page (ids above `after`, at most `limit` ≤ 1000 keys) of what `flt` matches.

        The page carries the total and facets of every match, and the
        `after` of the next page. Raises ValueError for an unknown source.
        """

    async def get_key(self, key_id: int) -> StoredKey | None:
        """The key `key_id` with its statuses and usage, or None."""

    async def key_history(self, key_id: int, limit: int = 50) -> list[HistoryEntry]:
        """The key's last `limit` status changes, newest first."""

    async def add_keys(
        self, instance: str, keys: Sequence[str], models: Sequence[str], now: datetime
    ) -> AddReport:
        """Store `keys` for `instance` as added through the key admin (`untested` for `models`).

        Keys already held (or repeated) count as duplicates. The new keys are
        announced. Raises StoreError for an unknown instance.
        """

    async def delete_keys(self, sel: Selection) -> DeleteReport:
        """Delete every selected key added through the key admin; refuse file keys (naming the file)."""

    async def set_disabled(self, sel: Selection, disabled: bool, now: datetime) -> list[KeyRecord]:
        """Disable (or enable) every model of every selected key; the rows changed, announced.

        Each change is written to the key's history.
        """

    async def select_for_recheck(
        self, sel: Selection, models: Sequence[str] | None, after: int | None, limit: int
    ) -> list[KeyRecord]:
        """The records (not disabled; of `models` when given) of up to `limit` selected keys above `after`."""

    async def record_usage(self, deltas: Sequence[UsageDelta]) -> None:
        """Add usage increments to their keys' counters (the write queue's batches)."""

    async def record_history(self, entries: Sequence[HistoryEntry]) -> None:
        """Append status changes to their keys' history, keeping at least the last 50 per key."""

    async def create_job(self, kind: str, total: int, now: datetime) -> Job:
        """A new running job."""

    async def update_job(
        self,
        job_id: int,
        now: datetime,
        *,
        done: int | None = None,
        total: int | None = None,
        state: JobState | None = None,
        results: Mapping[str, int] | None = None,
    ) -> None:
        """Set the given fields of a job."""

    async def get_job(self, job_id: int) -> Job | None:
        """The job `job_id`, or None."""
