"""The key admin's reads, written once for both engines: listings, one key, history, rechecks, jobs.

`KeyReads` is a part of `SqlStore`: it runs its statements through the
store's `_read` with numbered placeholders (`Params`), so the same SQL serves
SQLite and PostgreSQL. A listing is keyset-paged on the key id; its total and
facets cover everything the filter matches.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Final

import orjson

from llmgateway.core.constants import Status
from llmgateway.core.models import KeyRecord
from llmgateway.core.threads import on_thread_when
from llmgateway.store import model_statuses
from llmgateway.store.engine import Conn, Dialect, Row
from llmgateway.store.key_admin import (
    HistoryEntry,
    Job,
    JobState,
    KeyFilter,
    KeyPage,
    KeyUsage,
    Selection,
    StoredKey,
    source_of,
)
from llmgateway.store.key_codec import KeyCodec
from llmgateway.store.key_filter import Params, filter_where, selection_where
from llmgateway.store.rows import (
    RECORDS_ON_THREAD,
    decoded_records,
    parse_status,
    to_records,
    unique_ids,
)

MAX_PAGE: Final = 1000
"""The most keys one listing page holds."""

KEYS_PER_FETCH: Final = 500
"""The most keys whose records one statement reads, however many keys the caller names.

asyncpg decodes a result's rows on the event loop, all of them once they have
arrived: the records of 10,000 keys (20,000 rows) held it 100 ms, those of
2,000 keys 11-15 ms on an idle machine and 20-50 ms beside the scale bench's
traffic. The records of 500 keys (1,000 rows of two models) hold it 4.5-6 ms,
and requests are served between two reads; 10,000 keys take 0.50 s to read
instead of 0.39 s."""

_KEY_COLUMNS: Final = (
    "k.id, k.instance, k.key_value, k.fingerprint, k.source_file, "
    "u.requests, u.failures, u.last_used_at"
)
_JOB_COLUMNS: Final = "id, kind, state, done, total, results, created_at, updated_at"


class KeyReads(ABC):
    """Reads of keys, their history and jobs (see `llmgateway.store.protocol.Store`)."""

    sql: Dialect
    codec: KeyCodec

    @abstractmethod
    async def _read[T](self, action: str, run: Callable[[Conn], Awaitable[T]]) -> T:
        """`run` on a connection, errors translated to StoreError naming `action`."""

    @abstractmethod
    async def _write[T](self, action: str, run: Callable[[Conn], Awaitable[T]]) -> T:
        """`run` on a connection inside one transaction (rolled back on any error)."""

    async def _write_statements(
        self, action: str, statements: Sequence[tuple[str, Sequence[object]]]
    ) -> None:
        """Run each `(sql, values)` of `statements`, all in one transaction."""

        async def run(conn: Conn) -> None:
            for sql, values in statements:
                await conn.execute(sql, *values)

        await self._write(action, run)

    def _params(self, *values: object) -> Params:
        return Params(self.sql.engine, *values)

    async def list_keys(self, flt: KeyFilter, *, after: int | None, limit: int) -> KeyPage:
        """One page of the keys `flt` matches (ids above `after`), with the total and facets.

        `limit` is capped at MAX_PAGE. Raises ValueError for an unknown source.
        """
        limit = max(1, min(limit, MAX_PAGE))
        page = self._params()
        where = filter_where(flt, page, self.codec)
        page_sql = (
            f"SELECT k.id FROM api_keys AS k WHERE {where} AND k.id > {page(after or 0)} "
            f"ORDER BY k.id LIMIT {page(limit + 1)}"
        )
        combos = self._params()
        combos_sql = (
            "SELECT k.instance, k.model_statuses, COUNT(*) FROM api_keys AS k "
            f"WHERE {filter_where(flt, combos, self.codec)} GROUP BY k.instance, k.model_statuses"
        )

        async def run(conn: Conn) -> tuple[list[StoredKey], bool, list[Row]]:
            counted = await conn.fetch(combos_sql, *combos.values)
            if not counted:  # nothing matches: no page to look for
                return [], False, counted
            ids = [int(r[0]) for r in await conn.fetch(page_sql, *page.values)]
            items = await self._stored_keys(conn, ids[:limit])
            return items, len(ids) > limit, counted

        items, more, counted = await self._read("listing keys", run)
        facets = _facets(counted, flt.model)
        return KeyPage(
            items=items,
            total=sum(facets["instance"].values()),
            facets=facets,
            next_cursor=items[-1].id if more else None,
        )

    async def get_key(self, key_id: int) -> StoredKey | None:
        """The key `key_id` with its statuses and usage, or None when no such key is stored."""

        async def run(conn: Conn) -> list[StoredKey]:
            return await self._stored_keys(conn, [key_id])

        found = await self._read("reading a key", run)
        return found[0] if found else None

    async def key_history(self, key_id: int, limit: int = 50) -> list[HistoryEntry]:
        """The key's last `limit` status changes, newest first."""
        p = self._params()
        query = (
            "SELECT key_id, model, old_status, new_status, reason, message, at FROM key_history "
            f"WHERE key_id = {p(key_id)} ORDER BY at DESC, id DESC LIMIT {p(max(0, limit))}"
        )
        rows = await self._read("reading key history", lambda conn: conn.fetch(query, *p.values))
        time_in = self.sql.time_in
        return [
            HistoryEntry(
                key_id=int(r[0]),
                model=str(r[1]),
                old=parse_status(str(r[2])),
                new=parse_status(str(r[3])),
                reason=None if r[4] is None else str(r[4]),
                message=str(r[5]),
                at=_required(time_in(r[6])),
            )
            for r in rows
        ]

    async def select_for_recheck(
        self, sel: Selection, models: Sequence[str] | None, after: int | None, limit: int
    ) -> list[KeyRecord]:
        """The (key, model) records to probe again: of up to `limit` selected keys above `after`.

        Disabled rows are left out (a disabled key is never probed); `models`
        narrows the rows to those models. Ordered by key id then model: the
        next call's `after` is the last record's key id.
        """
        p = self._params()
        keys = (
            f"SELECT sk.id FROM api_keys AS sk WHERE {selection_where(sel, p, self.codec, 'sk')} "
            f"AND sk.id > {p(after or 0)} ORDER BY sk.id LIMIT {p(max(0, limit))}"
        )
        query = (
            f"SELECT {self.sql.load_columns} FROM key_model_status AS s JOIN api_keys AS k "
            f"ON k.id = s.key_id WHERE s.key_id IN ({keys}) "
            f"AND s.status <> {p(Status.DISABLED.value)}"
            + (f" AND {p.one_of('s.model', list(models))}" if models is not None else "")
            + " ORDER BY s.key_id, s.model"
        )
        rows = await self._read("selecting keys to recheck", lambda c: c.fetch(query, *p.values))
        return await self._records(rows)

    async def get_job(self, job_id: int) -> Job | None:
        """The job `job_id`, or None when there is no such job."""
        p = self._params()
        query = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = {p(job_id)}"
        rows = await self._read("reading a job", lambda conn: conn.fetch(query, *p.values))
        return self._job(rows[0]) if rows else None

    def _job(self, row: Row) -> Job:
        results = row[5]
        return Job(
            id=int(row[0]),
            kind=str(row[1]),
            state=JobState(str(row[2])),
            done=int(row[3]),
            total=int(row[4]),
            results=dict(orjson.loads(results)) if isinstance(results, str | bytes) else {},
            created_at=_required(self.sql.time_in(row[6])),
            updated_at=_required(self.sql.time_in(row[7])),
        )

    async def load_key_records(self, key_ids: Sequence[int]) -> list[KeyRecord]:
        """Every (key, model) record of the keys `key_ids` (the ones still stored), in order."""
        if not key_ids:
            return []
        rows = await self._read("loading keys", lambda conn: self._record_rows(conn, key_ids))
        return await self._records(rows)

    async def missing_keys(self, key_ids: Sequence[int]) -> list[int]:
        """The ids of `key_ids` that no stored key has, in the order given.

        The store compares them: only the missing ids come back, so checking
        100,000 ids decodes no row when they all exist.
        """
        if not key_ids:
            return []
        p = self._params()
        given = p.rows("g", [("id", "bigint")], [[key_id] for key_id in key_ids])
        query = (
            f"SELECT g.id FROM {given} "
            "WHERE NOT EXISTS (SELECT 1 FROM api_keys AS k WHERE k.id = g.id)"
        )
        rows = await self._read("checking key ids", lambda conn: conn.fetch(query, *p.values))
        missing = {int(row[0]) for row in rows}
        return [key_id for key_id in key_ids if key_id in missing]

    async def _record_rows(self, conn: Conn, key_ids: Sequence[int]) -> list[Row]:
        """The `Dialect.load_columns` rows of the keys `key_ids`, by key id then model.

        Read `KEYS_PER_FETCH` keys at a time, so that no one result holds the
        event loop while it is decoded.
        """
        ids = await unique_ids(key_ids)
        query = self.sql.records_by_key_ids
        rows: list[Row] = []
        for start in range(0, len(ids), KEYS_PER_FETCH):
            rows += await conn.fetch(query, self.sql.array(ids[start : start + KEYS_PER_FETCH]))
        return rows

    async def _records(self, rows: Sequence[Row]) -> list[KeyRecord]:
        """KeyRecords of `Dialect.load_columns` rows, their keys unsealed (`decoded_records`)."""
        return await decoded_records(rows, self.sql.records_time_in, self.codec.unseal)

    async def _stored_keys(self, conn: Conn, ids: Sequence[int]) -> list[StoredKey]:
        """The keys `ids` (those still stored), by id, with their records and usage."""
        if not ids:
            return []
        p = self._params()
        rows = await conn.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys AS k LEFT JOIN key_usage AS u "
            f"ON u.key_id = k.id WHERE {p.id_in('k.id', ids)} ORDER BY k.id",
            *p.values,
        )
        record_rows = await self._record_rows(conn, ids)
        # A page of 1,000 keys took 30 ms of the event loop to decode.
        many = len(record_rows) >= RECORDS_ON_THREAD
        return await on_thread_when(many, _decoded_keys, rows, record_rows, self.codec, self.sql)


def _decoded_keys(
    rows: Sequence[Row], record_rows: Sequence[Row], codec: KeyCodec, sql: Dialect
) -> list[StoredKey]:
    """StoredKeys of `_KEY_COLUMNS` rows, each with its records (`load_columns` rows, by model)."""
    time_in = sql.time_in
    records = to_records(record_rows, sql.records_time_in)
    by_key: dict[int, dict[str, KeyRecord]] = {}
    for record in records:
        by_key.setdefault(record.key_id, {})[record.model] = record
    keys: list[StoredKey] = []
    for row in rows:
        key_id, key = int(row[0]), codec.unseal(str(row[2]))
        models = {m: dataclasses.replace(r, key=key) for m, r in by_key.get(key_id, {}).items()}
        source_file = None if row[4] is None else str(row[4])
        keys.append(
            StoredKey(
                id=key_id,
                instance=str(row[1]),
                key=key,
                fingerprint=str(row[3] or ""),
                source=source_of(source_file),
                source_file=source_file,
                models=models,
                usage=KeyUsage(int(row[5] or 0), int(row[6] or 0), time_in(row[7])),
            )
        )
    return keys


def _facets(counted: Sequence[Row], model: str | None) -> dict[str, dict[str, int]]:
    """The facets from (instance, model_statuses, keys) counts.

    A key counts once under each status of its models (of `model` only, when given).
    """
    instances: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for instance, text, n in counted:
        instances[str(instance)] = instances.get(str(instance), 0) + int(n)
        pairs = model_statuses.decode(text)
        if model is None:
            found = set(pairs.values())
        else:
            found = {pairs[model]} if model in pairs else set()
        for status in found:
            statuses[status] = statuses.get(status, 0) + int(n)
    return {"status": dict(sorted(statuses.items())), "instance": dict(sorted(instances.items()))}


def _required(value: datetime | None) -> datetime:
    if value is None:
        raise ValueError("a NOT NULL time column read as NULL")
    return value
