"""Every key admin change reaches the other processes' change feeds, on both engines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from llmgateway.core.constants import ProviderType, Status
from llmgateway.store.changes import Changes
from llmgateway.store.key_admin import KeyFilter
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.sqlite import SqliteStore
from tests.support.databases import Database

type AnyStore = SqliteStore | PostgresStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
WAIT = 10.0
KEYS = [f"sk-feed-key-{i:0>20}" for i in range(3)]


class Heard:
    """What one process's change feed delivered."""

    def __init__(self) -> None:
        self.deliveries: list[Changes] = []
        self.resyncs = 0

    async def resync(self) -> None:
        """The feed's full reload (at its start): counted, so a test acts after it."""
        self.resyncs += 1

    def deliver(self, changes: Changes) -> None:
        self.deliveries.append(changes)

    def added(self) -> set[int]:
        """Keys that joined: as records carrying their keys (SQLite), or as ids to read (PostgreSQL)."""
        rows = {r.key_id for c in self.deliveries for r in c.records if r.key}
        return rows | {i for c in self.deliveries for k in c.keys for i in k.added}

    def statuses(self, status: Status) -> set[tuple[int, str]]:
        return {
            (r.key_id, r.model) for c in self.deliveries for r in c.records if r.status is status
        }

    def removed(self) -> set[int]:
        return {i for c in self.deliveries for k in c.keys for i in k.removed}


@pytest.fixture
async def peers(database: Database) -> AsyncIterator[tuple[AnyStore, Heard]]:
    """A store that acts, and what another process's feed on the same database hears."""
    acting, listening = database.new_store(), database.new_store()
    await acting.open()
    await listening.open()
    await acting.sync_providers([("openai", ProviderType.OPENAI_LIKE)])
    heard = Heard()
    feed = listening.change_feed()
    task = asyncio.create_task(feed.run(heard.deliver, heard.resync))
    try:
        await _until(lambda: feed.state.connected and heard.resyncs > 0, "the feed caught up")
        yield acting, heard
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await listening.close()
        await acting.close()


async def _until(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not predicate():  # noqa: ASYNC110 (a state, no event)
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {WAIT} s: {what}")


async def test_imports_disables_enables_and_deletes_are_announced(
    peers: tuple[AnyStore, Heard],
) -> None:
    """The other process hears of new keys, disabled and enabled rows, and deleted keys."""
    store, heard = peers
    added = await store.add_keys("openai", KEYS, ["gpt"], NOW)
    await _until(lambda: heard.added() >= set(added.added), "the new keys")

    await store.set_disabled(tuple(added.added[:2]), True, NOW)
    disabled = {(i, "gpt") for i in added.added[:2]}
    await _until(lambda: heard.statuses(Status.DISABLED) >= disabled, "the disabled rows")

    await store.set_disabled(KeyFilter(status="disabled"), False, NOW)
    await _until(lambda: heard.statuses(Status.UNTESTED) >= disabled, "the enabled rows")

    await store.delete_keys((added.added[2],))
    await _until(lambda: heard.removed() == {added.added[2]}, "the deleted key")


async def test_a_file_sync_that_spares_an_api_key_announces_only_the_removed_file_key(
    peers: tuple[AnyStore, Heard],
) -> None:
    """A sync dropping both a file key and an api key's file mark removes only the former."""
    store, heard = peers
    files = {KEYS[0]: "keys/openai/a.txt", KEYS[1]: "keys/openai/a.txt"}
    await store.sync_keys("openai", KEYS[:2], ["gpt"], NOW, files=files)
    await store.add_keys("openai", [KEYS[1]], ["gpt"], NOW)
    stored = await store.list_keys(KeyFilter(), after=None, limit=10)
    ids = {k.key: k.id for k in stored.items}
    await store.sync_keys("openai", [], ["gpt"], NOW)
    await _until(lambda: bool(heard.removed()), "the removal")
    assert heard.removed() == {ids[KEYS[0]]}
