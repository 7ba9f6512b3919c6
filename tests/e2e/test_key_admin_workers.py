"""`serve --workers 2`: a key change made through one worker's API reaches the other's pool.

Each worker is reached over a keep-alive connection of its own (SO_REUSEPORT
spreads connections, not requests), told apart by the pid `/-/status` shows.
A change made through one is looked for in the other's `/-/api/route`
within 2 s: added keys, disabled keys, enabled keys, deleted keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

import aiohttp
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import (
    MODELS,
    OPENAI,
    GatewayConfig,
    SpawnGateway,
    wait_healthy,
)

pytestmark = pytest.mark.slow

ADMIN: Final = "admin-token-0123456789abcdef"
HEADERS: Final = {"Authorization": f"Bearer {ADMIN}"}
FILE_KEYS: Final = [f"sk-workers-file-{i:02d}-0123456789" for i in range(2)]
NEW_KEY: Final = "sk-workers-added-0123456789abcdef"
PROPAGATION: Final = 2.0
"""Seconds a change may take to reach the other worker's pool."""
FIND_WORKERS: Final = 20.0


async def _pid(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/-/status", headers=HEADERS) as response:
        assert response.status == 200
        document = await response.json()
        return int(document["process"]["pid"])


async def _one_session_per_worker(url: str) -> list[aiohttp.ClientSession]:
    """Two sessions, each holding one keep-alive connection to a different worker."""
    by_pid: dict[int, aiohttp.ClientSession] = {}
    spare: list[aiohttp.ClientSession] = []
    async with asyncio.timeout(FIND_WORKERS):
        while len(by_pid) < 2:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            try:
                pid = await _pid(session, url)
            except aiohttp.ClientConnectionError:
                await session.close()
                await asyncio.sleep(0.05)
                continue
            if pid in by_pid:
                spare.append(session)
            else:
                by_pid[pid] = session
    for session in spare:
        await session.close()
    return list(by_pid.values())


async def _route(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(
        url + "/-/api/route",
        params={"instance": OPENAI, "model": MODELS[OPENAI]},
        headers=HEADERS,
    ) as response:
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document


async def _post(session: aiohttp.ClientSession, url: str, path: str, body: Any) -> Any:
    async with session.post(url + "/-/api" + path, json=body, headers=HEADERS) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _until(
    session: aiohttp.ClientSession, url: str, holds: Callable[[dict[str, Any]], bool]
) -> None:
    """Ask the worker's route until `holds`; fail when it does not within PROPAGATION."""
    async with asyncio.timeout(PROPAGATION):
        while True:
            if holds(await _route(session, url)):
                return
            await asyncio.sleep(0.02)


async def test_a_change_through_one_worker_reaches_the_other_within_2_s(
    store_engine: str,
    fake_upstream: FakeUpstream,
    gateway_config: GatewayConfig,
    spawn_gateway: SpawnGateway,
) -> None:
    gateway_config.set("server.admin_token", ADMIN)
    gateway_config.keys[OPENAI] = list(FILE_KEYS)
    for key in [*FILE_KEYS, NEW_KEY]:
        fake_upstream.set_key(key)
    served = await spawn_gateway(gateway_config, "--workers", "2")
    await wait_healthy(served)
    one, other = await _one_session_per_worker(served.url)
    try:
        url = served.url
        answer = await _post(one, url, "/keys", {"instance": OPENAI, "keys": [NEW_KEY]})
        assert answer["added"] == 1
        await _until(other, url, lambda r: r["usable"] == 3)
        await _post(one, url, "/keys/disable", {"filter": {"source": "api"}})
        await _until(
            other,
            url,
            lambda r: r["usable"] == 2 and [s["why"] for s in r["skipped"]] == ["status disabled"],
        )
        await _post(one, url, "/keys/enable", {"filter": {"status": "disabled"}})
        await _until(other, url, lambda r: r["usable"] == 3 and not r["skipped"])
        deleted = await _post(one, url, "/keys/delete", {"filter": {"source": "api"}})
        assert deleted["deleted"] == 1
        await _until(other, url, lambda r: sum(r["counts"].values()) == 2)
    finally:
        await one.close()
        await other.close()
