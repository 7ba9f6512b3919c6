"""Store benchmark: syncing and loading a 100,000-key pool on SQLite and PostgreSQL.

Usage: .venv/bin/python bench/store_bench.py [--keys 100000] [--models 1] [--engine sqlite|postgres]
PostgreSQL runs on a throw-away database created on 127.0.0.1:5432 (user postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from llmgateway.core.constants import ProviderType, Status
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.protocol import Store
from llmgateway.store.sqlite import SqliteStore

INSTANCE = "bench"


@asynccontextmanager
async def sqlite_store() -> AsyncIterator[SqliteStore]:
    """A migrated store on a file in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "bench.db")
        await store.open()
        try:
            yield store
        finally:
            await store.close()


@asynccontextmanager
async def postgres_store() -> AsyncIterator[PostgresStore]:
    """A migrated store on a database created for this run and dropped after it."""
    name = f"llmgw_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:5432/{name}", 1, 4)
    try:
        await store.open()
        yield store
    finally:
        await store.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def timed(label: str, action: Callable[[], Awaitable[Any]]) -> Any:
    """Run `action`, print how long it took, return its result."""
    start = time.perf_counter()
    result = await action()
    print(f"  {label:<44} {time.perf_counter() - start:8.3f} s")
    return result


async def bench(store: Store, count: int, model_count: int) -> None:
    """The measured operations, in the order a gateway meets them."""
    now = datetime.now(UTC)
    models = [f"model-{i}" for i in range(model_count)]
    keys = [f"sk-bench-{uuid.uuid4().hex}" for _ in range(count)]
    await store.sync_providers([(INSTANCE, ProviderType.OPENAI_LIKE)])

    report = await timed(
        f"sync_keys {count:,} new keys x {model_count} model(s)",
        lambda: store.sync_keys(INSTANCE, keys, models, now),
    )
    assert report.added == count, report
    records = await timed(
        f"load_records ({count * model_count:,} rows)", lambda: store.load_records(INSTANCE)
    )
    assert len(records) == count * model_count
    report = await timed(
        "sync_keys again, nothing changed", lambda: store.sync_keys(INSTANCE, keys, models, now)
    )
    assert report.added == report.removed == 0, report
    changed = keys[1000:] + [f"sk-bench-new-{i}" for i in range(1000)]
    report = await timed(
        "sync_keys again, 1,000 removed + 1,000 added",
        lambda: store.sync_keys(INSTANCE, changed, models, now),
    )
    assert report.added == report.removed == 1000, report
    records = await store.load_records(INSTANCE)
    due = await timed(
        "lease_due limit 100 (all due)",
        lambda: store.lease_due([INSTANCE], now + timedelta(seconds=1), 100, "bench", 60.0),
    )
    assert len(due) == 100
    checked = [
        replace(r, status=Status.VALID, last_checked_at=now, next_check_at=now + timedelta(days=1))
        for r in records
    ]
    await timed("record one write-queue batch of 500", lambda: store.record(checked[:500]))
    await timed(f"record all {len(checked):,} rows in one call", lambda: store.record(checked))
    ids = [r.key_id for r in records[:1000]]
    await timed("load_key_records of 1,000 keys", lambda: store.load_key_records(ids))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=1)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], action="append")
    args = parser.parse_args()
    for engine in args.engine or ["sqlite", "postgres"]:
        print(f"{engine}:")
        if engine == "sqlite":
            async with sqlite_store() as lite:
                await bench(lite, args.keys, args.models)
        else:
            async with postgres_store() as pg:
                await bench(pg, args.keys, args.models)


if __name__ == "__main__":
    asyncio.run(main())
