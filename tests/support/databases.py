"""Databases for tests: a fresh one of each engine, and how to reach it outside any store."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import asyncpg

from llmgateway.store.migrations import Migration
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.sqlite import SqliteStore

PG_ADMIN: Final = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "postgres"}
"""How tests reach the PostgreSQL server as its administrator (trust authentication)."""


class Settable(Protocol):
    """A configuration under construction (`GatewayConfig`)."""

    def set(self, dotted: str, value: object) -> None:
        """Set one value by its dotted YAML path."""


@asynccontextmanager
async def postgres_database(
    prefix: str, config: Settable | None = None, pool_max_size: int | None = None
) -> AsyncIterator[str]:
    """Create a uniquely named database; yield its DSN; drop it (connections and all).

    With `config`, its `database.url` (and `database.pool_max_size` when
    given) point at the new database.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    admin = await asyncpg.connect(**PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        if config is not None:
            config.set("database.url", dsn)
            if pool_max_size is not None:
                config.set("database.pool_max_size", pool_max_size)
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


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
