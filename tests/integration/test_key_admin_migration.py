"""Migrations 6 and 7 on both engines: keys stored before them get fingerprints, masks, a file mark."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime

import asyncpg

from llmgateway.core.constants import ProviderType
from llmgateway.store.key_codec import PLAIN
from llmgateway.store.migrations import Engine, engine_migrations
from tests.integration.conftest import Database

KEYS = ["sk-proj-migration-key-one-0123456789", "short-key"]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def _fetch(database: Database, sql: str) -> list[tuple[object, ...]]:
    if database.engine == "sqlite":
        with closing(sqlite3.connect(database.location)) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
    conn = await asyncpg.connect(database.location)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_keys_stored_before_get_fingerprints_and_masks(database: Database) -> None:
    """Every existing key is fingerprinted and masked, and counts as a key file's."""
    shipped = engine_migrations(Engine(database.engine))
    old = database.new_store(migrations=[m for m in shipped if m.version <= 5])
    await old.open()
    try:
        await old.sync_providers([("openai", ProviderType.OPENAI_LIKE)])
        await old.sync_keys("openai", KEYS, ["gpt"], NOW)
    finally:
        await old.close()

    new = database.new_store()
    await new.open()
    try:
        versions = await new.applied_versions()
    finally:
        await new.close()

    assert versions == [1, 2, 3, 4, 5, 6, 7]
    rows = await _fetch(
        database,
        "SELECT key_value, fingerprint, key_mask, source_file, from_api FROM api_keys ORDER BY id",
    )
    assert [r[0] for r in rows] == KEYS
    for key, fingerprint, mask, source_file, from_api in rows:
        assert fingerprint == PLAIN.fingerprint(str(key))
        assert mask == PLAIN.mask(str(key))
        assert source_file == ""
        assert not from_api
    assert await _fetch(database, "SELECT COUNT(*) FROM jobs") == [(0,)]
