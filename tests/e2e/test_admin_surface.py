"""End to end: the admin surface is closed by default, tokens are rate-limited per address.

The served gateway listens on 0.0.0.0; a client connecting through this
host's own non-loopback address is "the network", one through 127.0.0.1 is
local. Malformed requests and failed tokens are sent the way an attacker
would, and the process's output is read back.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import (
    ASK,
    OPENAI,
    TOKENS,
    GatewayConfig,
    ServeGateway,
    StartGateway,
    build_config,
    openai_client,
)

KEY: Final = "sk-admin-surface-0123456789abcdef"
ADMIN_TOKEN: Final = "admin-token-0123456789abcdef"
ADMIN_PATHS: Final = ("/-/status", "/-/events", "/metrics", "/-/api/keys", "/-/ui")
"""The admin paths, the key admin API among them, and one that does not exist yet: all behind
the same guard."""


def network_address() -> str:
    """An address of this host that is not loopback (skip the test when there is none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
            address: str = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        pytest.skip("this host has no non-loopback address")
    return address


@pytest.fixture
def open_config(gateway_config: GatewayConfig, fake_upstream: FakeUpstream) -> GatewayConfig:
    """The gateway on 0.0.0.0 with one good OpenAI key and no admin token."""
    gateway_config.set("server.host", "0.0.0.0")
    gateway_config.keys[OPENAI] = [KEY]
    fake_upstream.set_key(KEY)
    return gateway_config


async def get(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str]:
    """GET `url`; (status, body) — an SSE stream is cut after its headers."""
    async with session.get(url, headers=headers) as response:
        if response.content_type == "text/event-stream":
            return response.status, ""
        return response.status, await response.text()


async def test_without_an_admin_token_only_loopback_clients_are_served(
    open_config: GatewayConfig, serve_gateway: ServeGateway, http: aiohttp.ClientSession
) -> None:
    """/-/*, /metrics (and paths added later) answer 127.0.0.1; the network gets 403 JSON."""
    gateway = await serve_gateway(open_config)
    port = int(open_config.tree["server"]["port"])
    outside = f"http://{network_address()}:{port}"

    for path in ADMIN_PATHS:
        status, body = await get(http, outside + path)
        assert status == 403, path
        assert "server.admin_token" in body and '"forbidden"' in body
    assert (await get(http, outside + "/-/healthy"))[0] == 200
    assert (await get(http, outside + "/-/ready"))[0] == 200
    local = {path: (await get(http, gateway.url + path))[0] for path in ADMIN_PATHS}
    assert local == {
        "/-/status": 200,
        "/-/events": 200,
        "/metrics": 200,
        "/-/api/keys": 200,
        "/-/ui": 404,
    }
    assert await ASK[OPENAI](outside) == await ASK[OPENAI](gateway.url)  # proxying is unchanged
    warnings = [
        line for line in gateway.output().splitlines() if "admin_surface_loopback_only" in line
    ]
    assert len(warnings) == 1 and "warning" in warnings[0].lower()


async def test_with_an_admin_token_the_network_needs_it(
    open_config: GatewayConfig, serve_gateway: ServeGateway, http: aiohttp.ClientSession
) -> None:
    """With server.admin_token set, any client with the token is served, any without gets 401."""
    open_config.set("server.admin_token", ADMIN_TOKEN)
    gateway = await serve_gateway(open_config)
    port = int(open_config.tree["server"]["port"])
    outside = f"http://{network_address()}:{port}"

    for base in (outside, gateway.url):
        assert (await get(http, base + "/-/status"))[0] == 401
        assert (await get(http, base + "/metrics", Authorization="Bearer wrong-token-000000"))[
            0
        ] == 401
        authorized = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert (await get(http, base + "/-/status", **authorized))[0] == 200
        assert (await get(http, base + "/metrics", **authorized))[0] == 200
    assert "admin_surface_loopback_only" not in gateway.output()


@pytest.fixture
async def events_of() -> AsyncIterator[list[aiohttp.ClientResponse]]:
    """Open `/-/events` responses, closed after the test."""
    opened: list[aiohttp.ClientResponse] = []
    yield opened
    for response in opened:
        response.close()


async def test_event_subscribers_are_capped(
    open_config: GatewayConfig,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    events_of: list[aiohttp.ClientResponse],
) -> None:
    """Past server.max_event_subscribers streams, /-/events answers 503 until one leaves."""
    open_config.set("server.max_event_subscribers", 3)
    gateway = await start_gateway(open_config)

    for _ in range(3):
        events_of.append(await http.get(gateway.url + "/-/events"))
    async with http.get(gateway.url + "/-/events") as refused:
        body = await refused.json()
    events_of.pop().close()
    for _ in range(100):  # until the server has noticed the closed stream
        again = await http.get(gateway.url + "/-/events")
        if again.status == 200:
            break
        again.close()
        await asyncio.sleep(0.05)
    events_of.append(again)

    assert [r.status for r in events_of] == [200, 200, 200]
    assert refused.status == 503 and "max_event_subscribers" in body["error"]["message"]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


async def test_failed_tokens_are_limited_per_address_and_valid_tokens_never_slowed(
    open_config: GatewayConfig, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """After 60 wrong tokens the address gets 429 with Retry-After; the right token still works."""
    gateway = await start_gateway(open_config)

    for attempt in range(60):
        with pytest.raises(openai.AuthenticationError):
            await ASK[OPENAI](gateway.url, f"guess-{attempt:04d}-0123456789abcdef")
    async with openai_client(gateway.url, "guess-9999-0123456789abcdef") as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-4o-mini", messages=[])
    no_token = await http.post(gateway.url + "/v1/chat/completions", json={})
    good = await ASK[OPENAI](gateway.url, TOKENS[OPENAI])
    async with http.get(gateway.url + "/metrics") as response:
        metrics = await response.text()

    retry_after = caught.value.response.headers["Retry-After"]
    assert 1 <= int(retry_after) <= 60
    assert caught.value.body == {
        "message": "too many failed token attempts from this address; retry later",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert no_token.status == 401  # no token at all is not a guess: not counted, not blocked
    assert good
    assert metric(metrics, "llmgateway_auth_failures_total", surface="proxy") == 61
    assert metric(metrics, "llmgateway_auth_failures_total", surface="admin") == 0


async def test_failed_admin_tokens_are_limited_too(
    open_config: GatewayConfig, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """Wrong admin tokens count for the address as well: 429 JSON after the limit."""
    open_config.set("server.admin_token", ADMIN_TOKEN)
    open_config.set("server.auth_failures_per_minute", 5)
    gateway = await start_gateway(open_config)

    statuses = [
        (await get(http, gateway.url + "/-/status", Authorization=f"Bearer wrong-{i:020d}"))[0]
        for i in range(6)
    ]
    blocked = await http.get(gateway.url + "/-/status")
    good = await get(http, gateway.url + "/metrics", Authorization=f"Bearer {ADMIN_TOKEN}")

    assert statuses == [401] * 5 + [429]
    assert blocked.status == 429 and "Retry-After" in blocked.headers
    assert good[0] == 200
    assert metric(good[1], "llmgateway_auth_failures_total", surface="admin") == 6


async def test_malformed_requests_give_one_short_warning_each_rate_limited(
    open_config: GatewayConfig, serve_gateway: ServeGateway
) -> None:
    """Garbage needs no token: each bad request is one WARNING line, no traceback, 10 a minute."""
    gateway = await serve_gateway(open_config)
    port = int(open_config.tree["server"]["port"])

    for _ in range(15):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBroken Header Line\r\n\r\n")
        await writer.drain()
        assert b" 400 " in (await reader.read()).split(b"\r\n", 1)[0]
        writer.close()
    await ASK[OPENAI](gateway.url)  # the gateway still serves

    output = gateway.output()
    lines = [line for line in output.splitlines() if "malformed client request" in line]
    assert len(lines) == 10
    assert all("warning" in line.lower() for line in lines)
    assert "Traceback" not in output and "Error handling request" not in output


def test_the_limit_is_per_address_and_bounded(tmp_path: Path) -> None:
    """Configuration sanity: the defaults are the documented ones."""
    config = build_config(tmp_path, "http://127.0.0.1:9").accessor()
    assert config.server.auth_failures_per_minute == 60
    assert config.server.max_event_subscribers == 100
