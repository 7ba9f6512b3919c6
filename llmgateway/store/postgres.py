"""The PostgreSQL engine of the store, through an asyncpg pool.

A batch of status updates travels as arrays expanded with `unnest` on the
server; the key admin's and a key sync's lists of keys, ids or rows travel as
one JSON parameter (`llmgateway.store.json_array`), encoded on a thread when
large: a sync of 100,000 keys is a handful of statements, none of which holds
the event loop to encode its parameters.
Every asyncpg and OS error becomes a StoreError in `_translated`, the one
place that knows asyncpg's exception tree.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, Final, cast, final
from urllib.parse import urlsplit

import asyncpg
from asyncpg.exceptions import DeadlockDetectedError, SerializationError
from asyncpg.pool import PoolConnectionProxy

from llmgateway.core.constants import Status
from llmgateway.core.errors import StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.store.changes import CHANNEL, KeySetChange, encode_key_changes, encode_notifications
from llmgateway.store.engine import Conn, Dialect, LeaseAsk, Row, SqlStore
from llmgateway.store.json_array import JsonArray, Upload, as_text_off_loop, copy_pieces
from llmgateway.store.key_activity import KeyActivity
from llmgateway.store.key_codec import PLAIN, KeyCodec
from llmgateway.store.migrations import Engine, Migration
from llmgateway.store.pg_listener import PgListener
from llmgateway.store.protocol import CLOSE_TIMEOUT
from llmgateway.store.rows import (
    RECORD_COLUMNS,
    RECORD_COLUMNS_MICROS,
    as_utc_or_none,
    from_micros,
    same,
    status_columns,
)

type _Raw = PoolConnectionProxy[asyncpg.Record]

MIGRATION_LOCK: Final = 0x6C6C6D6777  # "llmgw": serialises migrations of concurrent processes
"""The advisory lock id held while migrating."""

WRITE_ATTEMPTS: Final = 3
"""Attempts of a write that lost a deadlock or serialisation race to another writer."""

ANALYZE_AFTER: Final = 1000
"""Keys added plus removed by one sync from which the tables' statistics are refreshed."""

NOTIFY_RECORDS: Final = 1000
"""Status records one change announces at most; beyond, it asks for a reload of their instances."""

_UPDATE_STATUS: Final = """
UPDATE key_model_status AS s SET
    status = u.status, last_checked_at = u.last_checked_at, next_check_at = u.next_check_at,
    failing_since = u.failing_since, consecutive_failures = u.consecutive_failures,
    status_code = u.status_code, message = u.message, response_ms = u.response_ms,
    cooldown_until = u.cooldown_until, reason = u.reason, lease_owner = NULL,
    lease_until = NULL, version = s.version + 1
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[], $5::int[],
            $6::int[], $7::text[], $8::int[], $9::timestamptz[], $10::text[], $11::bigint[],
            $12::text[])
    AS u(status, last_checked_at, next_check_at, failing_since, consecutive_failures,
         status_code, message, response_ms, cooldown_until, reason, key_id, model)
WHERE s.key_id = u.key_id AND s.model = u.model
  -- Only the key admin enables a key disabled by hand (a probe in flight never does).
  AND s.status <> 'disabled'
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
_NOTIFY: Final = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"

POSTGRES: Final = Dialect(
    engine=Engine.POSTGRES,
    shared_between_hosts=True,
    time_in=same,
    time_out=as_utc_or_none,
    array=list,
    by_key_ids=" WHERE s.key_id = ANY($1::bigint[])",
    create_migrations_table=(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY "
        "KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    ),
    renew_leases=(
        "UPDATE key_model_status AS s SET lease_until = $4 "
        "FROM unnest($1::bigint[], $2::text[]) AS r(key_id, model) "
        "WHERE s.key_id = r.key_id AND s.model = r.model AND s.lease_owner = $3"
    ),
    load_columns=RECORD_COLUMNS_MICROS,
    load_time_in=from_micros,
)
"""PostgreSQL's SQL: status batches travel as arrays expanded with `unnest`, other lists as
one JSON parameter; times as timestamptz (loaded as epoch microseconds)."""


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


def _ids_of(text: str) -> list[int]:
    """The ids of a comma-separated list."""
    return [int(part) for part in text.split(",")]


def _count(status: str) -> int:
    """The row count of a command status such as `DELETE 3` or `INSERT 0 5` (0 for `CREATE TABLE`)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


UPLOAD_TABLE: Final = (
    "CREATE TEMP TABLE IF NOT EXISTS llmgw_upload (token text PRIMARY KEY, doc jsonb NOT NULL)"
)
"""The session's table of uploaded lists (see `json_array.Upload`); emptied around each use."""


@final
class _PgConn:
    """A pooled asyncpg connection as the shared code's `Conn`."""

    __slots__ = ("raw",)

    def __init__(self, raw: _Raw) -> None:
        self.raw = raw

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """The rows `sql` returns."""
        # asyncpg's Record is indexable like a tuple (its stubs do not say Sequence).
        return cast(list[Row], await self._bound(self.raw.fetch, sql, args))

    async def execute(self, sql: str, *args: Any) -> int:
        """Run `sql`; the number of rows it changed."""
        return _count(await self._bound(self.raw.execute, sql, args))

    async def _bound[T](self, run: Callable[..., Awaitable[T]], sql: str, args: Sequence[Any]) -> T:
        """`run(sql, *args)` with `args` encoded (`_encoded`); uploaded lists emptied after."""
        values, uploaded = await self._encoded(args)
        result = await run(sql, *values)
        if uploaded:
            await self.raw.execute("TRUNCATE pg_temp.llmgw_upload")
        return result

    async def _encoded(self, args: Sequence[Any]) -> tuple[Sequence[Any], bool]:
        """`args` as asyncpg binds them, and whether a list was uploaded for them.

        A JsonArray becomes its JSON text (a large one made on a thread); an
        Upload is sent by COPY into the session's `llmgw_upload` table and
        becomes its token.
        """
        if not any(isinstance(a, JsonArray | Upload) for a in args):
            return args, False
        uploaded = False
        values: list[Any] = []
        for arg in args:
            if isinstance(arg, Upload):
                if not uploaded:
                    await self.raw.execute(UPLOAD_TABLE)
                    await self.raw.execute("TRUNCATE pg_temp.llmgw_upload")
                    uploaded = True
                values.append(await self._upload(arg.array, f"u{len(values)}"))
            elif isinstance(arg, JsonArray):
                values.append(await as_text_off_loop(arg))
            else:
                values.append(arg)
        return values, uploaded

    async def _upload(self, array: JsonArray, token: str) -> str:
        """COPY `array` as one row of `llmgw_upload` under `token`; the token."""
        pieces = await asyncio.to_thread(copy_pieces, array, token)

        async def source() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        await self.raw.copy_to_table(
            "llmgw_upload", schema_name="pg_temp", columns=("token", "doc"), source=source()
        )
        return token

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        """Run `sql` once per argument tuple."""
        await self.raw.executemany(sql, args)

    async def script(self, sql: str) -> None:
        """Run several statements (the simple query protocol)."""
        await self.raw.execute(sql)


@final
class PostgresStore(KeyActivity, SqlStore):
    """The Store on PostgreSQL; see `llmgateway.store.protocol.Store`.

    Several gateway processes may share one database: migrations take an
    advisory lock, key syncs tolerate concurrent inserts, and a write that
    loses a deadlock is retried. Rows of `record()` whose (key_id, model) no
    longer exists are skipped.
    """

    sql = POSTGRES

    def __init__(
        self,
        dsn: str,
        min_size: int = 1,
        max_size: int = 10,
        *,
        origin: str | None = None,
        migrations: Sequence[Migration] | None = None,
        codec: KeyCodec = PLAIN,
        verify_codec: bool = True,
    ) -> None:
        self.dsn, self.codec, self.verify_codec = dsn, codec, verify_codec
        self._migrations = migrations
        self.min_size, self.max_size = min_size, max_size
        self.origin = origin or new_origin()
        """Tags this store's notifications, so its own listener ignores them."""
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    async def open(self) -> None:
        """Create the connection pool and apply pending migrations under an advisory lock."""
        if self._pool is not None:
            return
        migrations = await self._schema()
        with _translated(f"connecting to {describe_dsn(self.dsn)}"):
            pool = await asyncpg.create_pool(
                self.dsn, min_size=self.min_size, max_size=self.max_size
            )
        self._pool = pool
        try:
            with _translated("migrating"):
                async with pool.acquire() as raw:
                    await self._migrate(_PgConn(raw), migrations)
            await self._check_codec(migrations)
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

    async def _migrate(self, conn: _PgConn, migrations: Sequence[Migration]) -> None:
        """Apply pending migrations, one transaction each, under the migration advisory lock."""
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await self._apply_pending(conn, migrations, conn.raw.transaction)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def _refresh_statistics(self, changed: int) -> None:
        """ANALYZE the key tables after a change of ANALYZE_AFTER keys or more.

        Fresh statistics at once keep the due scans and the listings on their
        index plans after a bulk change (autovacuum's ANALYZE would come later).
        """
        if changed >= ANALYZE_AFTER:
            await self._read(
                "analyzing", lambda conn: conn.script("ANALYZE api_keys, key_model_status")
            )

    async def _returned_ids(self, conn: Conn, sql: str, values: Sequence[object]) -> list[int]:
        """The ids `sql` returns, aggregated by the server into one text read on a thread.

        asyncpg decodes each row of a result on the event loop: 100,000
        returned ids held it for 100-200 ms.
        """
        rows = await conn.fetch(
            f"WITH returned AS ({sql}) SELECT string_agg(id::text, ',' ORDER BY id) FROM returned",
            *values,
        )
        text = rows[0][0] if rows else None
        return await asyncio.to_thread(_ids_of, text) if text else []

    async def _stamp(self, conn: Conn) -> None:
        """Nothing: PostgreSQL announces changes with NOTIFY (see `_announce`)."""
        return None

    async def _remove_ids(
        self, conn: Conn, instance: str, ids: Sequence[int], stamp: int | None
    ) -> None:
        """Delete the keys `ids` (their rows cascade); `_announce` tells the other processes.

        The ids are bound as one JSON array, encoded off the loop (`JsonArray`):
        asyncpg encoding 100,000 of them as an array held the loop 35 ms.
        """
        p = self._params()
        await conn.execute(f"DELETE FROM api_keys WHERE {p.id_in('id', ids)}", *p.values)

    async def _announce(
        self, conn: Conn, records: Sequence[KeyRecord], changes: Sequence[KeySetChange]
    ) -> None:
        """NOTIFY the records and key-set changes, delivered when (and if) the transaction commits.

        Past NOTIFY_RECORDS records, each instance they belong to is announced
        for a reload instead (one notification, not thousands).
        """
        payloads: list[str] = []
        changes = list(changes)
        if len(records) > NOTIFY_RECORDS:  # a bulk change: its instances found on a thread
            instances = await asyncio.to_thread(_instances_of, records)
            changes += [KeySetChange(instance, reload=True) for instance in instances]
        elif records:
            payloads += encode_notifications(self.origin, records)
        payloads += encode_key_changes(self.origin, changes)
        if payloads:
            await conn.execute(_NOTIFY, CHANNEL, payloads)

    def _status_writer(self, batch: Sequence[KeyRecord]) -> Callable[[Conn], Awaitable[None]]:
        """One `unnest` UPDATE of the batch's columns, then its notifications."""
        columns = status_columns(batch, as_utc_or_none)
        columns += [[r.key_id for r in batch], [r.model for r in batch]]
        payloads = encode_notifications(self.origin, batch)

        async def run(conn: Conn) -> None:
            await conn.execute(_UPDATE_STATUS, *columns)
            await self._refresh_statuses(conn, [r.key_id for r in batch])
            # Delivered to listeners when (and only if) this transaction commits.
            await conn.execute(_NOTIFY, CHANNEL, payloads)

        return run

    async def _lease_step(self, conn: Conn, ask: LeaseAsk, op: str, limit: int) -> list[Row]:
        """Pick and lease due rows in one statement.

        Rows another process is leasing at this very moment are skipped
        (`FOR UPDATE SKIP LOCKED`), so concurrent keepers never get the same row.
        """
        return await conn.fetch(
            _LEASE.format(op=op),
            ask.at,
            ask.instances,
            Status.UNTESTED.value,
            limit,
            ask.owner,
            ask.until,
        )

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

    async def _read[T](self, action: str, run: Callable[[Conn], Awaitable[T]]) -> T:
        """`run` on a pooled connection, errors translated."""
        pool = self._require(action)
        with _translated(action):
            async with pool.acquire() as conn:
                return await run(_PgConn(conn))

    async def _write[T](self, action: str, run: Callable[[Conn], Awaitable[T]]) -> T:
        """`run` in a transaction, retried when it lost a deadlock to another writer."""
        pool = self._require(action)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with _translated(action):
                    async with pool.acquire() as conn, conn.transaction():
                        return await run(_PgConn(conn))
            except StoreError as exc:
                lost_race = isinstance(exc.__cause__, DeadlockDetectedError | SerializationError)
                if not lost_race or attempt == WRITE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _require(self, action: str) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise StoreError(f"postgres: {action} failed: the store is not open")
        return self._pool


def _instances_of(records: Sequence[KeyRecord]) -> list[str]:
    """The instances `records` belong to, sorted."""
    return sorted({r.instance for r in records})
