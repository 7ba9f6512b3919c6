"""Migrations 6 and 7 on both engines: keys stored before them get fingerprints, masks, a file mark."""

from __future__ import annotations

from datetime import UTC, datetime

from llmgateway.store import model_statuses
from llmgateway.store.key_codec import PLAIN
from llmgateway.store.migrations import Engine, engine_migrations
from tests.support.databases import Database

KEYS = ["sk-proj-migration-key-one-0123456789", "short-key"]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def test_keys_stored_before_get_fingerprints_and_masks(database: Database) -> None:
    """Every existing key is fingerprinted and masked, and counts as a key file's."""
    shipped = engine_migrations(Engine(database.engine))
    old = database.new_store(migrations=[m for m in shipped if m.version <= 5])
    await old.open()
    try:
        # The rows an earlier release wrote, in the schema of version 5.
        added_at = "0" if database.engine == "sqlite" else "now()"
        await database.execute(
            "INSERT INTO providers (name, provider_type) VALUES ('openai', 'openai_like')"
        )
        for key in KEYS:
            await database.execute(
                "INSERT INTO api_keys (instance, key_value, added_at) "
                f"VALUES ('openai', '{key}', {added_at})"
            )
        await database.execute(
            "INSERT INTO key_model_status (key_id, model, status) "
            f"SELECT id, m, 'valid' FROM api_keys, (SELECT 'gpt' AS m UNION SELECT 'mini') AS ms "
            f"WHERE key_value = '{KEYS[0]}'"
        )
    finally:
        await old.close()

    new = database.new_store()
    await new.open()
    try:
        versions = await database.applied_versions()
    finally:
        await new.close()

    assert versions == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    rows = await database.fetch(
        "SELECT key_value, fingerprint, key_mask, source_file, from_api, model_statuses "
        "FROM api_keys ORDER BY id",
    )
    assert [r[0] for r in rows] == KEYS
    assert [model_statuses.decode(str(r[5])) for r in rows] == [
        {"gpt": "valid", "mini": "valid"},
        {},
    ]
    for key, fingerprint, mask, source_file, from_api, _ in rows:
        assert fingerprint == PLAIN.fingerprint(str(key))
        assert mask == PLAIN.mask(str(key))
        assert source_file == ""
        assert not from_api
    assert await database.fetch("SELECT COUNT(*) FROM jobs") == [(0,)]
