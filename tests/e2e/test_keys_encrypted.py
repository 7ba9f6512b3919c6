"""Keys encrypted at rest, end to end: after a serve with traffic and a key sync, no key is in the store.

`llmgateway serve` runs with `database.encryption_key` from the environment,
serves requests, syncs a changed key file and stops; then every byte of the
SQLite file (and its -wal and -shm), or every row of every PostgreSQL table as
text, is searched for every key, raw and in base64. The same run on a clear
store finds them, so the search itself is proven to see keys. A start-up with
no key, or another one, exits 2 naming the command to run.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Final

import asyncpg
import pytest

from llmgateway.cli.common import EXIT_CONFIG_ERROR
from tests.fakes.upstream import FakeUpstream
from tests.support.databases import postgres_database
from tests.support.gateway import (
    ASK,
    OPENAI,
    TOKENS,
    GatewayConfig,
    ServeGateway,
    SpawnGateway,
)

pytestmark = pytest.mark.slow

KEYS: Final = [f"sk-proj-at-rest-{n}-0123456789abcdefXYZ" for n in range(5)]
HEX: Final = bytes(range(32)).hex()
VARIABLE: Final = "LLMGW_ENCRYPTION_KEY"
SYNC_WAIT: Final = 20.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The store's URL: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'llmgateway.db'}"
        return
    async with postgres_database("llmgw_test") as dsn:
        yield dsn


async def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    if url.startswith("sqlite:"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return list(conn.execute(sql).fetchall())
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def _store_text(url: str) -> bytes:
    """Every byte the store holds: the SQLite files, or every PostgreSQL row as text."""
    if url.startswith("sqlite:"):
        path = Path(url.removeprefix("sqlite:///"))
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    tables = await _rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    text = ""
    for (table,) in tables:
        text += "".join(
            f"{row[0]}\n" for row in await _rows(url, f'SELECT t::text FROM "{table}" AS t')
        )
    return text.encode()


def _found(data: bytes) -> list[str]:
    """The keys found in `data`, raw or base64 (standard or URL-safe)."""
    found = []
    for key in KEYS:
        raw = key.encode()
        forms = [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw).rstrip(b"=")]
        if any(form in data for form in forms):
            found.append(key)
    return found


async def _serve_traffic_and_sync(
    config: GatewayConfig, serve: ServeGateway, fake_upstream: FakeUpstream, url: str
) -> None:
    """Serve with 3 keys, traffic, a key file growing to 5 keys (synced), traffic, stop."""
    config.set("database.url", url)
    config.set("keeper.enabled", True)
    config.set("keeper.keys_sync_interval", "1s")
    for key in KEYS:
        fake_upstream.set_key(key)
    config.keys[OPENAI] = KEYS[:3]
    gateway = await serve(config)
    for i in range(6):
        await ASK[OPENAI](gateway.url, TOKENS[OPENAI], stream=i % 2 == 0)
    config.keys[OPENAI] = KEYS
    config.write()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SYNC_WAIT
    while (await _rows(url, "SELECT count(*) FROM api_keys"))[0][0] != len(KEYS):
        assert loop.time() < deadline, gateway.output()
        await asyncio.sleep(0.2)
    for i in range(10):
        await ASK[OPENAI](gateway.url, TOKENS[OPENAI], stream=i % 2 == 0)
    gateway.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(gateway.process.wait(), 30) == 0, gateway.output()


async def test_no_key_is_in_the_store_after_serving_with_encryption(
    gateway_config: GatewayConfig,
    serve_gateway: ServeGateway,
    fake_upstream: FakeUpstream,
    database_url: str,
) -> None:
    """Every stored value is sealed; no key, raw or base64, anywhere in the store."""
    gateway_config.set("database.encryption_key", "${%s}" % VARIABLE)  # noqa: UP031
    gateway_config.env[VARIABLE] = HEX
    await _serve_traffic_and_sync(gateway_config, serve_gateway, fake_upstream, database_url)
    values = [str(r[0]) for r in await _rows(database_url, "SELECT key_value FROM api_keys")]
    assert len(values) == len(KEYS) and all(v.startswith("enc1:") for v in values)
    valid = await _rows(
        database_url, "SELECT count(*) FROM key_model_status WHERE status = 'valid'"
    )
    assert int(str(valid[0][0])) > 0  # the traffic's and the keeper's statuses were written
    assert _found(await _store_text(database_url)) == []


async def test_the_search_finds_the_keys_of_a_clear_store(
    gateway_config: GatewayConfig,
    serve_gateway: ServeGateway,
    fake_upstream: FakeUpstream,
    database_url: str,
) -> None:
    """The same run without the setting: every key is found (the search can fail)."""
    await _serve_traffic_and_sync(gateway_config, serve_gateway, fake_upstream, database_url)
    assert _found(await _store_text(database_url)) == KEYS


@pytest.mark.parametrize(
    ("key", "workers"), [("", 1), (bytes(range(1, 33)).hex(), 1), (bytes(range(1, 33)).hex(), 2)]
)
async def test_serve_refuses_an_encrypted_store_without_its_key(
    gateway_config: GatewayConfig,
    serve_gateway: ServeGateway,
    spawn_gateway: SpawnGateway,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    key: str,
    workers: int,
) -> None:
    """No key or another key, one process or a supervisor of two: exit 2 before serving, naming what to do; the key never printed."""
    url = f"sqlite:///{tmp_path / 'data' / 'llmgateway.db'}"
    gateway_config.set("database.encryption_key", "${%s:-}" % VARIABLE)  # noqa: UP031
    gateway_config.env[VARIABLE] = HEX
    await _serve_traffic_and_sync(gateway_config, serve_gateway, fake_upstream, url)

    gateway_config.env[VARIABLE] = key
    gateway_config.set("server.workers", workers)
    refused = await spawn_gateway(gateway_config, log_name="refused.log")
    assert await asyncio.wait_for(refused.process.wait(), 30) == EXIT_CONFIG_ERROR
    output = refused.output()
    assert "database.encryption_key" in output
    assert "llmgateway keys rotate-encryption-key" in output or "is not set" in output
    assert HEX not in output and (not key or key not in output)
    assert _found(output.encode()) == []
