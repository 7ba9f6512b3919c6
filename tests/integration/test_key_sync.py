"""The key sync: key files and inline keys into a real store, the masker and the pool, on both engines."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from llmgateway.config.schemas import ModelConfig, ProviderConfig
from llmgateway.core.constants import ALL_MODELS_MARKER, ProviderType, Status
from llmgateway.core.masking import Masker
from llmgateway.keeper import key_sync as key_sync_module
from llmgateway.keeper import keyfiles
from llmgateway.keeper.key_sync import KeySync
from llmgateway.pool import key_pool as key_pool_module
from llmgateway.pool.key_pool import KeyPool
from llmgateway.store import key_filter
from llmgateway.store.key_admin import KeyFilter
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.protocol import KeySyncReport
from llmgateway.store.sqlite import SqliteStore
from tests.support.config import accessor_of

type AnyStore = SqliteStore | PostgresStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def provider(shared: bool = False, keys: tuple[str, ...] = ()) -> ProviderConfig:
    return ProviderConfig(
        name="openai-main",
        provider_type=ProviderType.OPENAI_LIKE,
        api_base_url="https://api.example.com",
        default_model="m-a",
        keys_path="keys/openai-main",
        keys=keys,
        shared_key_status=shared,
        models={"m-a": ModelConfig(), "m-b": ModelConfig()},
    )


class Synced:
    """A `KeySync` of one instance over the test's store, with its own pool and masker."""

    def __init__(self, store: AnyStore, config: ProviderConfig, cwd: Path) -> None:
        accessor = accessor_of(config)
        self.name = config.name
        self.masker = Masker()
        self.pool = KeyPool(accessor, clock=NOW.timestamp)
        self.key_sync = KeySync(accessor, store, self.pool, self.masker, NOW.timestamp, cwd=cwd)

    async def once(self) -> KeySyncReport | None:
        """One periodic sync; the instance's report."""
        return (await self.key_sync.sync())[self.name]


async def synced(store: AnyStore, config: ProviderConfig, cwd: Path) -> Synced:
    """The key sync of `config`, its provider row written."""
    await store.sync_providers([(config.name, config.provider_type)])
    return Synced(store, config, cwd)


def write_keys(cwd: Path, name: str, text: str) -> Path:
    folder = cwd / "keys" / "openai-main"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder


async def test_files_and_inline_keys_are_synced_per_model(store: AnyStore, tmp_path: Path) -> None:
    """Keys from the files plus inline keys get one untested row per configured model."""
    write_keys(tmp_path, "a.txt", "# main keys\nsk-file-1\nsk-file-2\n")
    config = provider(keys=("sk-inline",))
    sync = await synced(store, config, tmp_path)
    report = await sync.once()
    assert report == KeySyncReport(added=3, removed=0, total=3)
    rows = await store.load_records("openai-main")
    assert sorted((r.key, r.model) for r in rows) == [
        (key, model) for key in ("sk-file-1", "sk-file-2", "sk-inline") for model in ("m-a", "m-b")
    ]


async def test_shared_status_uses_the_all_models_marker(store: AnyStore, tmp_path: Path) -> None:
    """With shared_key_status each key has one __ALL_MODELS__ row."""
    write_keys(tmp_path, "a.txt", "sk-file-1\n")
    config = provider(shared=True)
    sync = await synced(store, config, tmp_path)
    await sync.once()
    assert [(r.key, r.model) for r in await store.load_records()] == [
        ("sk-file-1", ALL_MODELS_MARKER)
    ]


async def test_removed_lines_leave_the_store(store: AnyStore, tmp_path: Path) -> None:
    """A key deleted from its file is deleted from the store at the next sync."""
    folder = write_keys(tmp_path, "a.txt", "sk-1\nsk-2\n")
    config = provider()
    sync = await synced(store, config, tmp_path)
    await sync.once()
    (folder / "a.txt").write_text("sk-2\n")
    report = await sync.once()
    assert report == KeySyncReport(added=0, removed=1, total=1)
    assert {r.key for r in await store.load_records()} == {"sk-2"}


async def test_missing_keys_folder_keeps_the_stored_keys(store: AnyStore, tmp_path: Path) -> None:
    """When the keys folder disappears the stored keys stay and the path is logged."""
    folder = write_keys(tmp_path, "a.txt", "sk-secret-key-1\nsk-secret-key-2\n")
    config = provider()
    sync = await synced(store, config, tmp_path)
    await sync.once()
    before = await store.load_records()
    shutil.rmtree(folder)

    with capture_logs() as logs:
        report = await sync.once()

    assert report is not None and (report.added, report.removed) == (0, 0)
    assert await store.load_records() == before
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert warnings and str(folder) in warnings[0]["problem"]
    assert "sk-secret-key" not in repr(logs)


async def test_inline_keys_load_without_a_keys_folder(store: AnyStore, tmp_path: Path) -> None:
    """Inline `keys:` are synced although the keys folder was never created."""
    config = replace(provider(), keys=("sk-inline-key-0001", "sk-inline-key-0002"))
    sync = await synced(store, config, tmp_path)
    report = await sync.once()
    assert report is not None and report.added == 2
    assert {r.key for r in await store.load_records()} == {
        "sk-inline-key-0001",
        "sk-inline-key-0002",
    }


async def test_one_unreadable_file_keeps_the_stored_keys(store: AnyStore, tmp_path: Path) -> None:
    """A key file that cannot be read stops the sync even though other files were read."""
    folder = write_keys(tmp_path, "a.txt", "sk-1\n")
    write_keys(tmp_path, "b.txt", "sk-2\n")
    config = provider()
    sync = await synced(store, config, tmp_path)
    await sync.once()
    (folder / "b.txt").unlink()
    (folder / "b.txt").symlink_to(tmp_path / "missing.txt")

    assert await sync.once() is None
    assert {r.key for r in await store.load_records()} == {"sk-1", "sk-2"}


async def test_synced_keys_are_masked_and_pickable(store: AnyStore, tmp_path: Path) -> None:
    """A sync registers every key with the masker and puts it in the pool's rotation."""
    write_keys(tmp_path, "a.txt", "sk-file-key-000001\n")
    sync = await synced(store, provider(keys=("sk-inline-key-0001",)), tmp_path)
    await sync.once()
    keys = {"sk-file-key-000001", "sk-inline-key-0001"}
    assert all(key in sync.masker for key in keys)
    assert {sync.pool.pick("openai-main", "m-a").key for _ in range(4)} == keys


async def test_initial_sync_loads_the_store_into_the_pool(store: AnyStore, tmp_path: Path) -> None:
    """Start-up writes the provider rows and the keys, then loads every stored record, masked."""
    write_keys(tmp_path, "a.txt", "sk-start-key-0001\nsk-start-key-0002\n")
    sync = Synced(store, provider(), tmp_path)
    with capture_logs() as logs:
        await sync.key_sync.initial()
    assert len(sync.pool.records("openai-main")) == 4
    assert "sk-start-key-0001" in sync.masker and "sk-start-key-0002" in sync.masker
    assert [e["records"] for e in logs if e["event"] == "key_pool_loaded"] == [4]


async def test_a_file_change_reaches_the_pool_at_the_next_sync(
    store: AnyStore, tmp_path: Path
) -> None:
    """Keys added to and removed from the files join and leave the live pool."""
    folder = write_keys(tmp_path, "a.txt", "sk-old-key-000001\n")
    sync = Synced(store, provider(), tmp_path)
    await sync.key_sync.initial()
    (folder / "a.txt").write_text("sk-new-key-000001\n")
    await sync.once()
    assert {r.key for r in sync.pool.records()} == {"sk-new-key-000001"}
    assert "sk-new-key-000001" in sync.masker


async def test_a_sync_of_unchanged_files_writes_nothing(
    store: AnyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files read as at the last sync: the store is not written; a changed file is synced again."""
    write_keys(tmp_path, "a.txt", "sk-file-1\nsk-file-2\n")
    sync = await synced(store, provider(), tmp_path)
    written: list[tuple[str, ...]] = []
    sync_keys = store.sync_keys

    async def counted(instance: str, keys: Sequence[str], *args: Any, **kw: Any) -> KeySyncReport:
        written.append(tuple(keys))
        return await sync_keys(instance, keys, *args, **kw)

    monkeypatch.setattr(store, "sync_keys", counted)
    assert await sync.once() == KeySyncReport(added=2, removed=0, total=2)
    assert (await sync.once()).total == -1  # unchanged: nothing written, nothing reloaded
    assert written == [("sk-file-1", "sk-file-2")]

    write_keys(tmp_path, "b.txt", "sk-file-3\n")
    assert await sync.once() == KeySyncReport(added=1, removed=0, total=3)
    (tmp_path / "keys" / "openai-main" / "b.txt").rename(
        tmp_path / "keys" / "openai-main" / "c.txt"
    )
    assert await sync.once() == KeySyncReport(added=0, removed=0, total=3)  # moved: files recorded
    assert len(written) == 3
    assert sorted(r.key for r in sync.pool.records("openai-main")) == [
        k for k in ("sk-file-1", "sk-file-2", "sk-file-3") for _ in range(2)
    ]


async def test_settled_unchanged_files_are_not_even_read(
    store: AnyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once synced, files found as they were are not read again; a change, or other models
    (a reload), makes the sync read them."""
    monkeypatch.setattr(keyfiles, "SETTLE_NS", 0)
    folder = write_keys(tmp_path, "a.txt", "sk-file-1\n")
    sync = await synced(store, provider(), tmp_path)
    reads: list[Path] = []
    read_key_file = keyfiles._read_key_file

    def counted(file: Path) -> list[str]:
        reads.append(file)
        return read_key_file(file)

    monkeypatch.setattr(keyfiles, "_read_key_file", counted)
    assert await sync.once() == KeySyncReport(added=1, removed=0, total=1)
    assert (await sync.once()).total == -1
    assert (await sync.once()).total == -1
    assert len(reads) == 1

    (folder / "a.txt").write_text("sk-file-1\nsk-file-2\n")
    assert await sync.once() == KeySyncReport(added=1, removed=0, total=2)
    assert len(reads) == 2

    wider = replace(provider(), models={"m-a": ModelConfig(), "m-c": ModelConfig()})
    await sync.key_sync.adopt(accessor_of(wider), {})
    report = await sync.once()
    assert report is not None and report.total == 2  # the keys were needed: read again
    assert len(reads) == 3


async def test_lists_uploaded_by_copy_sync_the_same(
    store: AnyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every list sent by COPY (PostgreSQL's path for large ones, forced here for all): the
    keys, their removal and their files are stored the same, a backslash in a name too."""
    monkeypatch.setattr(key_filter, "UPLOAD_MIN", 1)
    write_keys(tmp_path, "a.txt", "sk-file-1\nsk-file-2\n")
    folder = write_keys(tmp_path, "b\\c.txt", "sk-file-3\n")
    sync = await synced(store, provider(keys=("sk-inline",)), tmp_path)
    assert await sync.once() == KeySyncReport(added=4, removed=0, total=4)
    (folder / "a.txt").write_text("sk-file-2\nsk-file-4\n")
    assert await sync.once() == KeySyncReport(added=1, removed=1, total=4)
    page = await store.list_keys(KeyFilter(), after=None, limit=10)
    assert {key.key: key.source_file for key in page.items} == {
        "sk-file-2": "keys/openai-main/a.txt",
        "sk-file-3": "keys/openai-main/b\\c.txt",
        "sk-file-4": "keys/openai-main/a.txt",
        "sk-inline": "inline",
    }


async def test_reconcile_merges_page_by_page(
    store: AnyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 3 rows: stored keys new to the pool join it (masked), newer statuses are taken,
    keys no longer stored leave, another instance's rows are left out, the pool's own newer
    state is kept."""
    monkeypatch.setattr(key_sync_module, "RECONCILE_PAGE", 3)
    monkeypatch.setattr(key_pool_module, "ID_SHARDS_PER_TURN", 1)  # the loop runs between shards
    write_keys(tmp_path, "a.txt", "sk-rec-1\nsk-rec-2\nsk-rec-3\n")
    sync = await synced(store, provider(), tmp_path)
    await sync.once()
    await store.sync_providers([("other", ProviderType.OPENAI_LIKE)])
    await store.sync_keys("other", ["sk-other-1"], ["m-a"], NOW)
    stored = {(r.key, r.model): r for r in await store.load_records("openai-main")}
    later = NOW + timedelta(minutes=1)
    newer = replace(stored[("sk-rec-2", "m-b")], status=Status.INVALID_KEY, last_checked_at=later)
    await store.record([newer])
    pool_own = replace(stored[("sk-rec-1", "m-a")], status=Status.VALID, last_checked_at=later)
    assert sync.pool.apply_remote(pool_own)
    older = replace(pool_own, status=Status.NO_QUOTA, last_checked_at=NOW)
    await store.record([older])
    # Another process's sync: sk-rec-3 leaves the store, sk-rec-4 joins it.
    await store.sync_keys("openai-main", ["sk-rec-1", "sk-rec-2", "sk-rec-4"], ["m-a", "m-b"], NOW)

    taken = [n async for n in sync.key_sync.reconcile(["openai-main"])]

    assert len(taken) == 2  # one instance: only its 6 rows are read, pages of 3 and 3
    assert sum(taken) == 1  # only sk-rec-2/m-b was newer than the pool's
    records = {(r.key, r.model): r for r in sync.pool.records("openai-main")}
    assert sorted(records) == [
        (key, model) for key in ("sk-rec-1", "sk-rec-2", "sk-rec-4") for model in ("m-a", "m-b")
    ]
    assert records[("sk-rec-2", "m-b")].status is Status.INVALID_KEY
    assert records[("sk-rec-1", "m-a")].status is Status.VALID
    assert sync.pool.records("other") == []
    assert sync.masker.mask_text("sk-rec-4") != "sk-rec-4"
