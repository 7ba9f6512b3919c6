"""What the pool and the key admin write about keys as they work: usage, history, jobs.

`KeyActivity` is a part of `SqlStore`, written once for both engines. Usage
increments and history rows come in batches from the write-behind queue
(never from the request path); rows of keys deleted meanwhile are skipped.
Each key's history is pruned to its newest `HISTORY_KEPT` rows as it grows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

import orjson

from llmgateway.store.activity_buffer import add_up
from llmgateway.store.engine import Conn
from llmgateway.store.key_admin import HistoryEntry, Job, JobState, UsageDelta
from llmgateway.store.key_writes import KeyWrites
from llmgateway.store.migrations import Engine
from llmgateway.store.rows import as_utc

MESSAGE_CHARS: Final = 500
"""Characters of a status change's message kept in the history."""

_NEWER: Final = (
    "CASE WHEN excluded.last_used_at IS NULL OR (key_usage.last_used_at IS NOT NULL "
    "AND key_usage.last_used_at > excluded.last_used_at) THEN key_usage.last_used_at "
    "ELSE excluded.last_used_at END"
)

_ADD_USAGE: Final = (
    "ON CONFLICT (key_id) DO UPDATE SET "
    "requests = key_usage.requests + excluded.requests, "
    f"failures = key_usage.failures + excluded.failures, last_used_at = {_NEWER}"
)
_SQLITE_USAGE_ROWS: Final = tuple(1 << n for n in range(8))
"""Rows of the SQLite usage statements, 1 to 128: a batch is cut into the largest, its
last part padded to the next with rows of NULLs (skipped before any lookup)."""

_PADDING: Final = (None, None, None, None)


def _sqlite_add_usage(rows: int) -> str:
    """SQLite: the usage of `rows` keys, their values bound four by four."""
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO key_usage (key_id, requests, failures, last_used_at) "
        f"SELECT column1, column2, column3, column4 FROM (VALUES {values}) "
        "WHERE column1 IS NOT NULL AND EXISTS (SELECT 1 FROM api_keys WHERE id = column1) "
        + _ADD_USAGE
    )


_SQLITE_ADD_USAGE: Final = {rows: _sqlite_add_usage(rows) for rows in _SQLITE_USAGE_ROWS}


def _sqlite_usage_statements(
    rows: Sequence[UsageDelta],
) -> list[tuple[str, Sequence[object]]]:
    """The statements writing `rows` on SQLite, each with its values.

    One statement of many rows, not one run per row: executing a statement
    row by row costs SQLite more than a third again (its reset and binding,
    and the GIL let go and taken back around every step), and a 100,000-key
    pool writes about one row per request. The sizes are powers of two so
    that a few prepared statements serve every batch.
    """
    most = _SQLITE_USAGE_ROWS[-1]
    statements: list[tuple[str, Sequence[object]]] = []
    for start in range(0, len(rows), most):
        part = rows[start : start + most]
        size = next(size for size in _SQLITE_USAGE_ROWS if size >= len(part))
        values: list[object] = [value for row in part for value in row]
        values.extend(_PADDING * (size - len(part)))
        statements.append((_SQLITE_ADD_USAGE[size], values))
    return statements


class KeyActivity(KeyWrites):
    """Usage counters, status history and jobs (see `llmgateway.store.protocol.Store`)."""

    async def record_usage(self, deltas: Sequence[UsageDelta]) -> None:
        """Add each delta to its key's counters (keys no longer stored are skipped)."""
        if not deltas:
            return
        merged: dict[int, UsageDelta] = {}
        add_up(merged, deltas)
        # In key order (a delta is a tuple led by its key's id), so that two processes'
        # batches take PostgreSQL's row locks alike.
        rows = sorted(merged.values())
        if self.sql.engine is Engine.SQLITE:
            await self._write_statements("recording key usage", _sqlite_usage_statements(rows))
            return
        # One jsonb row set: asyncpg's executemany was measured at twice the gateway's CPU a row.
        # The deltas go as plain tuples: orjson encodes no named tuple.
        p = self._params()
        columns = [
            ("key_id", "bigint"),
            ("requests", "bigint"),
            ("failures", "bigint"),
            ("last_used", "float8"),
        ]
        query = (
            "INSERT INTO key_usage (key_id, requests, failures, last_used_at) "
            "SELECT u.key_id, u.requests, u.failures, to_timestamp(u.last_used) "
            f"FROM {p.rows('u', columns, [tuple(row) for row in rows])} "
            "WHERE u.key_id IN (SELECT id FROM api_keys) " + _ADD_USAGE
        )
        await self._write("recording key usage", lambda conn: conn.execute(query, *p.values))

    async def record_history(self, entries: Sequence[HistoryEntry]) -> None:
        """Append status changes to their keys' history, then prune each key to its newest rows."""
        if not entries:
            return
        rows = [
            (
                e.key_id,
                e.model,
                e.old.value,
                e.new.value,
                e.reason,
                e.message[:MESSAGE_CHARS],
                self.sql.time_out(e.at),
            )
            for e in entries
        ]
        columns = [
            ("key_id", "bigint"),
            ("model", "text"),
            ("old_status", "text"),
            ("new_status", "text"),
            ("reason", "text"),
            ("message", "text"),
            ("at", "timestamptz"),
        ]
        p = self._params()
        query = (
            "INSERT INTO key_history (key_id, model, old_status, new_status, reason, message, at) "
            "SELECT h.key_id, h.model, h.old_status, h.new_status, h.reason, h.message, h.at "
            f"FROM {p.rows('h', columns, rows)} "
            "WHERE h.key_id IN (SELECT id FROM api_keys)"
        )
        touched = sorted({e.key_id for e in entries})

        async def run(conn: Conn) -> None:
            await conn.execute(query, *p.values)
            await self._prune_history(conn, touched)

        await self._write("recording key history", run)

    async def create_job(self, kind: str, total: int, now: datetime) -> Job:
        """A new running job of `kind` over `total` items, none done yet."""
        p = self._params()
        at = p.time(now)
        query = (
            "INSERT INTO jobs (kind, state, done, total, results, created_at, updated_at) "
            f"VALUES ({p(kind)}, {p(JobState.RUNNING.value)}, 0, {p(total)}, "
            f"{p.typed('{}', 'jsonb')}, {at}, {at}) RETURNING id"
        )
        rows = await self._write("creating a job", lambda conn: conn.fetch(query, *p.values))
        when = as_utc(now)
        return Job(int(rows[0][0]), kind, JobState.RUNNING, 0, total, {}, when, when)

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
        """Set the given fields of the job `job_id` (the others stay) and its `updated_at`."""
        p = self._params()
        sets = [f"updated_at = {p.time(now)}"]
        if done is not None:
            sets.append(f"done = {p(done)}")
        if total is not None:
            sets.append(f"total = {p(total)}")
        if state is not None:
            sets.append(f"state = {p(state.value)}")
        if results is not None:
            sets.append(f"results = {p.typed(orjson.dumps(dict(results)).decode(), 'jsonb')}")
        query = f"UPDATE jobs SET {', '.join(sets)} WHERE id = {p(job_id)}"
        await self._write("updating a job", lambda conn: conn.execute(query, *p.values))
