"""The edits of an instance's keys, written once for both engines: sync, import, delete, disable.

`KeyWrites` is a part of `SqlStore`. Every statement is set-based: a list of
keys or ids travels as one bound value (`Params.rows`, `Params.one_of`), so a
sync or an import of 100,000 keys, or a delete matching 50,000, is a handful
of statements. What differs between the engines is how a change is announced
to the other processes (see `llmgateway.store.changes`), behind three hooks:
`_stamp` (SQLite: the change counter value that tags the rows written),
`_remove_ids` (SQLite also notes removed keys) and `_announce` (PostgreSQL's
NOTIFY).
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from llmgateway.core.constants import Status
from llmgateway.core.errors import StoreError
from llmgateway.core.memory import release
from llmgateway.core.models import KeyRecord
from llmgateway.store import model_statuses
from llmgateway.store.changes import KeySetChange
from llmgateway.store.engine import PROVIDER_EXISTS, Conn, Row
from llmgateway.store.json_array import JsonArray
from llmgateway.store.key_admin import (
    HISTORY_KEPT,
    AddReport,
    DeleteReport,
    Selection,
    refusal,
)
from llmgateway.store.key_codec import KeyCodec, StoredRow, stored_rows
from llmgateway.store.key_filter import Params, selection_where
from llmgateway.store.key_reads import KeyReads
from llmgateway.store.protocol import KeySyncReport
from llmgateway.store.rows import as_utc, sorted_ids, unique_ids

HAND_DISABLED: Final = "disabled by hand"
"""The history message of a key disabled through the key admin."""

HAND_ENABLED: Final = "enabled by hand"
"""The history message of a key enabled again through the key admin."""

_WANTED: Final = (
    ("fingerprint", "text"),
    ("key_value", "text"),
    ("key_mask", "text"),
    ("source_file", "text"),
    ("n", "bigint"),
)
"""The columns of the keys a sync or an import stores (`n`: their order)."""


@dataclass(frozen=True, slots=True)
class _SyncRows:
    """What a key sync binds: its rows, and the columns each statement reads, as JSON text.

    Each statement binds only the columns it reads (a sync re-sends every
    key). All three are made on a thread and kept as text only: built, or
    merely freed, on the event loop, 100,000 rows' worth of Python objects
    would hold it for tens of milliseconds.
    """

    rows: JsonArray
    """The `StoredRow` of each key (see `_WANTED`)."""
    fingerprints: JsonArray
    named: JsonArray
    """(fingerprint, file) of each key read from a file."""

    @classmethod
    def of(cls, codec: KeyCodec, keys: Sequence[str], files: Mapping[str, str] | None) -> _SyncRows:
        """The rows of `keys` (`stored_rows`) and their columns (blocking: run it on a thread)."""
        rows = stored_rows(codec, keys, files)
        fingerprints: list[str] = []
        named: list[tuple[str, str]] = []
        for row in rows:
            fingerprints.append(row[0])
            if row[3] is not None:
                named.append((row[0], row[3]))
        made = cls(
            JsonArray.encoded(rows), JsonArray.encoded(fingerprints), JsonArray.encoded(named)
        )
        for values in (named, fingerprints, rows):
            release(values)
        return made


def _import_rows(codec: KeyCodec, keys: Sequence[str]) -> tuple[_SyncRows, int]:
    """The rows of an import's `keys` and how many keys were not blank (blocking: for a thread)."""
    given = [key for key in keys if key]
    return _SyncRows.of(codec, given, None), len(given)


class KeyWrites(KeyReads):
    """Key sync, import, delete and disable on both engines (see `llmgateway.store.protocol.Store`)."""

    @abstractmethod
    async def _stamp(self, conn: Conn) -> int | None:
        """The version to tag the rows this transaction writes with (SQLite), or None (PostgreSQL)."""

    @abstractmethod
    async def _remove_ids(
        self, conn: Conn, instance: str, ids: Sequence[int], stamp: int | None
    ) -> None:
        """Delete the keys `ids` of `instance` (their rows cascade), noting them for the feeds."""

    async def _refresh_statistics(self, changed: int) -> None:
        """After a bulk change of `changed` keys, let the engine refresh its planner statistics."""

    @abstractmethod
    async def _announce(
        self, conn: Conn, records: Sequence[KeyRecord], changes: Sequence[KeySetChange]
    ) -> None:
        """Announce changed statuses and key sets to the other processes, on commit."""

    async def sync_keys(
        self,
        instance: str,
        keys: Sequence[str],
        models: Sequence[str],
        now: datetime,
        *,
        files: Mapping[str, str] | None = None,
    ) -> KeySyncReport:
        """Make the instance's file keys and (key, model) rows match `keys` × `models`, in one transaction.

        `files` names the file of each key, as configured (a key it does not
        name is recorded in an unnamed file). Keys added through the key admin
        are never deleted; disabled keys stay disabled. Raises StoreError when
        `instance` has no provider row. After a large change the engine may
        refresh its planner statistics (`_refresh_statistics`).
        """
        rows = await asyncio.to_thread(_SyncRows.of, self.codec, keys, files)
        model_list = list(dict.fromkeys(models))

        async def run(conn: Conn) -> tuple[int, int]:
            if not await conn.fetch(PROVIDER_EXISTS, instance):
                raise StoreError(f"unknown instance {instance!r}: sync_providers first")
            return await self._sync_rows(conn, instance, rows, model_list, as_utc(now))

        added, removed = await self._write(f"syncing keys of {instance}", run)
        await self._refresh_statistics(added + removed)
        return KeySyncReport(added=added, removed=removed, total=len(rows.rows))

    async def _sync_rows(
        self,
        conn: Conn,
        instance: str,
        rows: _SyncRows,
        models: list[str],
        at: datetime,
    ) -> tuple[int, int]:
        """Make the instance's file keys match `rows` and its model rows `models`; (added, removed).

        File keys not in `rows` are deleted, unless they were also added
        through the key admin: those only lose their file mark. Keys in
        `rows` already stored take the file they are in now. New model rows
        of a disabled key are disabled too.
        """
        stamp = await self._stamp(conn)
        fingerprints = rows.fingerprints
        p = self._params()
        removed = await self._returned_ids(
            conn,
            f"SELECT k.id FROM api_keys AS k WHERE k.instance = {p(instance)} "
            "AND k.source_file IS NOT NULL AND k.from_api = FALSE AND "
            f"{p.none_of('k.fingerprint', fingerprints)}",
            p.values,
        )
        if removed:
            await self._remove_ids(conn, instance, removed, stamp)
        p = self._params()
        await conn.execute(
            f"UPDATE api_keys SET source_file = NULL WHERE instance = {p(instance)} "
            "AND from_api = TRUE AND source_file IS NOT NULL AND "
            f"{p.none_of('api_keys.fingerprint', fingerprints)}",
            *p.values,
        )
        named = rows.named
        if named:
            p = self._params()
            files = p.with_rows("w", [("fingerprint", "text"), ("source_file", "text")], named)
            await conn.execute(
                f"{files}UPDATE api_keys SET source_file = w.source_file FROM w "
                f"WHERE api_keys.instance = {p(instance)} AND api_keys.fingerprint = w.fingerprint "
                "AND (api_keys.source_file IS NULL OR api_keys.source_file <> w.source_file)",
                *p.values,
            )
        added = await self._insert_keys(conn, instance, rows.rows, models, from_api=False, at=at)
        dropped, created = await self._sync_models(conn, instance, models, at, stamp)
        if dropped or created > len(added) * len(models):
            await self._refresh_statuses(conn, instance=instance)  # the models changed
        if added or removed:
            await self._announce(conn, (), [KeySetChange(instance, tuple(added), tuple(removed))])
        return len(added), len(removed)

    async def _insert_keys(
        self,
        conn: Conn,
        instance: str,
        rows: Sequence[StoredRow] | JsonArray,
        models: Sequence[str],
        *,
        from_api: bool,
        at: datetime,
    ) -> list[int]:
        """Insert the keys of `rows` the instance does not hold yet; their new ids.

        Their `model_statuses` say `untested` for each of `models`: the rows
        the caller inserts next.
        """
        untested = model_statuses.encode((m, Status.UNTESTED.value) for m in models)
        p = self._params()
        wanted = p.rows("w", _WANTED, rows)
        name = p(instance)
        source = "NULL" if from_api else "COALESCE(w.source_file, '')"
        return await self._returned_ids(
            conn,
            "INSERT INTO api_keys (instance, key_value, fingerprint, key_mask, source_file, "
            f"from_api, added_at, model_statuses) SELECT {name}, w.key_value, w.fingerprint, "
            f"w.key_mask, {source}, {'TRUE' if from_api else 'FALSE'}, {p.time(at)}, "
            f"{p(untested)} FROM {wanted} "
            "WHERE NOT EXISTS (SELECT 1 FROM api_keys AS a "
            f"WHERE a.instance = {name} AND a.fingerprint = w.fingerprint) "
            "ORDER BY w.n ON CONFLICT DO NOTHING RETURNING id",
            p.values,
        )

    async def _returned_ids(self, conn: Conn, sql: str, values: Sequence[object]) -> list[int]:
        """The ids (column `id`) a query or a statement ending in `RETURNING id` returns, ascending.

        SQLite's rows are made on the connection's thread; PostgreSQL's
        engine overrides this so that 100,000 ids arrive as one value.
        """
        return await sorted_ids(await conn.fetch(sql, *values))

    async def _sync_models(
        self, conn: Conn, instance: str, models: list[str], at: datetime, stamp: int | None
    ) -> tuple[int, int]:
        """Give every key of the instance one row per model of `models`, and no other.

        Returns the numbers of rows deleted and created.
        """
        p = self._params()
        dropped = await conn.execute(
            f"DELETE FROM key_model_status WHERE key_id IN (SELECT id FROM api_keys "
            f"WHERE instance = {p(instance)}) AND NOT ({p.one_of('model', models)})",
            *p.values,
        )
        p = self._params()
        created = await conn.execute(
            "INSERT INTO key_model_status (key_id, model, status, next_check_at, version) "
            f"SELECT k.id, m.model, CASE WHEN d.key_id IS NULL THEN {p(Status.UNTESTED.value)} "
            f"ELSE {p(Status.DISABLED.value)} END, CASE WHEN d.key_id IS NULL THEN {p.time(at)} "
            f"END, {p(stamp or 0)} FROM api_keys AS k "
            f"CROSS JOIN {p.rows('m', [('model', 'text')], [[m] for m in models])} "
            "LEFT JOIN (SELECT DISTINCT key_id FROM key_model_status "
            f"WHERE status = {p(Status.DISABLED.value)}) AS d ON d.key_id = k.id "
            f"WHERE k.instance = {p(instance)} AND NOT EXISTS (SELECT 1 FROM key_model_status "
            "AS s WHERE s.key_id = k.id AND s.model = m.model) ON CONFLICT DO NOTHING",
            *p.values,
        )
        return dropped, created

    async def add_keys(
        self, instance: str, keys: Sequence[str], models: Sequence[str], now: datetime
    ) -> AddReport:
        """Store `keys` as keys of `instance` added through the key admin, untested for `models`.

        A key the instance already holds (or given twice) counts as a
        duplicate; one held only by a key file is marked as added through the
        key admin too, so it stays when it leaves its file. The new keys are
        announced to the other processes. Raises StoreError for an unknown instance.
        """
        # Made on a thread as JSON text, the rows freed there: 100,000 row tuples freed on
        # the loop when this returned held it for 7 ms and more.
        rows, given = await asyncio.to_thread(_import_rows, self.codec, keys)
        model_list = list(dict.fromkeys(models))
        at = as_utc(now)

        async def run(conn: Conn) -> list[int]:
            if not await conn.fetch(PROVIDER_EXISTS, instance):
                raise StoreError(f"unknown instance {instance!r}")
            stamp = await self._stamp(conn)
            p = self._params()
            await conn.execute(
                f"UPDATE api_keys SET from_api = TRUE WHERE instance = {p(instance)} "
                f"AND from_api = FALSE AND {p.one_of('fingerprint', rows.fingerprints)}",
                *p.values,
            )
            added = await self._insert_keys(
                conn, instance, rows.rows, model_list, from_api=True, at=at
            )
            if added:
                p = self._params()
                await conn.execute(
                    "INSERT INTO key_model_status (key_id, model, status, next_check_at, "
                    f"version) SELECT k.id, m.model, {p(Status.UNTESTED.value)}, {p.time(at)}, "
                    f"{p(stamp or 0)} FROM api_keys AS k CROSS JOIN "
                    f"{p.rows('m', [('model', 'text')], [[m] for m in model_list])} "
                    f"WHERE {p.id_in('k.id', added)} ON CONFLICT DO NOTHING",
                    *p.values,
                )
                await self._announce(conn, (), [KeySetChange(instance, added=tuple(added))])
            return added

        added = await self._write(f"adding keys to {instance}", run)
        await self._refresh_statistics(len(added))
        return AddReport(added=added, duplicates=given - len(added))

    async def delete_keys(self, sel: Selection) -> DeleteReport:
        """Delete the selected keys added through the key admin; refuse those a key file holds.

        Each refusal names the file to edit. Ids that are not stored are
        neither deleted nor refused. The removals are announced.
        """

        async def run(conn: Conn) -> DeleteReport:
            # Three reads, so that no one result carries a row per selected key: the file
            # keys (refused; as many as the selection only when it names the files' keys),
            # the instances, and each instance's ids as `_returned_ids` (one value).
            p = self._params()
            where = selection_where(sel, p, self.codec)
            rows = await conn.fetch(
                "SELECT k.id, k.instance, k.source_file FROM api_keys AS k "
                f"WHERE {where} AND k.source_file IS NOT NULL ORDER BY k.id",
                *p.values,
            )
            refused = [(int(r[0]), refusal(str(r[1]), str(r[2]))) for r in rows]
            instances = await conn.fetch(
                f"SELECT DISTINCT k.instance FROM api_keys AS k WHERE {where} "
                "AND k.source_file IS NULL ORDER BY k.instance",
                *p.values,
            )
            doomed: dict[str, list[int]] = {}
            for (instance,) in instances:
                q = self._params()
                ids = await self._returned_ids(
                    conn,
                    f"SELECT k.id FROM api_keys AS k WHERE {selection_where(sel, q, self.codec)} "
                    f"AND k.source_file IS NULL AND k.instance = {q(str(instance))}",
                    q.values,
                )
                doomed[str(instance)] = ids
            if doomed:
                stamp = await self._stamp(conn)
                for instance, ids in doomed.items():
                    await self._remove_ids(conn, instance, ids, stamp)
                await self._announce(
                    conn, (), [KeySetChange(i, removed=tuple(ids)) for i, ids in doomed.items()]
                )
            deleted = sorted(i for ids in doomed.values() for i in ids)
            return DeleteReport(deleted=deleted, refused=refused)

        report = await self._write("deleting keys", run)
        await self._refresh_statistics(len(report.deleted))
        return report

    async def set_disabled(self, sel: Selection, disabled: bool, now: datetime) -> list[KeyRecord]:
        """Disable (or enable) every model of the selected keys; the rows that changed.

        Disabled rows leave checking (no `next_check_at`); enabled ones become
        `untested`, due at `now`. Either way `last_checked_at` is `now`, so
        the change wins over what other processes hold. Each change is
        written to the key's history and announced.
        """
        at = as_utc(now)
        new, message = (
            (Status.DISABLED, HAND_DISABLED) if disabled else (Status.UNTESTED, HAND_ENABLED)
        )
        which = "<>" if disabled else "="

        def target(p: Params) -> str:
            keys = selection_where(sel, p, self.codec)
            return (
                f"s.key_id IN (SELECT k.id FROM api_keys AS k WHERE {keys}) "
                f"AND s.status {which} {p(Status.DISABLED.value)}"
            )

        async def run(conn: Conn) -> list[KeyRecord]:
            stamp = await self._stamp(conn)
            p = self._params()
            await conn.execute(
                "INSERT INTO key_history (key_id, model, old_status, new_status, reason, "
                f"message, at) SELECT s.key_id, s.model, s.status, {p(new.value)}, NULL, "
                f"{p(message)}, {p.time(at)} FROM key_model_status AS s WHERE {target(p)}",
                *p.values,
            )
            p = self._params()
            version = "s.version + 1" if stamp is None else p(stamp)
            due = "NULL" if disabled else p.time(at)
            changed = await conn.fetch(
                f"UPDATE key_model_status AS s SET status = {p(new.value)}, "
                f"last_checked_at = {p.time(at)}, next_check_at = {due}, failing_since = NULL, "
                "consecutive_failures = 0, status_code = NULL, message = '', "
                "response_ms = NULL, cooldown_until = NULL, reason = NULL, lease_owner = NULL, "
                f"lease_until = NULL, version = {version} WHERE {target(p)} "
                "RETURNING key_id, model",
                *p.values,
            )
            records, key_ids = await self._changed_records(conn, changed)
            # History grows by a row per model here; the next status change pruning a key's
            # history trims it (pruning 50,000 keys' history here would double the time).
            await self._refresh_statuses(conn, key_ids)
            await self._announce(conn, records, ())
            return records

        # No statistics refresh: listings read api_keys, whose rows did not come or go.
        return await self._write("disabling keys" if disabled else "enabling keys", run)

    async def _refresh_statuses(
        self, conn: Conn, key_ids: Sequence[int] = (), *, instance: str | None = None
    ) -> None:
        """Recompute `model_statuses` of the keys `key_ids` (or of every key of `instance`).

        Every write that changes status rows calls it in its transaction (see
        `llmgateway.store.model_statuses`); new keys get theirs on insert.
        """
        p = self._params()
        if instance is not None:
            keys = f"x.key_id IN (SELECT id FROM api_keys WHERE instance = {p(instance)})"
        elif key_ids:
            keys = p.id_in("x.key_id", await unique_ids(key_ids))
        else:
            return
        await conn.execute(model_statuses.refresh_sql(self.sql.engine, keys), *p.values)

    async def _changed_records(
        self, conn: Conn, changed: list[Row]
    ) -> tuple[list[KeyRecord], list[int]]:
        """The records of the (key_id, model) rows `changed`, in (key_id, model) order; their keys.

        The key ids come sorted, each once; `changed` is emptied. A change of
        100,000 keys returns 200,000 rows: they are sorted out, the records
        picked, and every row read freed on threads, since going through them
        or freeing them takes the event loop tens of milliseconds.
        """
        if not changed:
            return [], []
        pairs, key_ids = await asyncio.to_thread(_sorted_out, changed)
        rows = await self._record_rows(conn, key_ids)
        records = await self._records(rows)
        return await asyncio.to_thread(_picked, records, pairs, rows), key_ids

    async def _prune_history(self, conn: Conn, key_ids: Sequence[int]) -> None:
        """Keep the newest HISTORY_KEPT history rows of each key of `key_ids`."""
        if not key_ids:
            return
        p = self._params()
        await conn.execute(
            "DELETE FROM key_history WHERE id IN (SELECT h.id FROM (SELECT id, ROW_NUMBER() "
            "OVER (PARTITION BY key_id ORDER BY at DESC, id DESC) AS n FROM key_history "
            f"WHERE {p.id_in('key_id', key_ids)}) AS h WHERE h.n > {p(HISTORY_KEPT)})",
            *p.values,
        )


def _sorted_out(rows: list[Row]) -> tuple[set[tuple[int, str]], list[int]]:
    """The (key_id, model) pairs of `rows`, and their key ids sorted, each once; `rows` emptied."""
    pairs = {(int(r[0]), str(r[1])) for r in rows}
    release(rows)
    return pairs, sorted({key_id for key_id, _ in pairs})


def _picked(
    records: Sequence[KeyRecord], pairs: set[tuple[int, str]], rows: list[Row]
) -> list[KeyRecord]:
    """The records of `records` whose (key_id, model) is one of `pairs`, in their order.

    `pairs` and the rows the records were read from are emptied (a pair or
    a slice at a time: the loop's thread gets the GIL in between).
    """
    picked = [r for r in records if (r.key_id, r.model) in pairs]
    release(rows)
    while pairs:
        pairs.pop()
    return picked
