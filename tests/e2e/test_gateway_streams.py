"""End to end: streams that end early, on either side of the gateway."""

from __future__ import annotations

import aiohttp
import anthropic
import httpx
import httpx2
import openai
import pytest
import structlog
from google.genai import errors as genai_errors
from structlog.contextvars import merge_contextvars

from llmgateway.core.constants import Status
from tests.fakes.family import Behaviour
from tests.fakes.fixtures import CuttingProxyFactory
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import (
    ANTHROPIC,
    ASK,
    INSTANCES,
    MODELS,
    OPENAI,
    TOKENS,
    GatewayConfig,
    RunningGateway,
    StartGateway,
    anthropic_client,
)

KEY = "sk-stream-key-0123456789abcdef"
CHAT = {"model": MODELS[OPENAI], "messages": [{"role": "user", "content": "hi"}], "stream": True}
AUTH = {"Authorization": f"Bearer {TOKENS[OPENAI]}"}

SDK_STREAM_ERRORS = (openai.APIError, httpx.HTTPError)
"""What the OpenAI SDK raises when a stream breaks (httpx's protocol error is not wrapped)."""

ANY_SDK_STREAM_ERROR = (
    openai.APIError,
    anthropic.APIError,
    genai_errors.APIError,
    httpx.HTTPError,
    httpx2.HTTPError,
    aiohttp.ClientError,
)
"""What any of the three SDKs may raise for a broken stream (anthropic reads with httpx2, google-genai with aiohttp)."""


def key_status(gateway: RunningGateway, instance: str = OPENAI) -> Status:
    """The pool's status of KEY for the instance's model."""
    (record,) = [r for r in gateway.pool.records(instance) if r.key == KEY]
    return record.status


@pytest.fixture
def one_key(gateway_config: GatewayConfig, fake_upstream: FakeUpstream) -> GatewayConfig:
    """KEY as the only key of every instance."""
    for instance in INSTANCES:
        gateway_config.keys[instance] = [KEY]
    fake_upstream.set_key(KEY)
    return gateway_config


async def test_client_disconnect_mid_stream_frees_the_upstream_connection(
    one_key: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """A client leaving mid-stream closes the gateway's upstream connection, key not penalised."""
    fake_upstream.chunk_count = 200
    fake_upstream.chunk_delay = 0.05  # a 10 s stream: only a cancelled one ends sooner
    gateway = await start_gateway(one_key)

    response = await http.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=AUTH)
    assert response.status == 200
    first = await response.content.readuntil(b"\n\n")
    assert first.startswith(b"data: ")
    assert fake_upstream.open_connections == 1
    response.close()  # drop the connection mid-stream

    await fake_upstream.wait_for_connections(0)
    assert fake_upstream.accepted_connections == 1
    assert key_status(gateway) is Status.VALID
    fake_upstream.chunk_delay = 0.0
    assert await ASK[OPENAI](gateway.url) == fake_upstream.text_for(MODELS[OPENAI])


async def test_sdk_leaving_a_stream_early_frees_the_upstream_connection(
    one_key: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """The Anthropic SDK closing its stream after the first text frees the upstream connection."""
    fake_upstream.chunk_count = 200
    fake_upstream.chunk_delay = 0.05
    gateway = await start_gateway(one_key)

    async with anthropic_client(gateway.url) as client:
        async with client.messages.stream(
            model=MODELS[ANTHROPIC], max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as events:
            async for text in events.text_stream:
                assert text == f"hello from {MODELS[ANTHROPIC]}"
                break
        await fake_upstream.wait_for_connections(0)

    assert key_status(gateway, ANTHROPIC) is Status.VALID


@pytest.mark.parametrize("instance", INSTANCES)
async def test_upstream_cut_mid_stream_is_an_error_for_the_sdk(
    one_key: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream, instance: str
) -> None:
    """An upstream connection aborted mid-stream makes the SDK raise, and the key stays usable."""
    fake_upstream.set_key(KEY, Behaviour.CUT_STREAM, after_chunks=3)
    gateway = await start_gateway(one_key)

    with pytest.raises(ANY_SDK_STREAM_ERROR):
        await ASK[instance](gateway.url, TOKENS[instance], stream=True)

    assert fake_upstream.calls_by_key[KEY] == 1  # after the first byte: no retry
    assert key_status(gateway, instance).is_usable
    fake_upstream.set_key(KEY)
    text = await ASK[instance](gateway.url, TOKENS[instance], stream=True)
    assert text == fake_upstream.text_for(MODELS[instance])


async def test_upstream_cut_ends_the_client_stream_as_an_error_not_a_clean_end(
    one_key: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """The client gets the bytes sent before the cut, then a broken response (no final chunk)."""
    fake_upstream.set_key(KEY, Behaviour.CUT_STREAM, after_chunks=3)
    gateway = await start_gateway(one_key)

    async with http.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=AUTH) as resp:
        assert resp.status == 200
        received = bytearray()
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in resp.content.iter_any():
                received += data
    assert received.count(b"data: ") == 3
    assert b"[DONE]" not in received


async def test_a_tcp_cut_below_http_is_an_sdk_error_and_no_key_fault(
    one_key: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    cutting_proxy: CuttingProxyFactory,
) -> None:
    """A TCP proxy cutting the upstream stream after some bytes gives the SDK an error; key kept."""
    proxy = await cutting_proxy(fake_upstream.port, cut_after_bytes=600)
    one_key.set("providers.oai.api_base_url", proxy.url)
    gateway = await start_gateway(one_key)

    with pytest.raises(SDK_STREAM_ERRORS):
        await ASK[OPENAI](gateway.url, stream=True)

    assert proxy.cuts == 1
    assert fake_upstream.calls_by_key[KEY] == 1
    assert key_status(gateway).is_usable
    proxy.cut_after_bytes = None
    assert await ASK[OPENAI](gateway.url, stream=True) == fake_upstream.text_for(MODELS[OPENAI])


async def test_a_body_cut_with_streaming_disabled_is_a_502(
    one_key: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """With streaming disabled, an upstream body cut short becomes the gateway's 502; key kept."""
    fake_upstream.set_key(KEY, Behaviour.CUT_STREAM)
    one_key.set("providers.oai.gateway_policy.streaming_mode", "disabled")
    gateway = await start_gateway(one_key)

    with pytest.raises(openai.InternalServerError) as caught:
        await ASK[OPENAI](gateway.url)
    assert caught.value.status_code == 502
    assert key_status(gateway).is_usable


async def test_total_timeout_mid_stream_breaks_the_stream_cleanly(
    one_key: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """`timeouts.total` passing mid-stream ends the client's stream as an error, nothing appended."""
    fake_upstream.chunk_count = 100
    fake_upstream.chunk_delay = 0.05
    one_key.set("providers.oai.timeouts.total", "0.5s")
    gateway = await start_gateway(one_key)

    async with http.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=AUTH) as resp:
        assert resp.status == 200
        received = bytearray()
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in resp.content.iter_any():
                received += data
    events = bytes(received).split(b"\n\n")
    assert events[-1] == b"" or events[-1].startswith(b"data: ")
    assert all(e.startswith(b"data: {") for e in events[:-1])
    await fake_upstream.wait_for_connections(0)
    assert key_status(gateway).is_usable


@pytest.mark.parametrize("instance", INSTANCES)
async def test_an_in_band_error_event_reaches_the_sdk_and_spares_the_key(
    one_key: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream, instance: str
) -> None:
    """A provider-side error event inside a 200 stream makes the SDK raise; the key stays usable."""
    fake_upstream.set_key(KEY, Behaviour.STREAM_ERROR_EVENT, after_chunks=2)
    gateway = await start_gateway(one_key)

    with pytest.raises(ANY_SDK_STREAM_ERROR):
        await ASK[instance](gateway.url, TOKENS[instance], stream=True)

    assert fake_upstream.calls_by_key[KEY] == 1
    assert key_status(gateway, instance).is_usable


async def test_an_in_band_error_event_ends_the_response_as_an_error(
    one_key: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """The error event is relayed, then the client's stream breaks instead of ending cleanly."""
    fake_upstream.set_key(KEY, Behaviour.STREAM_ERROR_EVENT, after_chunks=2)
    gateway = await start_gateway(one_key)

    received = bytearray()
    async with http.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=AUTH) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in resp.content.iter_any():
                received += data

    assert b'"error"' in received
    assert b"[DONE]" not in received
    assert key_status(gateway).is_usable


async def test_every_log_line_of_a_request_carries_its_request_id(
    one_key: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """The warning about a cut stream and the access line both name the client's x-request-id."""
    fake_upstream.set_key(KEY, Behaviour.CUT_STREAM)
    gateway = await start_gateway(one_key)

    with structlog.testing.capture_logs(processors=[merge_contextvars]) as logs:
        headers = AUTH | {"x-request-id": "rid-77"}
        async with http.post(
            gateway.url + "/v1/chat/completions", json=CHAT, headers=headers
        ) as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        await fake_upstream.wait_for_connections(0)

    mine = [e for e in logs if e.get("request_id") == "rid-77"]
    assert {e["event"] for e in mine} >= {"upstream_stream_broke_off", "request"}
    assert all(e.get("request_id") in (None, "rid-77") for e in logs)
