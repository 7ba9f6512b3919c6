"""Integration fixtures: one store suite, run against SQLite and a real PostgreSQL.

Each PostgreSQL test creates its own uniquely named database on
127.0.0.1:5432 (user postgres) and drops it afterwards.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from llmgateway.store.migrations import Migration
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.sqlite import SqliteStore

PG_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "postgres"}

ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@dataclass(frozen=True, slots=True)
class Database:
    """A fresh, empty database of one engine, and how to reach it."""

    engine: str
    location: str  # the SQLite file, or the PostgreSQL DSN

    def new_store(
        self, migrations: Sequence[Migration] | None = None
    ) -> SqliteStore | PostgresStore:
        """A new, unopened store on this database (`migrations`: the schema to reach)."""
        if self.engine == "sqlite":
            return SqliteStore(Path(self.location), migrations=migrations)
        return PostgresStore(self.location, min_size=1, max_size=4, migrations=migrations)

    async def fetch(self, sql: str) -> list[tuple[object, ...]]:
        """The rows `sql` returns, read on a connection of its own, outside any store."""
        if self.engine == "sqlite":
            with closing(sqlite3.connect(self.location)) as conn:
                return list(conn.execute(sql).fetchall())
        conn = await asyncpg.connect(self.location)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def applied_versions(self) -> list[int]:
        """The migration versions recorded in `schema_migrations`, ascending."""
        rows = await self.fetch("SELECT version FROM schema_migrations ORDER BY version")
        return [int(str(row[0])) for row in rows]

    async def execute(self, sql: str) -> None:
        """Run `sql` on a connection of its own, outside any store (test set-up)."""
        if self.engine == "sqlite":
            with closing(sqlite3.connect(self.location)) as conn, conn:
                conn.execute(sql)
            return
        conn = await asyncpg.connect(self.location)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


@pytest.fixture(params=ENGINES)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database of each engine."""
    if request.param == "sqlite":
        yield Database("sqlite", str(tmp_path / "data" / "llmgateway.db"))
        return
    name = f"llmgw_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(**PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield Database("postgres", f"postgresql://postgres@127.0.0.1:5432/{name}")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def store(database: Database) -> AsyncIterator[SqliteStore | PostgresStore]:
    """An opened (migrated) store on an empty database of each engine."""
    opened = database.new_store()
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
