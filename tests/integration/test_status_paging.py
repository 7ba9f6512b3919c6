"""`/-/status` is a summary; its per-key rows come page by page, each row exactly once.

Run on both engines: the live pool pages `/-/status?keys=1`, the store pages
`llmgateway status --keys --json`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from llmgateway.cli.main import main
from llmgateway.web.app import create_app
from tests.integration.conftest import Database
from tests.support.gateway import MODELS, OPENAI, GatewayConfig, build_config

KEY_COUNT = 2345
SECOND_MODEL = "gpt-4o"

ClientFactory = Any  # pytest-aiohttp's aiohttp_client fixture


def _keys(count: int, start: int = 0) -> list[str]:
    """Keys whose masks (first 4 and last 4 characters) are all different."""
    return [f"sk-p-{i:06d}-0123456789-{i:04d}" for i in range(start, start + count)]


def _config(tmp_path: Path, database: Database, keys: list[str]) -> GatewayConfig:
    config = build_config(tmp_path, "http://127.0.0.1:9", {OPENAI: keys})
    config.set(f"providers.{OPENAI}.models", {MODELS[OPENAI]: {}, SECOND_MODEL: {}})
    if database.engine == "sqlite":
        config.set("database.url", f"sqlite:///{database.location}")
    else:
        config.set("database.url", database.location)
    return config


async def _client(
    aiohttp_client: ClientFactory, config: GatewayConfig
) -> TestClient[web.Request, web.Application]:
    config.write()
    client: TestClient[web.Request, web.Application] = await aiohttp_client(
        create_app(config.accessor())
    )
    return client


async def _pages(
    client: TestClient[web.Request, web.Application], limit: int
) -> list[list[tuple[str, str]]]:
    pages: list[list[tuple[str, str]]] = []
    cursor: str | None = None
    while True:
        query = f"/-/status?keys=1&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(query)
        assert response.status == 200, await response.text()
        document = await response.json()
        pages.append([(k["key"], k["model"]) for k in document["providers"][OPENAI]["keys"]])
        cursor = document["next_cursor"]
        if cursor is None:
            return pages


def _expected(keys: list[str]) -> set[tuple[str, str]]:
    return {(f"{k[:4]}...{k[-4:]}", m) for k in keys for m in (MODELS[OPENAI], SECOND_MODEL)}


async def test_status_is_a_summary_without_key_rows(
    tmp_path: Path, database: Database, aiohttp_client: ClientFactory
) -> None:
    """/-/status carries counts, usable and incidents per instance, no per-key rows."""
    keys = _keys(30)
    client = await _client(aiohttp_client, _config(tmp_path, database, keys))

    document = await (await client.get("/-/status")).json()

    oai = document["providers"][OPENAI]
    assert "keys" not in oai and "next_cursor" not in document
    assert oai["keys_total"] == 30
    assert oai["models"] == {MODELS[OPENAI]: {"untested": 30}, SECOND_MODEL: {"untested": 30}}
    assert oai["usable"] == {MODELS[OPENAI]: 30, SECOND_MODEL: 30}
    assert oai["incidents"] == []


async def test_paging_returns_every_row_exactly_once(
    tmp_path: Path, database: Database, aiohttp_client: ClientFactory
) -> None:
    """Following next_cursor gives each (key, model) once; no page is larger than asked."""
    keys = _keys(KEY_COUNT)
    client = await _client(aiohttp_client, _config(tmp_path, database, keys))

    pages = await _pages(client, 1000)

    rows = [row for page in pages for row in page]
    assert len(rows) == len(set(rows)) == 2 * KEY_COUNT
    assert set(rows) == _expected(keys)
    assert [len(page) for page in pages[:-1]] == [1000] * (len(pages) - 1)
    assert len(pages) >= 5


async def test_the_default_page_is_a_thousand_rows_and_bad_requests_are_refused(
    tmp_path: Path, database: Database, aiohttp_client: ClientFactory
) -> None:
    """Without `limit` a page holds 1000 rows; a limit over 1000 or a forged cursor is a 400."""
    client = await _client(aiohttp_client, _config(tmp_path, database, _keys(600)))

    document = await (await client.get("/-/status?keys=1")).json()
    assert len(document["providers"][OPENAI]["keys"]) == 1000
    assert document["next_cursor"]
    for query in ("limit=1001", "limit=0", "limit=ten", "cursor=not-a-cursor"):
        response = await client.get(f"/-/status?keys=1&{query}")
        assert response.status == 400, query


@pytest.mark.parametrize("flags", [["--keys", "--json"], ["--keys"]])
async def test_status_cli_streams_every_stored_row_once(
    tmp_path: Path, database: Database, aiohttp_client: ClientFactory, flags: list[str]
) -> None:
    """`llmgateway status --keys` (table or JSON) prints every stored (key, model) once."""
    keys = _keys(KEY_COUNT)
    config = _config(tmp_path, database, keys)
    client = await _client(aiohttp_client, config)  # the start-up sync stores the keys
    await client.close()

    argv = ["status", "--config", str(config.write()), *flags]
    result = await asyncio.to_thread(CliRunner().invoke, main, argv)  # it runs its own loop

    assert result.exit_code == 0, result.output
    if "--json" in flags:
        document = json.loads(result.output)
        rows = [(k["key"], k["model"]) for k in document["providers"][OPENAI]["keys"]]
        assert document["providers"][OPENAI]["keys_total"] == KEY_COUNT
    else:
        rows = [
            (line.split()[0], line.split()[1])
            for line in result.output.splitlines()
            if line.startswith("  sk-p")
        ]
    assert len(rows) == len(set(rows)) == 2 * KEY_COUNT
    assert set(rows) == _expected(keys)
    assert not any(key in result.output for key in keys)
