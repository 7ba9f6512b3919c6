"""`/-/events` announces a status change only once it is stored.

A process may be killed the moment after it announced a change; what a
client saw announced must then still be in the store. The write-behind
queue tells when the records queued before an event are written.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from llmgateway.core.constants import ProviderType, Status
from llmgateway.store.sqlite import SqliteStore
from llmgateway.store.write_queue import WriteQueue
from llmgateway.web.app import create_app
from llmgateway.web.keys import STORE
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.integration.test_admin import BAD_KEY, GOOD_KEY, _chat, _next_data
from tests.support.gateway import OPENAI, build_config

ClientFactory = Any  # pytest-aiohttp's aiohttp_client fixture
NOW = datetime(2026, 1, 1, tzinfo=UTC)
QUIET = 1.5
"""Seconds during which nothing may be announced while the store refuses writes."""


async def test_written_through_waits_until_the_store_has_the_records(tmp_path: Path) -> None:
    """A mark is passed once the records put before it are written, not before."""
    store = SqliteStore(tmp_path / "gw.db")
    await store.open()
    try:
        await store.sync_providers([("inst", ProviderType.OPENAI_LIKE)])
        await store.sync_keys("inst", ["sk-durable-0123456789"], ["m"], NOW)
        (row,) = await store.load_records("inst")
        queue = WriteQueue(store, interval=3600)
        await queue.written_through(queue.mark())  # nothing put: passed at once
        queue.put(replace(row, status=Status.VALID, last_checked_at=NOW))
        waiting = asyncio.create_task(queue.written_through(queue.mark()))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await queue.flush()
        async with asyncio.timeout(5):
            await waiting
        assert (await store.load_records("inst"))[0].status is Status.VALID
        await queue.close()
    finally:
        await store.close()


async def test_an_event_waits_while_the_store_refuses_its_write(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """Another connection holds the database's write lock: the invalidation is announced after."""
    fake_upstream.set_key(GOOD_KEY)
    fake_upstream.set_key(BAD_KEY, Behaviour.INVALID_KEY)
    config = build_config(tmp_path, fake_upstream.url, {OPENAI: [BAD_KEY, GOOD_KEY]})
    app = create_app(config.accessor())
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    store = app[STORE]
    assert isinstance(store, SqliteStore)
    events = await client.get("/-/events")
    with closing(sqlite3.connect(store.path, isolation_level=None)) as blocker:
        blocker.execute("BEGIN EXCLUSIVE")
        assert await _chat(client) == 200  # the bad key is condemned in memory at once
        early = asyncio.create_task(_next_data(events))
        done, _ = await asyncio.wait({early}, timeout=QUIET)
        assert not done, "announced before it was stored"
        blocker.execute("COMMIT")
    announced = [await asyncio.wait_for(early, timeout=30)]
    announced.append(await asyncio.wait_for(_next_data(events), timeout=30))
    stored = {r.key: r.status for r in await store.load_records(OPENAI)}
    for event in announced:
        key = BAD_KEY if event["key"] == "sk-b...bbbb" else GOOD_KEY
        assert stored[key].value == event["new"]
    events.close()
