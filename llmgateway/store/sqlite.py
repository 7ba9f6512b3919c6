"""The embedded SQLite engine of the store (aiosqlite: every statement runs on its own thread).

One connection in WAL mode, opened in autocommit mode so that transactions
are explicit: each operation takes the connection's lock, runs
`BEGIN IMMEDIATE` ... `COMMIT`, and never interleaves with another.
Times are stored as REAL seconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, nullcontext
from itertools import repeat
from pathlib import Path
from typing import Any, Final, final

import aiosqlite

from llmgateway.core.constants import Status
from llmgateway.core.errors import StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.core.threads import lower_this_thread
from llmgateway.store.changes import Changes, KeySetChange, SqlitePoller
from llmgateway.store.engine import SELECT_RECORDS, Conn, Dialect, LeaseAsk, Row, SqlStore
from llmgateway.store.file_lock import file_lock
from llmgateway.store.json_array import JsonArray
from llmgateway.store.key_activity import KeyActivity
from llmgateway.store.key_codec import PLAIN, KeyCodec
from llmgateway.store.migrations import Engine, Migration
from llmgateway.store.protocol import CLOSE_TIMEOUT
from llmgateway.store.rows import (
    RECORD_COLUMNS,
    from_epoch,
    status_columns,
    to_epoch,
    to_records,
)

MEMORY: Final = ":memory:"
"""The path of a private in-memory database (tests)."""

BUSY_TIMEOUT_MS: Final = 5000
"""How long a write waits for another process's lock on the file before failing."""

REMOVED_KEYS_TTL: Final = 86400.0
"""Seconds a removed key stays noted in `removed_keys` for the other workers' feeds."""

_UPDATE_STATUS: Final = (
    "UPDATE key_model_status SET status = ?1, last_checked_at = ?2, next_check_at = ?3, "
    "failing_since = ?4, consecutive_failures = ?5, status_code = ?6, message = ?7, "
    "response_ms = ?8, cooldown_until = ?9, reason = ?10, lease_owner = NULL, "
    "lease_until = NULL, version = ?11 WHERE key_id = ?12 AND model = ?13 "
    # Only the key admin enables a key disabled by hand (a probe in flight never does).
    "AND status <> 'disabled' "
    # Newest wins: a status observed earlier than the stored one (another process's queue
    # flushing late) never replaces it.
    "AND (last_checked_at IS NULL OR ?2 IS NULL OR last_checked_at <= ?2)"
)
# CROSS JOIN makes SQLite walk key_model_status_due first (its join-order hint).
_DUE: Final = (
    f"SELECT {RECORD_COLUMNS} FROM key_model_status AS s CROSS JOIN api_keys AS k "
    "ON k.id = s.key_id WHERE s.next_check_at IS NOT NULL AND s.next_check_at <= ?1 "
    "AND (s.lease_until IS NULL OR s.lease_until < ?1) "
    "AND s.status {op} ?3 AND k.instance IN (SELECT value FROM json_each(CAST(?2 AS TEXT))) "
    "ORDER BY s.next_check_at, s.key_id, s.model LIMIT ?4"
)


WAL_RETRY: Final = 0.05
"""Seconds between two attempts to switch a busy database to WAL."""


async def _enter_wal(conn: aiosqlite.Connection) -> None:
    """Switch the database to WAL, retrying while another process holds it (up to busy_timeout).

    Two workers opening a new database together race to change its journal
    mode, and SQLite answers the loser "database is locked" at once, without
    waiting on busy_timeout (it does not wait where waiting could deadlock).
    The loser tries again until the other is done.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(WAL_RETRY)


def _json_array(values: Sequence[Any]) -> JsonArray:
    return JsonArray(values)


SQLITE: Final = Dialect(
    engine=Engine.SQLITE,
    shared_between_hosts=False,
    time_in=from_epoch,
    time_out=to_epoch,
    array=_json_array,
    by_key_ids=" WHERE s.key_id IN (SELECT value FROM json_each(CAST(?1 AS TEXT)))",
    create_migrations_table=(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    ),
    renew_leases=(
        "UPDATE key_model_status SET lease_until = ?4 WHERE lease_owner = ?3 "
        "AND (key_id, model) IN (SELECT i.value, m.value FROM json_each(CAST(?1 AS TEXT)) AS i "
        "JOIN json_each(CAST(?2 AS TEXT)) AS m ON m.key = i.key)"
    ),
)
"""SQLite's SQL: lists travel as JSON text read with `json_each`, times as epoch seconds."""


_PG_PARAM: Final = re.compile(r"\$(\d+)")


@functools.cache
def _own_params(sql: str) -> str:
    """`sql` with the shared statements' `$1` parameters written as SQLite's `?1`."""
    return _PG_PARAM.sub(r"?\1", sql)


@final
class _SqliteConn:
    """An aiosqlite connection as the shared code's `Conn`."""

    __slots__ = ("raw",)

    def __init__(self, raw: aiosqlite.Connection) -> None:
        self.raw = raw

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """The rows `sql` returns."""
        cursor = await self.raw.execute(_own_params(sql), args)
        return list(await cursor.fetchall())

    async def execute(self, sql: str, *args: Any) -> int:
        """Run `sql`; the number of rows it changed."""
        cursor = await self.raw.execute(_own_params(sql), args)
        return int(cursor.rowcount)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        """Run `sql` once per argument tuple."""
        await self.raw.executemany(_own_params(sql), args)

    async def script(self, sql: str) -> None:
        """Run several statements (autocommit=True: executescript adds no COMMIT of its own)."""
        await self.raw.executescript(sql)


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn sqlite3 and OS errors raised while doing `action` into StoreError."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"sqlite: {action} failed: {type(exc).__name__}: {exc}") from exc


@final
class SqliteStore(KeyActivity, SqlStore):
    """The Store on an SQLite file (or `:memory:`); see `llmgateway.store.protocol.Store`.

    Rows of `record()` whose (key_id, model) no longer exists (the key was
    removed by a sync meanwhile) are skipped.
    """

    sql = SQLITE

    def __init__(
        self,
        path: Path | str,
        *,
        migrations: Sequence[Migration] | None = None,
        codec: KeyCodec = PLAIN,
        verify_codec: bool = True,
    ) -> None:
        self.path = path if path == MEMORY else Path(path)
        self.codec = codec
        self.verify_codec = verify_codec
        self._migrations = migrations
        self._conn: _SqliteConn | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Create the folder, connect, set WAL and busy_timeout, and apply pending migrations."""
        if self._conn is not None:
            return
        migrations = await self._schema()
        with _translated(f"opening {self.path}"):
            if isinstance(self.path, Path):
                await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
            conn = await aiosqlite.connect(str(self.path), autocommit=True)
            try:
                await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                await _enter_wal(conn)
                await conn.execute("PRAGMA synchronous = NORMAL")
                await conn.execute("PRAGMA foreign_keys = ON")
                # The connection's thread runs every statement: background work, which must
                # not take the CPU from the event loop (see `llmgateway.core.threads`). A
                # function SQLite calls runs on that thread, so it lowers that thread alone.
                await conn.create_function("llmgw_lower_priority", 0, lower_this_thread)
                await conn.execute("SELECT llmgw_lower_priority()")
            except BaseException:
                await conn.close()
                raise
        self._conn = _SqliteConn(conn)
        try:
            # BEGIN IMMEDIATE takes the write lock first, so two processes starting
            # together apply each migration once.
            await self._write(
                "migrating", lambda c: self._apply_pending(c, migrations, nullcontext)
            )
            await self._check_codec(migrations)
        except BaseException:
            await self.close()
            raise

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:  # noqa: ASYNC109
        """Close the connection and end its thread (idempotent).

        The close waits for a statement still running (at most the busy
        timeout); after `timeout` seconds it raises StoreError, and the
        thread ends as soon as that statement returns.
        """
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            async with asyncio.timeout(timeout):
                async with self._lock:
                    with _translated("closing"):
                        await conn.raw.close()
        except TimeoutError as exc:
            conn.raw.stop()  # queued behind the running statement: the thread then ends
            raise StoreError(f"sqlite: closing timed out after {timeout} s") from exc

    async def _stamp(self, conn: Conn) -> int:
        """Bump the change counter: its new value tags the rows this transaction writes."""
        return await _bump(conn)

    async def _remove_ids(
        self, conn: Conn, instance: str, ids: Sequence[int], stamp: int | None
    ) -> None:
        """Delete the keys `ids`, noted in removed_keys under `stamp` for the other workers."""
        await _remove_keys(
            conn,
            "id IN (SELECT value FROM json_each(CAST(?3 AS TEXT)))",
            (_json_array(list(ids)),),
            stamp or 0,
        )

    async def _announce(
        self, conn: Conn, records: Sequence[KeyRecord], changes: Sequence[KeySetChange]
    ) -> None:
        """Nothing to send: the rows written carry the stamp the workers' feeds look for."""

    def _status_writer(self, batch: Sequence[KeyRecord]) -> Callable[[Conn], Awaitable[None]]:
        """Bump the change counter and update each row, tagged with the counter's value."""

        async def run(conn: Conn) -> None:
            version = await _bump(conn)
            ids, models = [r.key_id for r in batch], [r.model for r in batch]
            values = zip(*status_columns(batch, to_epoch), repeat(version), ids, models)
            await conn.executemany(_UPDATE_STATUS, values)
            await self._refresh_statuses(conn, ids)

        return run

    async def _lease_step(self, conn: Conn, ask: LeaseAsk, op: str, limit: int) -> list[Row]:
        """Read due rows, then lease them, in the caller's BEGIN IMMEDIATE transaction.

        The write lock taken first means two processes on the same file never
        lease the same row.
        """
        names = _json_array(ask.instances)
        rows = await conn.fetch(
            _DUE.format(op=op), to_epoch(ask.at), names, Status.UNTESTED.value, limit
        )
        await conn.executemany(
            "UPDATE key_model_status SET lease_owner = ?1, lease_until = ?2 "
            "WHERE key_id = ?3 AND model = ?4",
            [(ask.owner, to_epoch(ask.until), row[0], row[3]) for row in rows],
        )
        return rows

    @asynccontextmanager
    async def exclusive(self, name: str, *, wait: bool = False) -> AsyncIterator[bool]:
        """Hold the lock `name` for the body, across every process using this file.

        The lock is an `flock` on `<database>.<name>.lock` beside the database
        (the kernel frees it when its holder dies). Yields True when this
        store got it, False when another holds it; with `wait`, waits for it.
        A private `:memory:` database has no other user: always True.
        """
        if not isinstance(self.path, Path):
            yield True
            return
        lock_path = self.path.with_name(f"{self.path.name}.{name}.lock")
        async with file_lock(lock_path, name, wait=wait) as got:
            yield got

    async def data_version(self) -> int:
        """`PRAGMA data_version`: changes whenever another connection commits to the file."""
        rows = await self._read("reading data_version", lambda c: c.fetch("PRAGMA data_version"))
        return int(rows[0][0]) if rows else 0

    async def change_version(self) -> int:
        """The change counter: bumped by every `record()` batch and every change of a key set."""
        return await self._read("reading the change counter", _counter)

    async def changes_since(self, version: int) -> tuple[int, Changes]:
        """The change counter now, and what was written after counter value `version`.

        The records (with their keys) of every row recorded or inserted, and
        the keys removed, per instance.
        """

        async def run(conn: Conn) -> tuple[int, list[Row], list[Row]]:
            current = await _counter(conn)
            rows = await conn.fetch(
                SELECT_RECORDS + " WHERE s.version > ?1 ORDER BY s.version", version
            )
            removed = await conn.fetch(
                "SELECT instance, key_id FROM removed_keys WHERE version > ?1 "
                "ORDER BY instance, key_id",
                version,
            )
            return current, rows, removed

        current, rows, removed_rows = await self._read("reading changes", run)
        removed: dict[str, list[int]] = {}
        for instance, key_id in removed_rows:
            removed.setdefault(str(instance), []).append(int(key_id))
        keys = [KeySetChange(name, removed=tuple(ids)) for name, ids in removed.items()]
        return current, Changes(to_records(rows, from_epoch, self.codec.unseal), keys)

    def change_feed(self, interval: float = 0.5) -> SqlitePoller:
        """A feed delivering what other processes record, polled every `interval` seconds."""
        return SqlitePoller(self, interval)

    async def _read[T](self, action: str, run: Callable[[Conn], Awaitable[T]]) -> T:
        """`run` on the connection, held exclusively, with errors translated."""
        return await self._locked(action, run)

    async def _locked[T](self, action: str, run: Callable[[_SqliteConn], Awaitable[T]]) -> T:
        async with self._lock:
            if self._conn is None:
                raise StoreError(f"sqlite: {action} failed: the store is not open")
            with _translated(action):
                return await run(self._conn)

    async def _write_statements(
        self, action: str, statements: Sequence[tuple[str, Sequence[object]]]
    ) -> None:
        """Run `statements` in one transaction; a single one needs no BEGIN and COMMIT.

        In autocommit mode a statement is a transaction of its own, so a
        batch that is one statement costs one trip to the connection's
        thread, not three.
        """
        if len(statements) != 1:
            await super()._write_statements(action, statements)
            return
        sql, values = statements[0]
        await self._locked(action, lambda conn: conn.execute(sql, *values))

    async def _write[T](self, action: str, run: Callable[[Conn], Awaitable[T]]) -> T:
        """`run` inside `BEGIN IMMEDIATE` ... `COMMIT` (rolled back on any error)."""

        async def transaction(conn: _SqliteConn) -> T:
            await conn.raw.execute("BEGIN IMMEDIATE")
            try:
                result = await run(conn)
            except BaseException:
                if conn.raw.in_transaction:
                    await conn.raw.execute("ROLLBACK")
                raise
            await conn.raw.execute("COMMIT")
            return result

        return await self._locked(action, transaction)


async def _bump(conn: Conn) -> int:
    """Increment the change counter (inside the caller's write transaction); its new value."""
    rows = await conn.fetch(
        "UPDATE change_counter SET value = value + 1 WHERE id = 1 RETURNING value"
    )
    if not rows:
        raise StoreError("sqlite: the change_counter row is missing")
    return int(rows[0][0])


async def _remove_keys(conn: Conn, where: str, args: tuple[Any, ...], version: int) -> int:
    """Delete the api_keys rows matching `where` (statuses cascade) and note each in removed_keys.

    `where` numbers its parameters from ?3 (`args`). Part of the caller's
    write transaction, which bumps the change counter to `version` when
    anything changed; returns the number of keys deleted. Notes older than
    REMOVED_KEYS_TTL are pruned on the way.
    """
    at = time.time()
    await conn.execute("DELETE FROM removed_keys WHERE removed_at < ?1", at - REMOVED_KEYS_TTL)
    await conn.execute(
        "INSERT OR REPLACE INTO removed_keys (key_id, instance, version, removed_at) "
        f"SELECT id, instance, ?1, ?2 FROM api_keys WHERE {where}",
        version,
        at,
        *args,
    )
    return await conn.execute(f"DELETE FROM api_keys WHERE {where}", version, at, *args)


async def _counter(conn: Conn) -> int:
    rows = await conn.fetch("SELECT value FROM change_counter WHERE id = 1")
    return int(rows[0][0]) if rows else 0
