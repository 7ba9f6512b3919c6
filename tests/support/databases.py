"""A fresh PostgreSQL database for one test, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Protocol

import asyncpg

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
