"""True end to end: `python -m llmgateway serve --config ...` in its own process, driven by the SDKs."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import (
    ASK,
    INSTANCES,
    MODELS,
    OPENAI,
    TOKENS,
    GatewayConfig,
    ServeGateway,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def config(gateway_config: GatewayConfig, fake_upstream: FakeUpstream) -> GatewayConfig:
    """Per instance: an invalid key, a rate-limited key and a good one."""
    for instance in INSTANCES:
        keys = [f"sk-{instance}-{name}-0123456789abcdef" for name in ("invalid", "limited", "good")]
        gateway_config.keys[instance] = keys
        fake_upstream.set_key(keys[0], Behaviour.INVALID_KEY)
        fake_upstream.set_key(keys[1], Behaviour.RATE_LIMITED, retry_after=600)
        fake_upstream.set_key(keys[2])
    return gateway_config


async def test_served_gateway_answers_every_sdk_despite_bad_keys(
    config: GatewayConfig, serve_gateway: ServeGateway, fake_upstream: FakeUpstream
) -> None:
    """The real server process serves each SDK, streamed and not, retrying past the bad keys."""
    config.set("logging.level", "info")
    gateway = await serve_gateway(config)

    for instance in INSTANCES:
        for stream in (False, True, False, True):
            text = await ASK[instance](gateway.url, TOKENS[instance], stream=stream)
            assert text == fake_upstream.text_for(MODELS[instance])

    for instance in INSTANCES:
        for key in config.keys[instance][:2]:
            assert fake_upstream.calls_by_key[key] == 1
        assert fake_upstream.calls_by_key[config.keys[instance][2]] == 4
    output = gateway.output()
    assert "sk-o...cdef" in output  # the access log names the keys tried, masked
    for instance in INSTANCES:
        for key in config.keys[instance]:
            assert key not in output


async def test_served_gateway_cancels_the_upstream_when_the_client_leaves(
    config: GatewayConfig, serve_gateway: ServeGateway, fake_upstream: FakeUpstream
) -> None:
    """A client dropping a stream makes the server process close its upstream connection at once."""
    fake_upstream.chunk_count = 400
    fake_upstream.chunk_delay = 0.05  # a 20 s stream
    config.keys[OPENAI] = [config.keys[OPENAI][2]]
    gateway = await serve_gateway(config)
    body = {"model": MODELS[OPENAI], "messages": [], "stream": True}

    async with aiohttp.ClientSession() as http:
        response = await http.post(
            gateway.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {TOKENS[OPENAI]}"},
        )
        assert response.status == 200
        assert (await response.content.readuntil(b"\n\n")).startswith(b"data: ")
        assert fake_upstream.open_connections == 1
        response.close()

    await fake_upstream.wait_for_connections(0, within=3.0)
    assert gateway.process.returncode is None


async def test_served_gateway_stops_cleanly_on_sigterm(
    config: GatewayConfig, serve_gateway: ServeGateway
) -> None:
    """SIGTERM ends the server process with exit code 0."""
    gateway = await serve_gateway(config)

    gateway.process.terminate()
    code = await asyncio.wait_for(gateway.process.wait(), timeout=15)

    assert code == 0, gateway.output()
