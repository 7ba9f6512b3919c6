"""Keys encrypted at rest, on both engines: sealed values, keyed fingerprints, start-up checks, re-keying."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmgateway.core.constants import ProviderType
from llmgateway.core.errors import KeyEncryptionMismatch
from llmgateway.store.key_codec import PLAIN, KeyCodec
from llmgateway.store.key_crypto import AesGcmCodec, KeyDecryptionError
from llmgateway.store.key_filter import KeyFilter
from llmgateway.store.key_rekey import Rekeying, StoreInUse, rekey
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.sqlite import SqliteStore
from tests.support.databases import Database

NOW = datetime(2026, 1, 1, tzinfo=UTC)
INSTANCE = "openai-main"
KEYS = [f"sk-proj-secret-{n:03d}-0123456789abcdefXYZ" for n in range(7)]
OLD = AesGcmCodec(bytes(range(32)))
NEW = AesGcmCodec(bytes(range(32, 64)))


def _store(
    database: Database, codec: KeyCodec, *, verify: bool = True
) -> SqliteStore | PostgresStore:
    if database.engine == "sqlite":
        return SqliteStore(Path(database.location), codec=codec, verify_codec=verify)
    return PostgresStore(database.location, max_size=4, codec=codec, verify_codec=verify)


async def _seed(database: Database, codec: KeyCodec) -> None:
    store = _store(database, codec)
    await store.open()
    try:
        await store.sync_providers([(INSTANCE, ProviderType.OPENAI_LIKE)])
        await store.sync_keys(INSTANCE, KEYS[:5], ["gpt-4o-mini"], NOW)
    finally:
        await store.close()


async def _keys(database: Database, codec: KeyCodec) -> list[str]:
    store = _store(database, codec)
    await store.open()
    try:
        return sorted({r.key for r in await store.load_records(INSTANCE)})
    finally:
        await store.close()


async def _stored_values(database: Database) -> list[str]:
    return [str(r[0]) for r in await database.fetch("SELECT key_value FROM api_keys")]


async def test_an_encrypted_store_seals_every_key_and_reads_them_back(database: Database) -> None:
    """Stored values are enc1:..., fingerprints are keyed; keys read, dedup and search as before."""
    await _seed(database, OLD)
    values = await _stored_values(database)
    assert len(values) == 5
    assert all(v.startswith("enc1:") for v in values)
    assert not any(key in v for v in values for key in KEYS)
    fingerprints = {str(r[0]) for r in await database.fetch("SELECT fingerprint FROM api_keys")}
    assert fingerprints == {OLD.fingerprint(k) for k in KEYS[:5]}
    assert not fingerprints & {PLAIN.fingerprint(k) for k in KEYS}

    store = _store(database, OLD)
    await store.open()
    try:
        assert sorted({r.key for r in await store.load_records(INSTANCE)}) == sorted(KEYS[:5])
        report = await store.add_keys(INSTANCE, [KEYS[0], KEYS[5]], ["gpt-4o-mini"], NOW)
        assert (len(report.added), report.duplicates) == (1, 1)
        page = await store.list_keys(KeyFilter(q=KEYS[3]), after=None, limit=10)
        assert [k.key for k in page.items] == [KEYS[3]]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("stored", "opened", "says"),
    [
        ("old", "none", "database.encryption_key is not set"),
        ("old", "new", "`llmgateway keys rotate-encryption-key`"),
        ("none", "old", "`llmgateway keys encrypt`"),
    ],
)
async def test_a_store_opened_with_the_wrong_key_fails_at_start_up(
    database: Database, stored: str, opened: str, says: str
) -> None:
    """Another key, no key, or a key on clear keys: KeyEncryptionMismatch naming the command."""
    codecs: dict[str, KeyCodec] = {"none": PLAIN, "old": OLD, "new": NEW}
    await _seed(database, codecs[stored])
    store = _store(database, codecs[opened])
    with pytest.raises(KeyEncryptionMismatch, match=says.replace("$", r"\$")) as caught:
        await store.open()
    assert not any(key in str(caught.value) for key in KEYS)
    assert await _keys(database, codecs[stored]) == sorted(KEYS[:5])


async def test_a_store_without_keys_takes_the_codec_it_is_opened_with(database: Database) -> None:
    """An empty store opened with a key records it; then it refuses to open without it."""
    store = _store(database, OLD)
    await store.open()
    await store.close()
    assert await database.fetch("SELECT value FROM store_meta WHERE name = 'key_encryption'") == [
        (OLD.state,)
    ]
    await _seed(database, OLD)
    with pytest.raises(KeyEncryptionMismatch):
        await _store(database, PLAIN).open()


async def test_encrypt_rotate_decrypt_round_trip(database: Database) -> None:
    """Clear → encrypted → another key → clear: the same keys at each step, the old key refused."""
    await _seed(database, PLAIN)
    steps = [("encrypt", PLAIN, OLD), ("rotate-encryption-key", OLD, NEW), ("decrypt", NEW, PLAIN)]
    for command, source, target in steps:
        store = _store(database, source, verify=False)
        await store.open()
        try:
            report = await rekey(store, Rekeying(command, source, target), batch=2)
        finally:
            await store.close()
        assert (report.rewritten, report.already_done) == (5, False)
        assert await _keys(database, target) == sorted(KEYS[:5])
        fingerprints = {str(r[0]) for r in await database.fetch("SELECT fingerprint FROM api_keys")}
        assert fingerprints == {target.fingerprint(k) for k in KEYS[:5]}
        with pytest.raises(KeyEncryptionMismatch):
            await _store(database, source).open()
    assert sorted(await _stored_values(database)) == sorted(KEYS[:5])


async def test_an_interrupted_rekey_blocks_start_up_and_resumes(database: Database) -> None:
    """Stopped after one batch: the store refuses to start; run again, it finishes the rest."""
    await _seed(database, PLAIN)
    run = Rekeying("encrypt", PLAIN, OLD)

    def stop(done: int) -> None:
        raise KeyboardInterrupt

    store = _store(database, PLAIN, verify=False)
    await store.open()
    try:
        with pytest.raises(KeyboardInterrupt):
            await rekey(store, run, batch=2, progress=stop)
    finally:
        await store.close()
    values = await _stored_values(database)
    assert sum(v.startswith("enc1:") for v in values) == 2
    for codec in (PLAIN, OLD):
        with pytest.raises(
            KeyEncryptionMismatch, match="halfway through `llmgateway keys encrypt`"
        ):
            await _store(database, codec).open()

    wrong = Rekeying("encrypt", PLAIN, NEW)
    store = _store(database, PLAIN, verify=False)
    await store.open()
    try:
        with pytest.raises(KeyEncryptionMismatch, match="unfinished"):
            await rekey(store, wrong)
        report = await rekey(store, run, batch=2)
        assert report.rewritten == 3
        assert (await rekey(store, run)).already_done
    finally:
        await store.close()
    assert await _keys(database, OLD) == sorted(KEYS[:5])


async def test_decrypting_with_a_wrong_key_changes_nothing(database: Database) -> None:
    """decrypt with a key the store was not encrypted with is refused before any row changes."""
    await _seed(database, OLD)
    before = sorted(await _stored_values(database))
    store = _store(database, NEW, verify=False)
    await store.open()
    try:
        with pytest.raises(KeyEncryptionMismatch, match="not encrypted with database"):
            await rekey(store, Rekeying("decrypt", NEW, PLAIN))
    finally:
        await store.close()
    assert sorted(await _stored_values(database)) == before


async def test_a_damaged_value_fails_loudly_never_as_garbage(database: Database) -> None:
    """A value that does not decrypt raises KeyDecryptionError when read."""
    await _seed(database, OLD)
    await database.execute(
        "UPDATE api_keys SET key_value = 'enc1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' "
        "WHERE id = (SELECT min(id) FROM api_keys)"
    )
    with pytest.raises(KeyDecryptionError):
        await _keys(database, OLD)


async def test_a_rekey_refuses_while_a_gateway_holds_the_keeper_lock(database: Database) -> None:
    """Another process's keeper lock (a running gateway): StoreInUse, nothing rewritten."""
    await _seed(database, PLAIN)
    gateway, command = _store(database, PLAIN), _store(database, PLAIN, verify=False)
    await gateway.open()
    await command.open()
    try:
        async with gateway.exclusive("keeper") as got:
            assert got
            with pytest.raises(StoreInUse, match="stop it"):
                await rekey(command, Rekeying("encrypt", PLAIN, OLD))
    finally:
        await command.close()
        await gateway.close()
    assert sorted(await _stored_values(database)) == sorted(KEYS[:5])
