"""Migration 5 on both engines: messages stored by earlier releases lose every form of a key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmgateway.core.masking import mask_key
from llmgateway.store.migrations import Engine, engine_migrations
from tests.fakes.hostile_upstream import key_forms
from tests.support.databases import Database

KEYS = ["AIzaSyMigrationKeyNumberOne0123456789", "sk-proj-migration-key-two-0123456789ab"]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _messages(key: str) -> list[str]:
    """What releases before masking stored: the key quoted in each of its forms, and no key."""
    forms = key_forms(key)
    return [
        f"Consumer 'api_key:{forms['raw']}' has been suspended.",
        f'stream error: {{"consumer": "{forms["json"]}"}}',
        f"HTTP 400: ?key={forms['percent']}&alt=sse echo={forms['base64']}",
        "HTTP 429: quota exceeded",
    ]


async def test_messages_stored_before_masking_are_scrubbed_once(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old database opened by this release has no key left in any stored message."""
    shipped = engine_migrations(Engine(database.engine))
    old = database.new_store(migrations=[m for m in shipped if m.version <= 4])
    await old.open()
    try:
        assert await database.applied_versions() == [1, 2, 3, 4]
        # The rows an earlier release wrote, in the schema of version 4.
        added_at = "0" if database.engine == "sqlite" else "now()"
        await database.execute(
            "INSERT INTO providers (name, provider_type) VALUES ('gem', 'gemini')"
        )
        for key in KEYS:
            await database.execute(
                "INSERT INTO api_keys (instance, key_value, added_at) "
                f"VALUES ('gem', '{key}', {added_at})"
            )
            for m, message in enumerate(_messages(key), 1):
                quoted = message.replace("'", "''")
                await database.execute(
                    "INSERT INTO key_model_status (key_id, model, status, reason, message) "
                    f"SELECT id, 'm{m}', 'no_access', 'no_access', '{quoted}' FROM api_keys "
                    f"WHERE key_value = '{key}'"
                )
    finally:
        await old.close()

    new = database.new_store()
    await new.open()
    try:
        versions = await database.applied_versions()
        stored = await new.load_records()
    finally:
        await new.close()

    assert versions[:5] == [1, 2, 3, 4, 5]
    assert len(stored) == 8
    for record in stored:
        assert all(form not in record.message for k in KEYS for form in key_forms(k).values())
        if record.model == "m4":
            assert record.message == "HTTP 429: quota exceeded"
        else:
            assert mask_key(record.key) in record.message
    assert any(r.message == "Consumer 'api_key:AIza...6789' has been suspended." for r in stored)
