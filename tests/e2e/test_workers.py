"""`llmgateway serve --workers 2` as real processes: one port, two pools that stay in step."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.databases import postgres_database
from tests.support.gateway import MODELS, OPENAI, TOKENS, GatewayConfig, ServedGateway, ServeGateway

pytestmark = pytest.mark.slow

KEYS = [f"k{i:03d}-worker-key-0123456789-{i:03d}" for i in range(12)]
"""Distinct masks (first and last four characters differ)."""
EXIT_TIMEOUT = 30.0
WAIT = 20.0
"""Seconds a bounded wait on the workers gets before the test fails."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(
    request: pytest.FixtureRequest, gateway_config: GatewayConfig
) -> AsyncIterator[str]:
    """The configuration's database: its SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    async with postgres_database("llmgw_workers", gateway_config, pool_max_size=4):
        yield "postgres"


async def _status(url: str) -> dict[str, Any]:
    """`/-/status` over a fresh connection (SO_REUSEPORT spreads connections, not requests)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.get(url + "/-/status?keys=1") as response,
    ):
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document


async def _by_pid(served: ServedGateway, predicate: Any = None) -> dict[int, dict[str, Any]]:
    """Status documents of both workers (each satisfying `predicate`), within WAIT seconds."""
    seen: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(WAIT):
        while len(seen) < 2:
            try:
                document = await _status(served.url)
            except aiohttp.ClientConnectionError:
                # Seen once in 20 runs right after start-up: a refused connection while
                # the second worker joins the port. Asked again, as `/-/healthy` is.
                await asyncio.sleep(0.05)
                continue
            if predicate is None or predicate(document):
                seen[document["process"]["pid"]] = document
    return seen


def _statuses(document: dict[str, Any]) -> dict[str, str]:
    return {k["key"]: k["status"] for k in document["providers"][OPENAI]["keys"]}


async def test_two_workers_share_the_port_follow_each_other_and_exit_0(
    engine: str,
    fake_upstream: FakeUpstream,
    gateway_config: GatewayConfig,
    serve_gateway: ServeGateway,
) -> None:
    """Two workers answer on one port, probe each key once, share a condemnation, exit 0 on SIGTERM."""
    for key in KEYS:
        fake_upstream.set_key(key)
    gateway_config.keys[OPENAI] = list(KEYS)
    gateway_config.set("server.workers", 2)
    gateway_config.set("keeper.enabled", True)
    gateway_config.set("keeper.confirm_within", "1s")
    served = await serve_gateway(gateway_config)

    def all_valid(document: dict[str, Any]) -> bool:
        return set(_statuses(document).values()) == {"valid"}

    workers = await _by_pid(served, all_valid)
    assert {d["process"]["worker_index"] for d in workers.values()} == {0, 1}
    roles = sorted(d["process"]["store_view"]["keeper"] for d in workers.values())
    # SQLite: one worker probes, the other follows; PostgreSQL: both lease due checks.
    assert roles == (["probing", "standby"] if engine == "sqlite" else ["probing", "probing"])
    probes = {k: fake_upstream.calls_by_key[k] for k in KEYS}
    assert probes == dict.fromkeys(KEYS, 1)

    # A key revoked now is condemned by whichever worker a request lands on ...
    revoked = KEYS[0]
    fake_upstream.set_key(revoked, Behaviour.INVALID_KEY)
    async with aiohttp.ClientSession() as session:
        for _ in range(len(KEYS) + 1):
            async with session.post(
                served.url + "/v1/chat/completions",
                json={"model": MODELS[OPENAI], "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {TOKENS[OPENAI]}"},
            ) as response:
                assert response.status == 200
    # ... and both workers' pools learn it, once a probe confirmed what traffic suspected.
    masked = revoked[:4] + "..." + revoked[-4:]

    def condemned(document: dict[str, Any]) -> bool:
        return _statuses(document).get(masked) == "invalid_key"

    await _by_pid(served, condemned)

    served.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(served.process.wait(), timeout=EXIT_TIMEOUT)
    assert code == 0, served.output()
    assert fake_upstream.calls_by_key[revoked] >= 2  # its probe, then the request that condemned it


async def test_a_worker_dying_stops_the_others_and_serve_exits_1(
    fake_upstream: FakeUpstream, gateway_config: GatewayConfig, serve_gateway: ServeGateway
) -> None:
    """A worker killed from outside makes the supervisor stop the other one and exit non-zero."""
    fake_upstream.set_key(KEYS[0])
    gateway_config.keys[OPENAI] = [KEYS[0]]
    gateway_config.set("server.workers", 2)
    served = await serve_gateway(gateway_config)
    pids = list(await _by_pid(served))
    os.kill(pids[0], signal.SIGKILL)
    code = await asyncio.wait_for(served.process.wait(), timeout=EXIT_TIMEOUT)
    assert code == 1, served.output()
    assert "worker_died" in served.output()
    with pytest.raises(ProcessLookupError):
        os.kill(pids[1], 0)


async def test_the_old_worker_section_is_warned_about_once(
    fake_upstream: FakeUpstream, gateway_config: GatewayConfig, serve_gateway: ServeGateway
) -> None:
    """`worker:` still configures the keeper; the warning is logged once, not once per worker."""
    fake_upstream.set_key(KEYS[0])
    gateway_config.keys[OPENAI] = [KEYS[0]]
    gateway_config.tree["worker"] = gateway_config.tree.pop("keeper")
    gateway_config.set("server.workers", 2)
    served = await serve_gateway(gateway_config)
    await _by_pid(served)
    output = served.output()
    assert output.count("config_deprecated") == 1, output
    assert "`worker:`" in output and "`keeper:`" in output
