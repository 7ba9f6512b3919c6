"""The PostgreSQL engine of the store, through an asyncpg pool.

Batches travel as arrays expanded with `unnest` on the server: a sync of
100,000 keys or a batch of status updates is one statement, one round trip.
Every asyncpg and OS error becomes a StoreError in `_translated`, the one
place that knows asyncpg's exception tree.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Final, final
from urllib.parse import urlsplit

import asyncpg
from asyncpg.exceptions import DeadlockDetectedError, SerializationError
from asyncpg.pool import PoolConnectionProxy

from llmgateway.core.constants import ProviderType, Status
from llmgateway.core.errors import StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.store.changes import (
    CHANNEL,
    KeySetChange,
    encode_key_changes,
    encode_notifications,
)
from llmgateway.store.fingerprints import KEY_FINGERPRINTS, fingerprinted
from llmgateway.store.key_codec import PLAIN
from llmgateway.store.migrations import Engine, Migration, engine_migrations, plan
from llmgateway.store.pg_listener import PgListener
from llmgateway.store.protocol import CLOSE_TIMEOUT, KeySyncReport, StatusCount
from llmgateway.store.rows import (
    RECORD_COLUMNS,
    as_utc,
    latest_per_row,
    parse_reason,
    parse_status,
    unique_keys,
)
from llmgateway.store.scrub import SCRUB_KEY_MESSAGES, scrubbed_messages

type _Conn = PoolConnectionProxy[asyncpg.Record]

MIGRATION_LOCK: Final = 0x6C6C6D6777  # "llmgw": serialises migrations of concurrent processes
"""The advisory lock id held while migrating."""

WRITE_ATTEMPTS: Final = 3
"""Attempts of a write that lost a deadlock or serialisation race to another writer."""

ANALYZE_AFTER: Final = 1000
"""Keys added plus removed by one sync from which the tables' statistics are refreshed."""

_SELECT_RECORDS: Final = (
    f"SELECT {RECORD_COLUMNS} FROM key_model_status AS s JOIN api_keys AS k ON k.id = s.key_id"
)
_UPDATE_STATUS: Final = """
UPDATE key_model_status AS s SET
    status = u.status, last_checked_at = u.last_checked_at, next_check_at = u.next_check_at,
    failing_since = u.failing_since, consecutive_failures = u.consecutive_failures,
    status_code = u.status_code, message = u.message, response_ms = u.response_ms,
    cooldown_until = u.cooldown_until, reason = u.reason, lease_owner = NULL,
    lease_until = NULL, version = s.version + 1
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
            $6::timestamptz[], $7::int[], $8::int[], $9::text[], $10::int[], $11::timestamptz[],
            $12::text[])
    AS u(key_id, model, status, last_checked_at, next_check_at, failing_since,
         consecutive_failures, status_code, message, response_ms, cooldown_until, reason)
WHERE s.key_id = u.key_id AND s.model = u.model
  -- Newest wins: a status observed earlier than the stored one never replaces it.
  AND (s.last_checked_at IS NULL OR u.last_checked_at IS NULL
       OR s.last_checked_at <= u.last_checked_at)
"""


_LEASE: Final = f"""
WITH picked AS (
    SELECT s.key_id, s.model FROM key_model_status AS s JOIN api_keys AS k ON k.id = s.key_id
    WHERE s.next_check_at IS NOT NULL AND s.next_check_at <= $1
      AND (s.lease_until IS NULL OR s.lease_until < $1)
      AND s.status {{op}} $3 AND k.instance = ANY($2::text[])
    ORDER BY s.next_check_at, s.key_id, s.model LIMIT $4
    FOR UPDATE OF s SKIP LOCKED
), leased AS (
    UPDATE key_model_status AS s SET lease_owner = $5, lease_until = $6
    FROM picked AS p WHERE s.key_id = p.key_id AND s.model = p.model
    RETURNING s.*
)
SELECT {RECORD_COLUMNS} FROM leased AS s JOIN api_keys AS k ON k.id = s.key_id
ORDER BY s.next_check_at, s.key_id, s.model
"""


def new_origin() -> str:
    """A name for this store's writes that no other process shares (host, pid, random)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


def lock_id(name: str) -> int:
    """The advisory lock id of the named lock (a stable signed 64-bit hash)."""
    digest = hashlib.blake2b(f"llmgateway:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def describe_dsn(dsn: str) -> str:
    """`dsn` without its password, for messages."""
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


_LOCK_RELEASE_FAILURES: Final = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn asyncpg and OS errors (timeouts included) raised while doing `action` into StoreError."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
        raise StoreError(f"postgres: {action} failed: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:  # refused, reset, DNS, TimeoutError
        raise StoreError(f"postgres: {action} failed: {type(exc).__name__}: {exc}") from exc


async def _run_step(conn: _Conn, step: str) -> None:
    """Run a migration's data step on `conn` (inside the migration's transaction)."""
    if step == KEY_FINGERPRINTS:
        keyed = [
            (int(r[0]), str(r[1])) for r in await conn.fetch("SELECT id, key_value FROM api_keys")
        ]
        await conn.executemany(
            "UPDATE api_keys SET fingerprint = $1, key_mask = $2 WHERE id = $3",
            fingerprinted(PLAIN, keyed),
        )
        return
    if step != SCRUB_KEY_MESSAGES:
        raise StoreError(f"postgres: unknown migration step {step!r}")
    keys = [str(r[0]) for r in await conn.fetch("SELECT key_value FROM api_keys")]
    rows = [
        (int(r[0]), str(r[1]), str(r[2]))
        for r in await conn.fetch(
            "SELECT key_id, model, message FROM key_model_status WHERE message <> ''"
        )
    ]
    updates = scrubbed_messages(keys, rows)
    if updates:
        await conn.executemany(
            "UPDATE key_model_status SET message = $1 WHERE key_id = $2 AND model = $3", updates
        )


def _count(status: str) -> int:
    """The row count of a command status such as `DELETE 3` or `INSERT 0 5`."""
    return int(status.rsplit(" ", 1)[-1])


@final
class PostgresStore:
    """The Store on PostgreSQL; see `llmgateway.store.protocol.Store`.

    Several gateway processes may share one database: migrations take an
    advisory lock, key syncs tolerate concurrent inserts, and a write that
    loses a deadlock is retried. Rows of `record()` whose (key_id, model) no
    longer exists are skipped.
    """

    def __init__(
        self,
        dsn: str,
        min_size: int = 1,
        max_size: int = 10,
        *,
        origin: str | None = None,
        migrations: Sequence[Migration] | None = None,
    ) -> None:
        self.dsn = dsn
        self._migrations = migrations
        """The schema to reach (default: the migrations shipped with this release)."""
        self.min_size = min_size
        self.max_size = max_size
        self.origin = origin or new_origin()
        """Tags this store's notifications, so its own listener ignores them."""
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    async def open(self) -> None:
        """Create the connection pool and apply pending migrations under an advisory lock."""
        if self._pool is not None:
            return
        migrations = self._migrations
        if migrations is None:
            migrations = await asyncio.to_thread(engine_migrations, Engine.POSTGRES)
        with _translated(f"connecting to {describe_dsn(self.dsn)}"):
            pool = await asyncpg.create_pool(
                self.dsn, min_size=self.min_size, max_size=self.max_size
            )
        self._pool = pool
        try:
            await self._migrate(migrations)
        except BaseException:
            await self.close()
            raise

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:  # noqa: ASYNC109
        """Close the pool within `timeout` seconds, else terminate it (idempotent).

        Raises StoreError when the graceful close failed or timed out (the
        connections are terminated).
        """
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            with _translated("closing the pool"):
                async with asyncio.timeout(timeout):
                    await pool.close()
        except StoreError:
            pool.terminate()
            raise

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        with _translated("ping"):
            await self._require("ping").fetchval("SELECT 1")

    async def applied_versions(self) -> list[int]:
        """The migration versions recorded in `schema_migrations`, ascending."""
        with _translated("reading schema_migrations"):
            rows = await self._require("reading schema_migrations").fetch(
                "SELECT version FROM schema_migrations ORDER BY version"
            )
        return [int(row[0]) for row in rows]

    async def _migrate(self, migrations: Sequence[Migration]) -> None:
        with _translated("migrating"):
            async with self._require("migrating").acquire() as conn:
                await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
                try:
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY "
                        "KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
                    )
                    rows = await conn.fetch("SELECT version FROM schema_migrations")
                    for migration in plan(migrations, [int(r[0]) for r in rows]):
                        async with conn.transaction():
                            if migration.has_statements:
                                await conn.execute(migration.sql)
                            if migration.step is not None:
                                await _run_step(conn, migration.step)
                            await conn.execute(
                                "INSERT INTO schema_migrations (version, name, applied_at) "
                                "VALUES ($1, $2, $3)",
                                migration.version,
                                migration.name,
                                datetime.now(UTC),
                            )
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def sync_providers(self, providers: Sequence[tuple[str, ProviderType]]) -> None:
        """Insert or update one row per configured instance (name, type); never deletes."""
        names = [name for name, _ in providers]
        types = [ptype.value for _, ptype in providers]

        async def run(conn: _Conn) -> None:
            await conn.execute(
                "INSERT INTO providers (name, provider_type) "
                "SELECT * FROM unnest($1::text[], $2::text[]) "
                "ON CONFLICT (name) DO UPDATE SET provider_type = excluded.provider_type",
                names,
                types,
            )

        await self._write("syncing providers", run)

    async def sync_keys(
        self, instance: str, keys: Sequence[str], models: Sequence[str], now: datetime
    ) -> KeySyncReport:
        """Make the instance's keys and (key, model) rows match `keys` × `models`, in one transaction.

        Raises StoreError when `instance` has no provider row.
        """
        wanted = unique_keys(keys)
        model_list = list(dict.fromkeys(models))
        at = as_utc(now)

        async def run(conn: _Conn) -> KeySyncReport:
            if await conn.fetchval("SELECT 1 FROM providers WHERE name = $1", instance) is None:
                raise StoreError(f"unknown instance {instance!r}: sync_providers first")
            removed = await conn.fetch(
                "DELETE FROM api_keys AS a WHERE a.instance = $1 AND NOT EXISTS "
                "(SELECT 1 FROM unnest($2::text[]) AS w(v) WHERE w.v = a.key_value) "
                "RETURNING a.id",
                instance,
                wanted,
            )
            added = await conn.fetch(
                "INSERT INTO api_keys (instance, key_value, added_at) "
                "SELECT $1, w.v, $3 FROM unnest($2::text[]) WITH ORDINALITY AS w(v, n) "
                "WHERE NOT EXISTS (SELECT 1 FROM api_keys AS a "
                "WHERE a.instance = $1 AND a.key_value = w.v) "
                "ORDER BY w.n ON CONFLICT (instance, key_value) DO NOTHING RETURNING id",
                instance,
                wanted,
                at,
            )
            await conn.execute(
                "DELETE FROM key_model_status AS s USING api_keys AS k "
                "WHERE s.key_id = k.id AND k.instance = $1 AND NOT (s.model = ANY($2::text[]))",
                instance,
                model_list,
            )
            await conn.execute(
                "INSERT INTO key_model_status (key_id, model, status, next_check_at) "
                "SELECT k.id, m.model, $3, $4 FROM api_keys AS k "
                "CROSS JOIN unnest($2::text[]) AS m(model) WHERE k.instance = $1 "
                "AND NOT EXISTS (SELECT 1 FROM key_model_status AS s "
                "WHERE s.key_id = k.id AND s.model = m.model) "
                "ON CONFLICT (key_id, model) DO NOTHING",
                instance,
                model_list,
                Status.UNTESTED.value,
                at,
            )
            if added or removed:
                change = KeySetChange(
                    instance, tuple(r[0] for r in added), tuple(r[0] for r in removed)
                )
                await self._publish_keys(conn, [change])
            return KeySyncReport(added=len(added), removed=len(removed), total=len(wanted))

        report = await self._write(f"syncing keys of {instance}", run)
        if report.added + report.removed >= ANALYZE_AFTER:
            # Fresh statistics at once, so fetch_due keeps its index plan after a bulk load
            # (autovacuum's ANALYZE would come later).
            with _translated("analyzing"):
                await self._require("analyzing").execute("ANALYZE api_keys, key_model_status")
        return report

    async def load_records(self, instance: str | None = None) -> list[KeyRecord]:
        """Every (key, model) record, of one instance or all, by instance, key_id, model."""
        order = " ORDER BY k.instance, s.key_id, s.model"
        pool = self._require("loading records")
        with _translated("loading records"):
            if instance is None:
                rows = await pool.fetch(_SELECT_RECORDS + order)
            else:
                rows = await pool.fetch(
                    _SELECT_RECORDS + " WHERE k.instance = $1" + order, instance
                )
        return await asyncio.to_thread(_to_records, rows)

    async def fetch_due(
        self, instances: Sequence[str], now: datetime, limit: int
    ) -> list[KeyRecord]:
        """Up to `limit` records due at `now` (NULL `next_check_at` skipped), untested first."""
        if not instances or limit <= 0:
            return []
        # Two index-ordered scans that stop at `limit` (untested, then the rest)
        # instead of sorting every due row (100,000-key pools).
        due = (
            f"(SELECT {RECORD_COLUMNS}, {{rank}} AS rank FROM key_model_status AS s "
            "JOIN api_keys AS k ON k.id = s.key_id "
            "WHERE s.next_check_at IS NOT NULL AND s.next_check_at <= $1 "
            "AND s.status {op} $3 AND k.instance = ANY($2::text[]) "
            "ORDER BY s.next_check_at, s.key_id, s.model LIMIT $4)"
        )
        query = (
            f"SELECT * FROM ({due.format(rank=0, op='=')} UNION ALL "
            f"{due.format(rank=1, op='<>')}) AS d "
            "ORDER BY d.rank, d.next_check_at, d.key_id, d.model LIMIT $4"
        )
        pool = self._require("fetching due keys")
        with _translated("fetching due keys"):
            rows = await pool.fetch(
                query, as_utc(now), list(instances), Status.UNTESTED.value, limit
            )
        return _to_records(rows)

    async def record(self, records: Sequence[KeyRecord]) -> None:
        """Write the status fields of each (key_id, model), last one per row winning, in one statement."""
        if not records:
            return
        batch = latest_per_row(records)

        def times(values: Iterator[datetime | None]) -> list[datetime | None]:
            return [None if v is None else as_utc(v) for v in values]

        args = (
            [r.key_id for r in batch],
            [r.model for r in batch],
            [r.status.value for r in batch],
            times(r.last_checked_at for r in batch),
            times(r.next_check_at for r in batch),
            times(r.failing_since for r in batch),
            [r.consecutive_failures for r in batch],
            [r.status_code for r in batch],
            [r.message for r in batch],
            [r.response_ms for r in batch],
            times(r.cooldown_until for r in batch),
            [r.reason.value if r.reason is not None else None for r in batch],
        )

        payloads = encode_notifications(self.origin, batch)

        async def run(conn: _Conn) -> None:
            await conn.execute(_UPDATE_STATUS, *args)
            # Delivered to listeners when (and only if) this transaction commits.
            await conn.execute(
                "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", CHANNEL, payloads
            )

        await self._write("recording statuses", run)

    async def lease_due(
        self,
        instances: Sequence[str],
        now: datetime,
        limit: int,
        owner: str,
        lease_seconds: float,
    ) -> list[KeyRecord]:
        """Lease up to `limit` due, unleased (or expired) records to `owner`, untested first.

        Rows another process is leasing at this very moment are skipped
        (`FOR UPDATE SKIP LOCKED`), so concurrent keepers never get the same
        row. The lease ends when a status is recorded or at `now + lease_seconds`.
        """
        if not instances or limit <= 0:
            return []
        at = as_utc(now)
        until = at + timedelta(seconds=lease_seconds)

        async def run(conn: _Conn) -> list[asyncpg.Record]:
            rows = list(
                await conn.fetch(
                    _LEASE.format(op="="),
                    at,
                    list(instances),
                    Status.UNTESTED.value,
                    limit,
                    owner,
                    until,
                )
            )
            if len(rows) < limit:
                rows.extend(
                    await conn.fetch(
                        _LEASE.format(op="<>"),
                        at,
                        list(instances),
                        Status.UNTESTED.value,
                        limit - len(rows),
                        owner,
                        until,
                    )
                )
            return rows

        return _to_records(await self._write("leasing due keys", run))

    async def renew_leases(
        self, owner: str, rows: Sequence[tuple[int, str]], until: datetime
    ) -> int:
        """Extend to `until` the leases `owner` still holds on `rows`; return how many."""
        if not rows:
            return 0

        async def run(conn: _Conn) -> int:
            return _count(
                await conn.execute(
                    "UPDATE key_model_status AS s SET lease_until = $4 "
                    "FROM unnest($1::bigint[], $2::text[]) AS r(key_id, model) "
                    "WHERE s.key_id = r.key_id AND s.model = r.model AND s.lease_owner = $3",
                    [key_id for key_id, _ in rows],
                    [model for _, model in rows],
                    owner,
                    as_utc(until),
                )
            )

        return await self._write("renewing leases", run)

    @asynccontextmanager
    async def exclusive(self, name: str, *, wait: bool = False) -> AsyncIterator[bool]:
        """Hold the advisory lock `name` for the body, across every process on this database.

        Yields True when this process got it, False when another holds it
        (with `wait`, waits for it and always yields True). The lock lives on
        a connection of its own, closed on exit: a dead holder frees it. A
        wait or a body that is cancelled or fails drops the connection at once
        (the server then frees the lock) rather than closing it politely.
        """
        with _translated(f"taking lock {name}"):
            conn = await asyncpg.connect(self.dsn)
        try:
            with _translated(f"taking lock {name}"):
                if wait:
                    await conn.execute("SELECT pg_advisory_lock($1)", lock_id(name))
                    got = True
                else:
                    got = bool(
                        await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_id(name))
                    )
            yield got
        except BaseException:
            conn.terminate()
            raise
        finally:
            if not conn.is_closed():
                with suppress(*_LOCK_RELEASE_FAILURES):
                    await conn.close(timeout=5.0)

    def change_feed(self) -> PgListener:
        """A listener delivering the statuses other processes record (see `PgListener`)."""
        return PgListener(self.dsn, self.origin)

    async def delete_instance(self, instance: str) -> int:
        """Delete the instance's provider row, keys and statuses; return the keys deleted."""

        async def run(conn: _Conn) -> int:
            deleted = _count(
                await conn.execute("DELETE FROM api_keys WHERE instance = $1", instance)
            )
            await conn.execute("DELETE FROM providers WHERE name = $1", instance)
            if deleted:
                await self._publish_keys(conn, [KeySetChange(instance, reload=True)])
            return deleted

        return await self._write(f"deleting {instance}", run)

    async def key_counts(self) -> dict[str, int]:
        """The number of stored keys of each instance."""
        pool = self._require("counting keys")
        with _translated("counting keys"):
            rows = await pool.fetch(
                "SELECT instance, COUNT(*) FROM api_keys GROUP BY instance ORDER BY instance"
            )
        return {str(r[0]): int(r[1]) for r in rows}

    async def status_counts(self) -> list[StatusCount]:
        """(key, model) rows counted per instance, model and status."""
        pool = self._require("counting statuses")
        with _translated("counting statuses"):
            rows = await pool.fetch(
                "SELECT k.instance, s.model, s.status, COUNT(*) FROM key_model_status AS s "
                "JOIN api_keys AS k ON k.id = s.key_id GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            )
        return [StatusCount(str(r[0]), str(r[1]), parse_status(str(r[2])), int(r[3])) for r in rows]

    async def load_key_records(self, key_ids: Sequence[int]) -> list[KeyRecord]:
        """Every (key, model) record of the keys `key_ids` (the ones still stored)."""
        if not key_ids:
            return []
        pool = self._require("loading keys")
        with _translated("loading keys"):
            rows = await pool.fetch(
                _SELECT_RECORDS + " WHERE s.key_id = ANY($1::bigint[]) ORDER BY s.key_id, s.model",
                list(key_ids),
            )
        return _to_records(rows)

    async def _publish_keys(self, conn: _Conn, changes: Sequence[KeySetChange]) -> None:
        """Announce key-set changes to the other processes, on commit of `conn`'s transaction.

        Every edit of an instance's keys calls this inside its transaction.
        """
        await conn.execute(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
            CHANNEL,
            encode_key_changes(self.origin, changes),
        )

    def _require(self, action: str) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise StoreError(f"postgres: {action} failed: the store is not open")
        return self._pool

    async def _write[T](self, action: str, run: Callable[[_Conn], Awaitable[T]]) -> T:
        """`run` in a transaction, retried when it lost a deadlock to another writer."""
        pool = self._require(action)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with _translated(action):
                    async with pool.acquire() as conn, conn.transaction():
                        return await run(conn)
            except StoreError as exc:
                lost_race = isinstance(exc.__cause__, DeadlockDetectedError | SerializationError)
                if not lost_race or attempt == WRITE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")


def _to_records(rows: Sequence[asyncpg.Record]) -> list[KeyRecord]:
    """KeyRecords from rows selected with RECORD_COLUMNS (timestamptz arrive as UTC datetimes)."""
    return [
        KeyRecord(
            key_id=row[0],
            instance=row[1],
            key=row[2],
            model=row[3],
            status=parse_status(row[4]),
            last_checked_at=row[5],
            next_check_at=row[6],
            failing_since=row[7],
            consecutive_failures=row[8],
            status_code=row[9],
            message=row[10],
            response_ms=row[11],
            cooldown_until=row[12],
            reason=parse_reason(row[13]),
        )
        for row in rows
    ]
