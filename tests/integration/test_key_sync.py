"""Syncing an instance's key files into a real store, on both engines."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from structlog.testing import capture_logs

from llmgateway.config.schemas import ModelConfig, ProviderConfig
from llmgateway.core.constants import ALL_MODELS_MARKER, ProviderType
from llmgateway.keeper.keyfiles import sync_instance_keys, sync_providers
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.protocol import KeySyncReport
from llmgateway.store.sqlite import SqliteStore

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


def write_keys(cwd: Path, name: str, text: str) -> Path:
    folder = cwd / "keys" / "openai-main"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder


async def test_files_and_inline_keys_are_synced_per_model(store: AnyStore, tmp_path: Path) -> None:
    """Keys from the files plus inline keys get one untested row per configured model."""
    write_keys(tmp_path, "a.txt", "# main keys\nsk-file-1\nsk-file-2\n")
    config = provider(keys=("sk-inline",))
    await sync_providers(store, [config])
    report = await sync_instance_keys(store, config, NOW, cwd=tmp_path)
    assert report == KeySyncReport(added=3, removed=0, total=3)
    rows = await store.load_records("openai-main")
    assert sorted((r.key, r.model) for r in rows) == [
        (key, model) for key in ("sk-file-1", "sk-file-2", "sk-inline") for model in ("m-a", "m-b")
    ]


async def test_shared_status_uses_the_all_models_marker(store: AnyStore, tmp_path: Path) -> None:
    """With shared_key_status each key has one __ALL_MODELS__ row."""
    write_keys(tmp_path, "a.txt", "sk-file-1\n")
    config = provider(shared=True)
    await sync_providers(store, [config])
    await sync_instance_keys(store, config, NOW, cwd=tmp_path)
    assert [(r.key, r.model) for r in await store.load_records()] == [
        ("sk-file-1", ALL_MODELS_MARKER)
    ]


async def test_removed_lines_leave_the_store(store: AnyStore, tmp_path: Path) -> None:
    """A key deleted from its file is deleted from the store at the next sync."""
    folder = write_keys(tmp_path, "a.txt", "sk-1\nsk-2\n")
    config = provider()
    await sync_providers(store, [config])
    await sync_instance_keys(store, config, NOW, cwd=tmp_path)
    (folder / "a.txt").write_text("sk-2\n")
    report = await sync_instance_keys(store, config, NOW, cwd=tmp_path)
    assert report == KeySyncReport(added=0, removed=1, total=1)
    assert {r.key for r in await store.load_records()} == {"sk-2"}


async def test_missing_keys_folder_keeps_the_stored_keys(store: AnyStore, tmp_path: Path) -> None:
    """When the keys folder disappears the stored keys stay and the path is logged."""
    folder = write_keys(tmp_path, "a.txt", "sk-secret-key-1\nsk-secret-key-2\n")
    config = provider()
    await sync_providers(store, [config])
    await sync_instance_keys(store, config, NOW, cwd=tmp_path)
    before = await store.load_records()
    shutil.rmtree(folder)

    with capture_logs() as logs:
        report = await sync_instance_keys(store, config, NOW, cwd=tmp_path)

    assert report is not None and (report.added, report.removed) == (0, 0)
    assert await store.load_records() == before
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert warnings and str(folder) in warnings[0]["problem"]
    assert "sk-secret-key" not in repr(logs)


async def test_inline_keys_load_without_a_keys_folder(store: AnyStore, tmp_path: Path) -> None:
    """Inline `keys:` are synced although the keys folder was never created."""
    config = replace(provider(), keys=("sk-inline-key-0001", "sk-inline-key-0002"))
    await sync_providers(store, [config])
    report = await sync_instance_keys(store, config, NOW, cwd=tmp_path)
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
    await sync_providers(store, [config])
    await sync_instance_keys(store, config, NOW, cwd=tmp_path)
    (folder / "b.txt").unlink()
    (folder / "b.txt").symlink_to(tmp_path / "missing.txt")

    assert await sync_instance_keys(store, config, NOW, cwd=tmp_path) is None
    assert {r.key for r in await store.load_records()} == {"sk-1", "sk-2"}
