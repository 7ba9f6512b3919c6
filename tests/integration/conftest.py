"""Integration fixtures: one store suite, run against SQLite and a real PostgreSQL.

Each PostgreSQL test creates its own uniquely named database on
127.0.0.1:5432 (user postgres) and drops it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from llmgateway.store.postgres import PostgresStore
from llmgateway.store.sqlite import SqliteStore
from tests.support.databases import PG_ADMIN, Database

ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


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
