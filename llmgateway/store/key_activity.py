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

from llmgateway.store.activity_buffer import merged as merge_usage
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
_ADD_USAGE_ROW: Final = (
    "INSERT INTO key_usage (key_id, requests, failures, last_used_at) "
    "SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = $1) " + _ADD_USAGE
)
"""SQLite: one key's usage, run once per row of a batch (the statement is prepared once)."""


class KeyActivity(KeyWrites):
    """Usage counters, status history and jobs (see `llmgateway.store.protocol.Store`)."""

    async def record_usage(self, deltas: Sequence[UsageDelta]) -> None:
        """Add each delta to its key's counters (keys no longer stored are skipped)."""
        if not deltas:
            return
        merged: dict[int, UsageDelta] = {}
        for d in deltas:
            old = merged.get(d.key_id)
            merged[d.key_id] = d if old is None else merge_usage(old, d)
        time_out = self.sql.time_out
        rows = [
            (d.key_id, d.requests, d.failures, time_out(d.last_used_at))
            for d in (merged[k] for k in sorted(merged))
        ]
        if self.sql.engine is Engine.SQLITE:
            # Each row bound as plain values: about 20% less CPU a row than a JSON row set
            # (a pool of 100,000 keys writes one row per request). Not on PostgreSQL, where
            # asyncpg's executemany costs the gateway about twice the CPU of one jsonb set.
            await self._write(
                "recording key usage", lambda conn: conn.executemany(_ADD_USAGE_ROW, rows)
            )
            return
        p = self._params()
        columns = [
            ("key_id", "bigint"),
            ("requests", "bigint"),
            ("failures", "bigint"),
            ("last_used_at", "timestamptz"),
        ]
        query = (
            "INSERT INTO key_usage (key_id, requests, failures, last_used_at) "
            f"SELECT u.key_id, u.requests, u.failures, u.last_used_at FROM {p.rows('u', columns, rows)} "
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
