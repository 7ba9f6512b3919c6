"""End to end: each provider's official SDK through the gateway, streaming and not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import (
    ASK,
    GEMINI,
    INSTANCES,
    MODELS,
    OPENAI,
    TOKENS,
    GatewayConfig,
    StartGateway,
    build_config,
    inline_upstream,
)

GOOD_KEYS = {
    OPENAI: ["sk-openai-good-0001"],
    "claude": ["sk-ant-good-0001"],
    GEMINI: ["AIza-good-0001"],
}


@pytest.fixture
def config(gateway_config: GatewayConfig, fake_upstream: FakeUpstream) -> GatewayConfig:
    """One good key per instance, known to the fake."""
    for instance, keys in GOOD_KEYS.items():
        gateway_config.keys[instance] = list(keys)
        for key in keys:
            fake_upstream.set_key(key)
    return gateway_config


@pytest.mark.parametrize("instance", INSTANCES)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_sdk_reply_arrives_intact(
    config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    instance: str,
    stream: bool,
) -> None:
    """The SDK gets exactly the text the fake sent, streamed or not, with the real key upstream."""
    gateway = await start_gateway(config)

    text = await ASK[instance](gateway.url, TOKENS[instance], stream=stream)

    assert text == fake_upstream.text_for(MODELS[instance])
    (seen,) = fake_upstream.requests
    assert seen.key == GOOD_KEYS[instance][0]
    assert seen.stream is stream


async def test_streaming_disabled_answers_whole_with_content_length(
    config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """With streaming_mode disabled a streamed request is answered whole, with Content-Length."""
    config.set("providers.oai.gateway_policy.streaming_mode", "disabled")
    gateway = await start_gateway(config)
    body = {"model": MODELS[OPENAI], "messages": [], "stream": True}
    headers = {"Authorization": f"Bearer {TOKENS[OPENAI]}"}

    async with http.post(gateway.url + "/v1/chat/completions", json=body, headers=headers) as resp:
        data = await resp.read()
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(data))
        assert "Transfer-Encoding" not in resp.headers
    assert data.endswith(b"data: [DONE]\n\n")
    # The SDK still reads the whole SSE answer as a stream.
    assert await ASK[OPENAI](gateway.url, stream=True) == fake_upstream.text_for(MODELS[OPENAI])


# -- SSE byte-exactness: an inline upstream with awkward framing -----------------------------

SSE_CHUNKS = [
    b": keep-alive comment\r\n\r\n",
    b'data: {"choices":[{"delta":{"content":"h\xc3',  # a UTF-8 character split across chunks
    b'\xa9llo"}}]}\n\n',
    b"event: custom\nid: 7\nretry: 100\ndata: line one\ndata: line two\n\n",
    b"data: [DO",
    b"NE]\n\n",
]


@pytest.fixture
async def awkward_upstream() -> AsyncIterator[str]:
    """The URL of an OpenAI-like upstream streaming SSE_CHUNKS one by one."""

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in SSE_CHUNKS:
            await response.write(chunk)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with inline_upstream(app) as url:
        yield url


async def test_sse_is_relayed_byte_exact_chunk_by_chunk(
    tmp_path: Path,
    awkward_upstream: str,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
) -> None:
    """Every SSE byte arrives unchanged and each upstream chunk is flushed as it comes."""
    config = build_config(tmp_path, awkward_upstream, {OPENAI: ["sk-anything-0001"]})
    gateway = await start_gateway(config)
    body = {"model": MODELS[OPENAI], "messages": [], "stream": True}
    received: list[bytes] = []

    async with http.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {TOKENS[OPENAI]}"},
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        async for data, _ in response.content.iter_chunks():
            received.append(data)

    assert b"".join(received) == b"".join(SSE_CHUNKS)
    # Flushed per chunk: the client saw the stream in several pieces, not one buffered blob.
    assert len(received) >= 3
