"""`llmgateway keys encrypt | decrypt | rotate-encryption-key` and `status` on an encrypted store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner, Result

from llmgateway.cli.common import EXIT_CONFIG_ERROR
from llmgateway.cli.main import main
from llmgateway.store import open_store
from tests.support.gateway import MODELS, OPENAI, TOKENS, build_config

KEYS = [f"sk-cli-crypto-{n}-0123456789abcdef" for n in range(4)]
OLD = bytes(range(32)).hex()
NEW = bytes(range(1, 33)).hex()
VARIABLE = "LLMGW_ENCRYPTION_KEY"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _seeded(tmp_path: Path) -> Path:
    """A configuration reading its key from $LLMGW_ENCRYPTION_KEY, on a store of clear keys."""
    config = build_config(tmp_path, "http://127.0.0.1:9", {OPENAI: KEYS})

    async def seed() -> None:
        accessor = config.accessor()
        store = open_store(accessor.database)
        await store.open()
        try:
            await store.sync_providers([(p.name, p.provider_type) for p in accessor.providers()])
            await store.sync_keys(OPENAI, KEYS, [MODELS[OPENAI]], NOW)
        finally:
            await store.close()

    asyncio.run(seed())
    config.set("database.encryption_key", "${" + VARIABLE + ":-}")
    return config.write()


def _run(path: Path, *args: str, key: str = "", new: str | None = None, given: str = "") -> Result:
    env = {VARIABLE: key, "LLMGW_NEW_ENCRYPTION_KEY": new}
    return CliRunner().invoke(main, [*args, "--config", str(path)], env=env, input=given)


def _status_ok(path: Path, key: str) -> bool:
    result = _run(path, "status", "--json", key=key)
    return result.exit_code == 0 and '"keys_total": 4' in result.output


def test_encrypt_rotate_decrypt_through_the_cli(tmp_path: Path) -> None:
    """Each step rewrites the 4 keys; `status` then opens the store with the right key only."""
    path = _seeded(tmp_path)
    refused = _run(path, "status", key=OLD)
    assert refused.exit_code == EXIT_CONFIG_ERROR
    assert "llmgateway keys encrypt" in refused.output

    result = _run(path, "keys", "encrypt", key=OLD)
    assert result.exit_code == 0, result.output
    assert "4 keys encrypted" in result.output
    assert _status_ok(path, OLD)
    for wrong in ("", NEW):
        refused = _run(path, "status", key=wrong)
        assert refused.exit_code == EXIT_CONFIG_ERROR, refused.output
    assert "already encrypted" in _run(path, "keys", "encrypt", key=OLD).output

    result = _run(path, "keys", "rotate-encryption-key", key=OLD, new=NEW)
    assert result.exit_code == 0, result.output
    assert "4 keys re-encrypted" in result.output
    assert _status_ok(path, NEW) and not _status_ok(path, OLD)

    result = _run(path, "keys", "decrypt", key=NEW)
    assert result.exit_code == 0, result.output
    assert "4 keys decrypted" in result.output
    assert _status_ok(path, "") and not _status_ok(path, NEW)
    assert not any(k in result.output for k in [OLD, NEW, *KEYS])


def test_the_new_key_may_be_typed_at_a_prompt(tmp_path: Path) -> None:
    """Without $LLMGW_NEW_ENCRYPTION_KEY the new key is asked for twice, hidden."""
    path = _seeded(tmp_path)
    assert _run(path, "keys", "encrypt", key=OLD).exit_code == 0
    result = _run(path, "keys", "rotate-encryption-key", key=OLD, given=f"{NEW}\n{NEW}\n")
    assert result.exit_code == 0, result.output
    assert NEW not in result.output
    assert _status_ok(path, NEW)


def test_the_commands_refuse_what_does_not_fit(tmp_path: Path) -> None:
    """No key configured, a malformed new key, a wrong current key: exit 2, values never shown."""
    path = _seeded(tmp_path)
    missing = _run(path, "keys", "encrypt")
    assert missing.exit_code == EXIT_CONFIG_ERROR
    assert "needs database.encryption_key" in missing.output
    assert _run(path, "keys", "encrypt", key=OLD).exit_code == 0

    weak = "not-a-real-key-but-long-enough"
    malformed = _run(path, "keys", "rotate-encryption-key", key=OLD, new=weak)
    assert malformed.exit_code == EXIT_CONFIG_ERROR
    assert "32 random bytes" in malformed.output and weak not in malformed.output

    wrong = _run(path, "keys", "decrypt", key=NEW)
    assert wrong.exit_code == EXIT_CONFIG_ERROR
    assert "not encrypted with database.encryption_key" in wrong.output
    assert NEW not in wrong.output
    assert _status_ok(path, OLD)


def test_encrypting_leaves_no_former_value_in_the_sqlite_files(tmp_path: Path) -> None:
    """After `keys encrypt` the database file, its -wal and -shm hold no former clear value."""
    path = _seeded(tmp_path)
    database = tmp_path / "data" / "llmgateway.db"
    assert all(k.encode() in database.read_bytes() for k in KEYS)  # the search sees clear keys
    assert _run(path, "keys", "encrypt", key=OLD).exit_code == 0
    files = [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]
    data = b"".join(f.read_bytes() for f in files if f.exists())
    assert not [k for k in KEYS if k.encode() in data]


def test_the_commands_need_no_client_token(tmp_path: Path) -> None:
    """A client token whose ${VAR} is unset does not stop a command that only rewrites the store."""
    path = _seeded(tmp_path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(TOKENS[OPENAI], "${LLMGW_TEST_UNSET_TOKEN}"), encoding="utf-8")
    assert "LLMGW_TEST_UNSET_TOKEN" in path.read_text(encoding="utf-8")
    result = _run(path, "keys", "encrypt", key=OLD)
    assert result.exit_code == 0, result.output
