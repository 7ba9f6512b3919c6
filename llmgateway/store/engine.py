"""What the SQLite and PostgreSQL engines share: the store's logic, written once.

`SqlStore` implements the `Store` operations on top of a `Dialect` (each
engine's SQL text, how it stores times and passes lists) and two ways of
running work on a `Conn`: `_read` (no transaction) and `_write` (one
transaction). The engines (`sqlite.py`, `postgres.py`) supply those, plus
what only they do: connecting, named locks, change feeds, and the statements
of a key sync, of a status batch and of a lease step, whose shapes differ
(SQLite reads lists from JSON with `json_each`; PostgreSQL expands its
status batches' arrays with `unnest`). The statements both engines run alike are written once,
here, with PostgreSQL's numbered parameters (`$1`); SQLite's connection reads
them as its own (`?1`), in the same order.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from llmgateway.core.constants import ProviderType
from llmgateway.core.errors import StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.store import model_statuses
from llmgateway.store.fingerprints import KEY_FINGERPRINTS, fingerprinted
from llmgateway.store.key_codec import PLAIN, KeyCodec
from llmgateway.store.key_encryption import ENCRYPTION_MIGRATION, check_codec
from llmgateway.store.migrations import Engine, Migration, engine_migrations, plan
from llmgateway.store.protocol import StatusCount, StoredCounts
from llmgateway.store.rows import (
    RECORD_COLUMNS,
    TimeIn,
    TimeOut,
    as_utc,
    latest_per_row,
    parse_status,
    to_records,
)
from llmgateway.store.scrub import SCRUB_KEY_MESSAGES, scrubbed_messages

type Row = Sequence[Any]

SELECT_RECORDS: Final = (
    f"SELECT {RECORD_COLUMNS} FROM key_model_status AS s JOIN api_keys AS k ON k.id = s.key_id"
)
"""Every record, each with its key (`s`: key_model_status, `k`: api_keys); add WHERE, ORDER BY."""
_COUNT_MODEL_STATUSES: Final = (
    "SELECT instance, model_statuses, COUNT(*) FROM api_keys GROUP BY instance, model_statuses"
)
_COUNT_COOLING: Final = (
    "SELECT (SELECT k.instance FROM api_keys AS k WHERE k.id = s.key_id), s.model, s.status, "
    "COUNT(*) FROM key_model_status AS s WHERE s.cooldown_until > $1 GROUP BY 1, 2, 3"
)
"""The rows cooling down at $1 per instance, model and status: the cool-down's partial index
gives them, each key's instance is looked up by its id (no scan of every key to join)."""
LOAD_PAGE: Final = 5000
"""Rows `load_records` reads per query."""
PROVIDER_EXISTS: Final = "SELECT 1 FROM providers WHERE name = $1"
"""A row when the instance `$1` has a provider row."""
_UPSERT_PROVIDER: Final = (
    "INSERT INTO providers (name, provider_type) VALUES ($1, $2) "
    "ON CONFLICT (name) DO UPDATE SET provider_type = excluded.provider_type"
)
_INSERT_MIGRATION: Final = (
    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)"
)
_SET_MESSAGE: Final = "UPDATE key_model_status SET message = $1 WHERE key_id = $2 AND model = $3"
_SET_FINGERPRINT: Final = "UPDATE api_keys SET fingerprint = $1, key_mask = $2 WHERE id = $3"


class Conn(Protocol):
    """One engine connection, as the shared code uses it."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """The rows `sql` returns."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run `sql`; the number of rows it changed."""

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        """Run `sql` once per argument tuple."""

    async def script(self, sql: str) -> None:
        """Run several `;`-separated statements (a migration file)."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """An engine's SQL text and value conventions, for the shared code."""

    engine: Engine
    """Names the engine (first word of its error messages) and its migration files."""
    shared_between_hosts: bool
    """Whether processes on other hosts may use the same database (`Store.shared_between_hosts`)."""
    time_in: TimeIn
    time_out: TimeOut
    array: Callable[[Sequence[Any]], Any]
    """How a list travels as one parameter."""
    by_key_ids: str
    """WHERE clause: rows of the key ids in array `$1`."""
    create_migrations_table: str
    renew_leases: str
    """(key ids array, models array, owner, until): the number of rows changed."""
    load_columns: str = RECORD_COLUMNS
    """The SELECT list of `records_page`: `RECORD_COLUMNS`, times in the form `load_time_in` reads."""
    load_time_in: TimeIn | None = None
    """How `records_page` reads a time column (None: `time_in`)."""

    @property
    def records_time_in(self) -> TimeIn:
        """How a time column of a `load_columns` row is read."""
        return self.load_time_in or self.time_in

    @property
    def records_by_key_ids(self) -> str:
        """The records (as `load_columns`) of the key ids in array `$1`, by key id then model."""
        return (
            f"SELECT {self.load_columns} FROM key_model_status AS s "
            f"JOIN api_keys AS k ON k.id = s.key_id{self.by_key_ids} ORDER BY s.key_id, s.model"
        )


@dataclass(frozen=True, slots=True)
class LeaseAsk:
    """One `lease_due` call: whose due rows, as of when, for whom, until when."""

    instances: list[str]
    at: datetime
    owner: str
    until: datetime


class SqlStore(ABC):
    """The `Store` operations both engines share; see `llmgateway.store.protocol.Store`.

    Subclasses set `sql` and implement the abstract hooks.
    """

    sql: Dialect

    codec: KeyCodec = PLAIN
    """How keys are stored and fingerprinted (every read and write of key_value goes through it)."""

    verify_codec: bool = True
    """Check at open that `codec` reads the stored keys (off only while re-encrypting them)."""

    _migrations: Sequence[Migration] | None
    """The schema to reach (None: the migrations shipped with this release)."""

    @property
    def shared_between_hosts(self) -> bool:
        """True when processes on other hosts may use the same database."""
        return self.sql.shared_between_hosts

    @abstractmethod
    async def _read[T](self, action: str, run: Callable[[Conn], Awaitable[T]]) -> T:
        """`run` on a connection, errors translated to StoreError naming `action`."""

    @abstractmethod
    async def _write[T](self, action: str, run: Callable[[Conn], Awaitable[T]]) -> T:
        """`run` on a connection inside one transaction (rolled back on any error)."""

    @abstractmethod
    def _status_writer(self, batch: Sequence[KeyRecord]) -> Callable[[Conn], Awaitable[None]]:
        """What writes the status fields of `batch` (one record per row) in a transaction.

        It ends the rows' leases and announces the records to the other processes.
        """

    @abstractmethod
    async def _records(self, rows: Sequence[Row]) -> list[KeyRecord]:
        """The records of `load_columns` rows, on a thread when many (`KeyReads._records`)."""

    @abstractmethod
    async def _lease_step(self, conn: Conn, ask: LeaseAsk, op: str, limit: int) -> list[Row]:
        """Lease up to `limit` due rows whose status compares `op` ('=' or '<>') to untested."""

    async def _schema(self) -> Sequence[Migration]:
        """The migrations to apply on open (the shipped files are read on a thread)."""
        if self._migrations is not None:
            return self._migrations
        return await asyncio.to_thread(engine_migrations, self.sql.engine)

    async def _check_codec(self, migrations: Sequence[Migration]) -> None:
        """Raise KeyEncryptionMismatch unless `codec` matches how the stored keys are kept."""
        if self.verify_codec and any(m.name == ENCRYPTION_MIGRATION for m in migrations):
            await self._write("checking key encryption", lambda c: check_codec(c, self.codec))

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        await self._read("ping", lambda conn: conn.fetch("SELECT 1"))

    async def sync_providers(self, providers: Sequence[tuple[str, ProviderType]]) -> None:
        """Insert or update one row per configured instance (name, type); never deletes."""
        rows = [(name, ptype.value) for name, ptype in providers]
        await self._write(
            "syncing providers", lambda conn: conn.executemany(_UPSERT_PROVIDER, rows)
        )

    async def load_records(self, instance: str | None = None) -> list[KeyRecord]:
        """Every (key, model) record, of one instance or all, by key_id, model.

        Read `LOAD_PAGE` rows at a time, so that neither the rows of a large
        pool nor their decoding hold the event loop at once. The reads and
        the decoding overlap: while a page is decoded on a thread, the next
        one is read (its place is the last raw row's key id and model), so a
        start-up's load waits for the database and for the decoding, not for
        one after the other.
        """
        records: list[KeyRecord] = []
        decoding: asyncio.Future[list[KeyRecord]] | None = None
        after: tuple[int, str] | None = None
        try:
            while True:
                rows = await self._page_rows(instance, after, LOAD_PAGE)
                if decoding is not None:
                    records += await decoding
                    decoding = None
                if len(rows) < LOAD_PAGE:
                    records += await self._records(rows)
                    return records
                # The place of the next page: key_id, model (`load_columns` keeps
                # RECORD_COLUMNS' order), read from the raw row before it is decoded.
                after = (rows[-1][0], rows[-1][3])
                decoding = asyncio.ensure_future(self._records(rows))
        finally:
            if decoding is not None:  # a read failed: the page being decoded is not wanted
                decoding.cancel()
                await asyncio.gather(decoding, return_exceptions=True)

    async def records_page(
        self, instance: str | None, after: tuple[int, str] | None, limit: int
    ) -> list[KeyRecord]:
        """Up to `limit` records (of `instance`, or all) after (key_id, model) `after`, in order.

        The rows are decoded on a thread, a page at a time.
        """
        return await self._records(await self._page_rows(instance, after, limit))

    async def _page_rows(
        self, instance: str | None, after: tuple[int, str] | None, limit: int
    ) -> list[Row]:
        """The raw rows (`load_columns`) of `records_page`."""
        after_id, after_model = after or (-1, "")
        # `k.id >= $1` (implied by the join) lets PostgreSQL start its scan of api_keys at
        # the page instead of at the first key: without it every page re-reads the keys
        # before it, and a whole load reads them quadratically.
        where = ["(s.key_id, s.model) > ($1, $2)", "k.id >= $1"]
        args: list[Any] = [after_id, after_model, limit]
        if instance is not None:
            where.append("k.instance = $4")
            args.append(instance)
        # CROSS JOIN: SQLite then walks key_model_status in key order and stops at the limit
        # (not every row of the instance, sorted); PostgreSQL reads it as a plain join.
        query = (
            f"SELECT {self.sql.load_columns} FROM key_model_status AS s CROSS JOIN api_keys AS k "
            f"WHERE k.id = s.key_id AND {' AND '.join(where)} ORDER BY s.key_id, s.model LIMIT $3"
        )
        rows: list[Row] = await self._read("loading records", lambda conn: conn.fetch(query, *args))
        return rows

    async def stored_counts(self, now: datetime) -> StoredCounts:
        """(key, model) rows per instance, model and status, how many cool down at `now`; keys.

        Counted from `api_keys.model_statuses` (each key's models and statuses
        in one column, see `model_statuses`): one pass over the keys, no join
        of every status row with its key. Each key is in exactly one of its
        instance's groups, so the same pass gives the keys per instance. The
        few rows cooling down are counted apart, through their partial index.
        """
        at = self.sql.time_out(as_utc(now))

        async def run(conn: Conn) -> tuple[list[Row], list[Row]]:
            return await conn.fetch(_COUNT_MODEL_STATUSES), await conn.fetch(_COUNT_COOLING, at)

        per_key, cooling_rows = await self._read("counting statuses", run)
        counts: dict[tuple[str, str, str], int] = {}
        keys_of: dict[str, int] = {}
        for instance, text, keys in per_key:
            name, many = str(instance), int(keys)
            keys_of[name] = keys_of.get(name, 0) + many
            for model, status in model_statuses.decode(text).items():
                row = (name, model, status)
                counts[row] = counts.get(row, 0) + many
        cooling = {(str(i), str(m), str(s)): int(n) for i, m, s, n in cooling_rows}
        statuses = [
            StatusCount(instance, model, parse_status(status), n, cooling.get(row, 0))
            for row, n in sorted(counts.items())
            for instance, model, status in (row,)
        ]
        return StoredCounts(statuses, keys_of)

    async def lease_due(
        self,
        instances: Sequence[str],
        now: datetime,
        limit: int,
        owner: str,
        lease_seconds: float,
    ) -> list[KeyRecord]:
        """Lease up to `limit` due, unleased (or expired) records to `owner`, untested first.

        Records whose `next_check_at` is NULL are skipped. The lease ends when
        a status is recorded or at `now + lease_seconds`.
        """
        if not instances or limit <= 0:
            return []
        at = as_utc(now)
        ask = LeaseAsk(list(instances), at, owner, at + timedelta(seconds=lease_seconds))

        async def run(conn: Conn) -> list[Row]:
            # Two index-ordered scans that stop at `limit` (untested, then the rest)
            # instead of sorting every due row (100,000-key pools).
            rows: list[Row] = []
            for op in ("=", "<>"):
                if len(rows) >= limit:
                    break
                rows += await self._lease_step(conn, ask, op, limit - len(rows))
            return rows

        leased = await self._write("leasing due keys", run)
        return to_records(leased, self.sql.time_in, self.codec.unseal)

    async def renew_leases(
        self, owner: str, rows: Sequence[tuple[int, str]], until: datetime
    ) -> int:
        """Extend to `until` the leases `owner` still holds on `rows`; return how many."""
        if not rows:
            return 0
        args = (
            self.sql.array([key_id for key_id, _ in rows]),
            self.sql.array([model for _, model in rows]),
            owner,
            self.sql.time_out(as_utc(until)),
        )
        return await self._write(
            "renewing leases", lambda conn: conn.execute(self.sql.renew_leases, *args)
        )

    async def record(self, records: Sequence[KeyRecord]) -> None:
        """Write the status fields of each (key_id, model), last one per row winning, in one transaction."""
        if not records:
            return
        await self._write("recording statuses", self._status_writer(latest_per_row(records)))

    async def _apply_pending(
        self,
        conn: Conn,
        migrations: Sequence[Migration],
        transaction: Callable[[], AbstractAsyncContextManager[Any]],
    ) -> None:
        """Apply the migrations `conn`'s database lacks, each inside `transaction()`."""
        await conn.script(self.sql.create_migrations_table)
        applied = [int(row[0]) for row in await conn.fetch("SELECT version FROM schema_migrations")]
        for migration in plan(migrations, applied):
            async with transaction():
                if migration.has_statements:
                    await conn.script(migration.sql)
                if migration.step is not None:
                    await self._run_step(conn, migration.step)
                await conn.execute(
                    _INSERT_MIGRATION,
                    migration.version,
                    migration.name,
                    self.sql.time_out(datetime.now(UTC)),
                )

    async def _run_step(self, conn: Conn, step: str) -> None:
        """Run a migration's data step on `conn` (inside the migration's transaction).

        The steps belong to migrations older than encryption at rest: the keys
        they read are in clear, so they use the plain codec (a store then
        opened with an encryption key asks for `llmgateway keys encrypt`).
        """
        codec = PLAIN
        if step == KEY_FINGERPRINTS:
            keyed = [
                (int(r[0]), str(r[1]))
                for r in await conn.fetch("SELECT id, key_value FROM api_keys")
            ]
            await conn.executemany(_SET_FINGERPRINT, fingerprinted(codec, keyed))
            return
        if step != SCRUB_KEY_MESSAGES:
            raise StoreError(f"{self.sql.engine}: unknown migration step {step!r}")
        stored = await conn.fetch("SELECT key_value FROM api_keys")
        keys = [codec.unseal(str(r[0])) for r in stored]
        rows = [
            (int(r[0]), str(r[1]), str(r[2]))
            for r in await conn.fetch(
                "SELECT key_id, model, message FROM key_model_status WHERE message <> ''"
            )
        ]
        updates = scrubbed_messages(keys, rows)
        if updates:
            await conn.executemany(_SET_MESSAGE, updates)
