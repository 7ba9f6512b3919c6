"""The embedded SQLite engine of the store (aiosqlite: every statement runs on its own thread).

One connection in WAL mode, opened in autocommit mode so that transactions
are explicit: each operation takes the connection's lock, runs
`BEGIN IMMEDIATE` ... `COMMIT`, and never interleaves with another.
Times are stored as REAL seconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final, final

import aiosqlite
import orjson

from llmgateway.core.constants import ProviderType, Status
from llmgateway.core.errors import StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.store.changes import Changes, KeySetChange, SqlitePoller
from llmgateway.store.fingerprints import KEY_FINGERPRINTS, fingerprinted
from llmgateway.store.key_codec import PLAIN
from llmgateway.store.migrations import Engine, Migration, engine_migrations, plan
from llmgateway.store.protocol import CLOSE_TIMEOUT, KeySyncReport, StatusCount
from llmgateway.store.rows import (
    RECORD_COLUMNS,
    as_utc,
    from_epoch,
    latest_per_row,
    parse_reason,
    parse_status,
    to_epoch,
    unique_keys,
)
from llmgateway.store.scrub import SCRUB_KEY_MESSAGES, scrubbed_messages

MEMORY: Final = ":memory:"
"""The path of a private in-memory database (tests)."""

BUSY_TIMEOUT_MS: Final = 5000
"""How long a write waits for another process's lock on the file before failing."""

REMOVED_KEYS_TTL: Final = 86400.0
"""Seconds a removed key stays noted in `removed_keys` for the other workers' feeds."""

LOCK_POLL_INTERVAL: Final = 0.05
"""Seconds between two attempts at a named lock another process holds (`exclusive(wait=True)`)."""

_SELECT_RECORDS: Final = (
    f"SELECT {RECORD_COLUMNS} FROM key_model_status AS s JOIN api_keys AS k ON k.id = s.key_id"
)
_UPDATE_STATUS: Final = (
    "UPDATE key_model_status SET status = ?, last_checked_at = ?, next_check_at = ?, "
    "failing_since = ?, consecutive_failures = ?, status_code = ?, message = ?, "
    "response_ms = ?, cooldown_until = ?, reason = ?, lease_owner = NULL, lease_until = NULL, version = ? "
    "WHERE key_id = ? AND model = ? "
    # Newest wins: a status observed earlier than the stored one (another process's queue
    # flushing late) never replaces it.
    "AND (last_checked_at IS NULL OR ? IS NULL OR last_checked_at <= ?)"
)
_DUE: Final = (
    f"SELECT {RECORD_COLUMNS} FROM key_model_status AS s CROSS JOIN api_keys AS k "
    "ON k.id = s.key_id WHERE s.next_check_at IS NOT NULL AND s.next_check_at <= ? "
    "AND s.status {op} ? AND k.instance IN (SELECT value FROM json_each(?)) {lease}"
    "ORDER BY s.next_check_at, s.key_id, s.model LIMIT ?"
)
_UNLEASED: Final = "AND (s.lease_until IS NULL OR s.lease_until < ?) "


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn sqlite3 and OS errors raised while doing `action` into StoreError."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"sqlite: {action} failed: {type(exc).__name__}: {exc}") from exc


@final
class SqliteStore:
    """The Store on an SQLite file (or `:memory:`); see `llmgateway.store.protocol.Store`.

    Rows of `record()` whose (key_id, model) no longer exists (the key was
    removed by a sync meanwhile) are skipped.
    """

    def __init__(self, path: Path | str, *, migrations: Sequence[Migration] | None = None) -> None:
        self.path = path if path == MEMORY else Path(path)
        self._migrations = migrations
        """The schema to reach (default: the migrations shipped with this release)."""
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Create the folder, connect, set WAL and busy_timeout, and apply pending migrations."""
        if self._conn is not None:
            return
        migrations = self._migrations
        if migrations is None:
            migrations = await asyncio.to_thread(engine_migrations, Engine.SQLITE)
        with _translated(f"opening {self.path}"):
            if isinstance(self.path, Path):
                await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
            conn = await aiosqlite.connect(str(self.path), autocommit=True)
            try:
                await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute("PRAGMA synchronous = NORMAL")
                await conn.execute("PRAGMA foreign_keys = ON")
            except BaseException:
                await conn.close()
                raise
        self._conn = conn
        try:
            await self._migrate(migrations)
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
                        await conn.close()
        except TimeoutError as exc:
            conn.stop()  # queued behind the running statement: the thread then ends
            raise StoreError(f"sqlite: closing timed out after {timeout} s") from exc

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        async with self._locked("ping") as conn:
            await conn.execute("SELECT 1")

    async def applied_versions(self) -> list[int]:
        """The migration versions recorded in `schema_migrations`, ascending."""
        async with self._locked("reading schema_migrations") as conn:
            cursor = await conn.execute("SELECT version FROM schema_migrations ORDER BY version")
            return [int(row[0]) for row in await cursor.fetchall()]

    async def _migrate(self, migrations: Sequence[Migration]) -> None:
        # BEGIN IMMEDIATE takes the write lock first, so two processes starting
        # together apply each migration once.
        async with self._transaction("migrating") as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            cursor = await conn.execute("SELECT version FROM schema_migrations")
            applied = [int(row[0]) for row in await cursor.fetchall()]
            for migration in plan(migrations, applied):
                # autocommit=True: executescript adds no COMMIT of its own.
                if migration.has_statements:
                    await conn.executescript(migration.sql)
                if migration.step is not None:
                    await _run_step(conn, migration.step)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time()),
                )

    async def sync_providers(self, providers: Sequence[tuple[str, ProviderType]]) -> None:
        """Insert or update one row per configured instance (name, type); never deletes."""
        async with self._transaction("syncing providers") as conn:
            await conn.executemany(
                "INSERT INTO providers (name, provider_type) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET provider_type = excluded.provider_type",
                [(name, ptype.value) for name, ptype in providers],
            )

    async def sync_keys(
        self, instance: str, keys: Sequence[str], models: Sequence[str], now: datetime
    ) -> KeySyncReport:
        """Make the instance's keys and (key, model) rows match `keys` × `models`, in one transaction.

        The key and model lists travel as JSON arrays read with `json_each`,
        so the whole diff is four set-based statements whatever the count.
        Raises StoreError when `instance` has no provider row.
        """
        wanted = unique_keys(keys)
        keys_json = orjson.dumps(wanted).decode()
        models_json = orjson.dumps(list(dict.fromkeys(models))).decode()
        at = to_epoch(now)
        async with self._transaction(f"syncing keys of {instance}") as conn:
            cursor = await conn.execute("SELECT 1 FROM providers WHERE name = ?", (instance,))
            if await cursor.fetchone() is None:
                raise StoreError(f"unknown instance {instance!r}: sync_providers first")
            # What this sync inserts or deletes carries the next counter value (see changes.py).
            version = await _counter(conn) + 1
            removed = await _remove_keys(
                conn,
                "instance = ? AND key_value NOT IN (SELECT value FROM json_each(?))",
                (instance, keys_json),
                version,
                time.time(),
            )
            cursor = await conn.execute(
                # Filtering first keeps ignored rows from consuming AUTOINCREMENT ids.
                "INSERT OR IGNORE INTO api_keys (instance, key_value, added_at) "
                "SELECT ?, w.value, ? FROM json_each(?) AS w WHERE NOT EXISTS "
                "(SELECT 1 FROM api_keys AS a WHERE a.instance = ? AND a.key_value = w.value) "
                "ORDER BY w.key",
                (instance, at, keys_json, instance),
            )
            added = cursor.rowcount
            await conn.execute(
                "DELETE FROM key_model_status "
                "WHERE key_id IN (SELECT id FROM api_keys WHERE instance = ?) "
                "AND model NOT IN (SELECT value FROM json_each(?))",
                (instance, models_json),
            )
            cursor = await conn.execute(
                "INSERT OR IGNORE INTO key_model_status "
                "(key_id, model, status, next_check_at, version) "
                "SELECT k.id, m.value, ?, ?, ? FROM api_keys AS k, json_each(?) AS m "
                "WHERE k.instance = ?",
                (Status.UNTESTED.value, at, version, models_json, instance),
            )
            if removed or cursor.rowcount:
                await _bump(conn)
        return KeySyncReport(added=added, removed=removed, total=len(wanted))

    async def load_records(self, instance: str | None = None) -> list[KeyRecord]:
        """Every (key, model) record, of one instance or all, by instance, key_id, model."""
        order = " ORDER BY k.instance, s.key_id, s.model"
        async with self._locked("loading records") as conn:
            if instance is None:
                cursor = await conn.execute(_SELECT_RECORDS + order)
            else:
                cursor = await conn.execute(
                    _SELECT_RECORDS + " WHERE k.instance = ?" + order, (instance,)
                )
            rows = await cursor.fetchall()
        return await asyncio.to_thread(_to_records, rows)

    async def fetch_due(
        self, instances: Sequence[str], now: datetime, limit: int
    ) -> list[KeyRecord]:
        """Up to `limit` records due at `now` (NULL `next_check_at` skipped), untested first."""
        if not instances or limit <= 0:
            return []
        # Two index-ordered scans that stop at `limit` (untested, then the rest)
        # instead of sorting every due row (100,000-key pools).
        # CROSS JOIN makes SQLite walk key_model_status_due first (its join-order hint).
        due = (
            f"SELECT {RECORD_COLUMNS} FROM key_model_status AS s CROSS JOIN api_keys AS k "
            "ON k.id = s.key_id WHERE s.next_check_at IS NOT NULL AND s.next_check_at <= ? "
            "AND s.status {} ? AND k.instance IN (SELECT value FROM json_each(?)) "
            "ORDER BY s.next_check_at, s.key_id, s.model LIMIT ?"
        )
        names = orjson.dumps(list(instances)).decode()
        at = to_epoch(now)
        async with self._locked("fetching due keys") as conn:
            cursor = await conn.execute(due.format("="), (at, Status.UNTESTED, names, limit))
            rows = list(await cursor.fetchall())
            if len(rows) < limit:
                cursor = await conn.execute(
                    due.format("<>"), (at, Status.UNTESTED, names, limit - len(rows))
                )
                rows.extend(await cursor.fetchall())
        return _to_records(rows)

    async def record(self, records: Sequence[KeyRecord]) -> None:
        """Write the status fields of each (key_id, model), last one per row winning, in one transaction."""
        if not records:
            return
        rows = latest_per_row(records)
        async with self._transaction("recording statuses") as conn:
            version = await _bump(conn)
            await conn.executemany(
                _UPDATE_STATUS,
                [
                    (*values, version, r.key_id, r.model, values[1], values[1])
                    for r in rows
                    for values in (_status_values(r),)
                ],
            )

    async def lease_due(
        self,
        instances: Sequence[str],
        now: datetime,
        limit: int,
        owner: str,
        lease_seconds: float,
    ) -> list[KeyRecord]:
        """Lease up to `limit` due, unleased (or expired) records to `owner`, untested first.

        One BEGIN IMMEDIATE transaction reads and leases them, so two
        processes on the same file never lease the same row. The lease ends
        when a status is recorded or at `now + lease_seconds`.
        """
        if not instances or limit <= 0:
            return []
        names = orjson.dumps(list(instances)).decode()
        at = as_utc(now).timestamp()
        async with self._transaction("leasing due keys") as conn:
            rows: list[Any] = []
            for op in ("=", "<>"):
                if len(rows) >= limit:
                    break
                cursor = await conn.execute(
                    _DUE.format(op=op, lease=_UNLEASED),
                    (at, Status.UNTESTED, names, at, limit - len(rows)),
                )
                rows.extend(await cursor.fetchall())
            await conn.executemany(
                "UPDATE key_model_status SET lease_owner = ?, lease_until = ? "
                "WHERE key_id = ? AND model = ?",
                [(owner, at + lease_seconds, row[0], row[3]) for row in rows],
            )
        return _to_records(rows)

    async def renew_leases(
        self, owner: str, rows: Sequence[tuple[int, str]], until: datetime
    ) -> int:
        """Extend to `until` the leases `owner` still holds on `rows`; return how many."""
        if not rows:
            return 0
        pairs = orjson.dumps([[key_id, model] for key_id, model in rows]).decode()
        async with self._transaction("renewing leases") as conn:
            cursor = await conn.execute(
                "UPDATE key_model_status SET lease_until = ? WHERE lease_owner = ? "
                "AND (key_id, model) IN (SELECT json_extract(value, '$[0]'), "
                "json_extract(value, '$[1]') FROM json_each(?))",
                (to_epoch(until), owner, pairs),
            )
            return int(cursor.rowcount)

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
        with _translated(f"taking lock {name}"):
            handle = await asyncio.to_thread(_open_lock_file, lock_path)
        try:
            with _translated(f"taking lock {name}"):
                got = _try_flock(handle)
                # Polled, not a blocking flock on a thread: a cancelled wait ends at once.
                while wait and not got:
                    await asyncio.sleep(LOCK_POLL_INTERVAL)
                    got = _try_flock(handle)
            yield got
        finally:
            handle.close()  # closing the file releases the lock

    async def data_version(self) -> int:
        """`PRAGMA data_version`: changes whenever another connection commits to the file."""
        async with self._locked("reading data_version") as conn:
            cursor = await conn.execute("PRAGMA data_version")
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def change_version(self) -> int:
        """The change counter: bumped by every `record()` batch and every change of a key set."""
        async with self._locked("reading the change counter") as conn:
            return await _counter(conn)

    async def changes_since(self, version: int) -> tuple[int, Changes]:
        """The change counter now, and what was written after counter value `version`.

        The records (with their keys) of every row recorded or inserted, and
        the keys removed, per instance.
        """
        async with self._locked("reading changes") as conn:
            current = await _counter(conn)
            cursor = await conn.execute(
                _SELECT_RECORDS + " WHERE s.version > ? ORDER BY s.version", (version,)
            )
            rows = await cursor.fetchall()
            cursor = await conn.execute(
                "SELECT instance, key_id FROM removed_keys WHERE version > ? "
                "ORDER BY instance, key_id",
                (version,),
            )
            removed: dict[str, list[int]] = {}
            for instance, key_id in await cursor.fetchall():
                removed.setdefault(str(instance), []).append(int(key_id))
        keys = [KeySetChange(name, removed=tuple(ids)) for name, ids in removed.items()]
        return current, Changes(_to_records(rows), keys)

    async def load_key_records(self, key_ids: Sequence[int]) -> list[KeyRecord]:
        """Every (key, model) record of the keys `key_ids` (the ones still stored)."""
        if not key_ids:
            return []
        ids = orjson.dumps(list(key_ids)).decode()
        async with self._locked("loading keys") as conn:
            cursor = await conn.execute(
                _SELECT_RECORDS + " WHERE s.key_id IN (SELECT value FROM json_each(?)) "
                "ORDER BY s.key_id, s.model",
                (ids,),
            )
            rows = await cursor.fetchall()
        return _to_records(rows)

    def change_feed(self, interval: float = 0.5) -> SqlitePoller:
        """A feed delivering what other processes record, polled every `interval` seconds."""
        return SqlitePoller(self, interval)

    async def delete_instance(self, instance: str) -> int:
        """Delete the instance's provider row, keys and statuses; return the keys deleted."""
        async with self._transaction(f"deleting {instance}") as conn:
            version = await _counter(conn) + 1
            deleted = await _remove_keys(conn, "instance = ?", (instance,), version, time.time())
            await conn.execute("DELETE FROM providers WHERE name = ?", (instance,))
            if deleted:
                await _bump(conn)
        return deleted

    async def key_counts(self) -> dict[str, int]:
        """The number of stored keys of each instance."""
        async with self._locked("counting keys") as conn:
            cursor = await conn.execute(
                "SELECT instance, COUNT(*) FROM api_keys GROUP BY instance ORDER BY instance"
            )
            return {str(name): int(n) for name, n in await cursor.fetchall()}

    async def status_counts(self) -> list[StatusCount]:
        """(key, model) rows counted per instance, model and status."""
        async with self._locked("counting statuses") as conn:
            cursor = await conn.execute(
                "SELECT k.instance, s.model, s.status, COUNT(*) FROM key_model_status AS s "
                "JOIN api_keys AS k ON k.id = s.key_id GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            )
            rows = await cursor.fetchall()
        return [StatusCount(str(i), str(m), parse_status(str(s)), int(n)) for i, m, s, n in rows]

    @asynccontextmanager
    async def _locked(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, held exclusively, with errors translated (reads)."""
        async with self._lock:
            if self._conn is None:
                raise StoreError(f"sqlite: {action} failed: the store is not open")
            with _translated(action):
                yield self._conn

    @asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        """The connection inside `BEGIN IMMEDIATE` ... `COMMIT` (rolled back on any error)."""
        async with self._locked(action) as conn:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")


async def _run_step(conn: aiosqlite.Connection, step: str) -> None:
    """Run a migration's data step on `conn` (inside the migration's transaction)."""
    if step == KEY_FINGERPRINTS:
        cursor = await conn.execute("SELECT id, key_value FROM api_keys")
        keyed = [(int(r[0]), str(r[1])) for r in await cursor.fetchall()]
        await conn.executemany(
            "UPDATE api_keys SET fingerprint = ?, key_mask = ? WHERE id = ?",
            fingerprinted(PLAIN, keyed),
        )
        return
    if step != SCRUB_KEY_MESSAGES:
        raise StoreError(f"sqlite: unknown migration step {step!r}")
    cursor = await conn.execute("SELECT key_value FROM api_keys")
    keys = [str(row[0]) for row in await cursor.fetchall()]
    cursor = await conn.execute(
        "SELECT key_id, model, message FROM key_model_status WHERE message <> ''"
    )
    rows = [(int(r[0]), str(r[1]), str(r[2])) for r in await cursor.fetchall()]
    updates = scrubbed_messages(keys, rows)
    if updates:
        await conn.executemany(
            "UPDATE key_model_status SET message = ? WHERE key_id = ? AND model = ?", updates
        )


def _status_values(r: KeyRecord) -> tuple[Any, ...]:
    """The status columns of `_UPDATE_STATUS` for `r`, in order."""
    return (
        r.status.value,
        to_epoch(r.last_checked_at),
        to_epoch(r.next_check_at),
        to_epoch(r.failing_since),
        r.consecutive_failures,
        r.status_code,
        r.message,
        r.response_ms,
        to_epoch(r.cooldown_until),
        r.reason.value if r.reason is not None else None,
    )


async def _bump(conn: aiosqlite.Connection) -> int:
    """Increment the change counter (inside the caller's write transaction); its new value."""
    cursor = await conn.execute(
        "UPDATE change_counter SET value = value + 1 WHERE id = 1 RETURNING value"
    )
    row = await cursor.fetchone()
    if row is None:
        raise StoreError("sqlite: the change_counter row is missing")
    return int(row[0])


async def _remove_keys(
    conn: aiosqlite.Connection, where: str, args: tuple[Any, ...], version: int, at: float
) -> int:
    """Delete the api_keys rows matching `where` (statuses cascade) and note each in removed_keys.

    Part of the caller's write transaction, which bumps the change counter to
    `version` when anything changed; returns the number of keys deleted.
    Notes older than REMOVED_KEYS_TTL are pruned on the way.
    """
    await conn.execute("DELETE FROM removed_keys WHERE removed_at < ?", (at - REMOVED_KEYS_TTL,))
    await conn.execute(
        "INSERT OR REPLACE INTO removed_keys (key_id, instance, version, removed_at) "
        f"SELECT id, instance, ?, ? FROM api_keys WHERE {where}",
        (version, at, *args),
    )
    cursor = await conn.execute(f"DELETE FROM api_keys WHERE {where}", args)
    return int(cursor.rowcount)


async def _counter(conn: aiosqlite.Connection) -> int:
    cursor = await conn.execute("SELECT value FROM change_counter WHERE id = 1")
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


def _open_lock_file(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a+b")


def _try_flock(handle: IO[bytes]) -> bool:
    """Lock `handle` exclusively if nobody holds it (never blocks); True when locked."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _to_records(rows: Iterable[Any]) -> list[KeyRecord]:
    """KeyRecords from rows selected with RECORD_COLUMNS."""
    return [
        KeyRecord(
            key_id=row[0],
            instance=row[1],
            key=row[2],
            model=row[3],
            status=parse_status(row[4]),
            last_checked_at=from_epoch(row[5]),
            next_check_at=from_epoch(row[6]),
            failing_since=from_epoch(row[7]),
            consecutive_failures=row[8],
            status_code=row[9],
            message=row[10],
            response_ms=row[11],
            cooldown_until=from_epoch(row[12]),
            reason=parse_reason(row[13]),
        )
        for row in rows
    ]
