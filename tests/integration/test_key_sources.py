"""Key files name the source of each key they hold; keys added by hand outlive them (both engines)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from llmgateway.config.schemas import ModelConfig, ProviderConfig
from llmgateway.core.constants import ProviderType, Status
from llmgateway.core.masking import Masker
from llmgateway.keeper.key_sync import KeySync
from llmgateway.pool.key_pool import KeyPool
from llmgateway.store.key_admin import KeyFilter, KeySource
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.sqlite import SqliteStore
from tests.support.config import accessor_of

type AnyStore = SqliteStore | PostgresStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MODELS = ("m-a", "m-b")


def provider(keys: tuple[str, ...] = ()) -> ProviderConfig:
    return ProviderConfig(
        name="openai-main",
        provider_type=ProviderType.OPENAI_LIKE,
        api_base_url="https://api.example.com",
        default_model="m-a",
        keys_path="keys/openai-main",
        keys=keys,
        models={m: ModelConfig() for m in MODELS},
    )


def write_keys(cwd: Path, name: str, text: str) -> None:
    folder = cwd / "keys" / "openai-main"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


async def sync(store: AnyStore, config: ProviderConfig, cwd: Path) -> None:
    """One key sync of `config` (a process's periodic re-read of its key files)."""
    accessor = accessor_of(config)
    pool = KeyPool(accessor, clock=NOW.timestamp)
    await store.sync_providers([(config.name, config.provider_type)])
    await KeySync(accessor, store, pool, Masker(), NOW.timestamp, cwd=cwd).sync()


async def _sources(store: AnyStore) -> dict[str, tuple[KeySource, str | None]]:
    page = await store.list_keys(KeyFilter(), after=None, limit=100)
    return {k.key: (k.source, k.source_file) for k in page.items}


async def test_each_key_is_recorded_with_the_file_that_holds_it(
    store: AnyStore, tmp_path: Path
) -> None:
    """The path is the configured folder plus the file name; inline keys are `inline`."""
    write_keys(tmp_path, "a.txt", "sk-file-one-0001\nsk-in-both-0003\n")
    write_keys(tmp_path, "b.txt", "sk-file-two-0002\nsk-in-both-0003\n")
    config = provider(keys=("sk-inline-0004", "sk-file-one-0001"))
    await sync(store, config, tmp_path)
    assert await _sources(store) == {
        "sk-file-one-0001": (KeySource.FILE, "keys/openai-main/a.txt"),
        "sk-file-two-0002": (KeySource.FILE, "keys/openai-main/b.txt"),
        "sk-in-both-0003": (KeySource.FILE, "keys/openai-main/a.txt"),
        "sk-inline-0004": (KeySource.FILE, "inline"),
    }


async def test_a_sync_keeps_hand_added_and_disabled_keys(store: AnyStore, tmp_path: Path) -> None:
    """Emptying the files removes file keys only; a disabled file key stays disabled while listed."""
    write_keys(tmp_path, "a.txt", "sk-file-one-0001\nsk-file-two-0002\n")
    config = provider()
    await sync(store, config, tmp_path)
    await store.add_keys("openai-main", ["sk-by-hand-0005"], MODELS, NOW)
    page = await store.list_keys(KeyFilter(q="sk-file-two-0002"), after=None, limit=1)
    await store.set_disabled((page.items[0].id,), True, NOW)

    write_keys(tmp_path, "a.txt", "sk-file-two-0002\n")
    await sync(store, config, tmp_path)
    assert await _sources(store) == {
        "sk-file-two-0002": (KeySource.FILE, "keys/openai-main/a.txt"),
        "sk-by-hand-0005": (KeySource.API, None),
    }
    records = await store.load_records("openai-main")
    assert {r.status for r in records if r.key == "sk-file-two-0002"} == {Status.DISABLED}
