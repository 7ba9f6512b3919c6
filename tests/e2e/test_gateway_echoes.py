"""What a provider echoes back: its own request id, and sometimes the real key itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from llmgateway.core.logs import mask_key
from tests.support.gateway import (
    GEMINI,
    MODELS,
    OPENAI,
    TOKENS,
    StartGateway,
    build_config,
    inline_upstream,
)

REAL_KEY = "AIzaSyExampleRealKey0123456789abcdef"
QUOTED = {
    "error": {
        "code": 400,
        "message": f"Request contains an invalid argument (consumer 'api_key:{REAL_KEY}').",
        "status": "INVALID_ARGUMENT",
    }
}


@pytest.fixture
async def echoing_upstream() -> AsyncIterator[str]:
    """An upstream quoting the key back (Gemini) and sending its own x-request-id (OpenAI)."""

    async def generate(request: web.Request) -> web.Response:
        key = request.headers.get("x-goog-api-key", "")
        body = orjson.dumps(QUOTED).replace(REAL_KEY.encode(), key.encode())
        return web.Response(status=400, body=body, content_type="application/json")

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(
            {"id": "chatcmpl-1", "object": "chat.completion", "choices": []},
            headers={"x-request-id": "req_provider_123"},
        )

    app = web.Application()
    app.router.add_post("/v1beta/models/{model}:generateContent", generate)
    app.router.add_post("/v1/chat/completions", chat)
    async with inline_upstream(app) as url:
        yield url


async def test_a_key_quoted_in_an_upstream_error_reaches_the_client_masked(
    tmp_path: Path,
    echoing_upstream: str,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
) -> None:
    """The error body is returned as is, except that the real key in it is masked."""
    config = build_config(tmp_path, echoing_upstream, {GEMINI: [REAL_KEY]})
    gateway = await start_gateway(config)

    async with http.post(
        f"{gateway.url}/v1beta/models/{MODELS[GEMINI]}:generateContent",
        json={"contents": []},
        headers={"x-goog-api-key": TOKENS[GEMINI]},
    ) as response:
        raw = await response.read()

    assert response.status == 400
    assert REAL_KEY.encode() not in raw
    assert orjson.loads(raw)["error"]["message"] == QUOTED["error"]["message"].replace(
        REAL_KEY, mask_key(REAL_KEY)
    )


async def test_the_provider_request_id_is_kept_beside_the_gateway_one(
    tmp_path: Path,
    echoing_upstream: str,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
) -> None:
    """The client's x-request-id comes back as is; the provider's own moves to x-upstream-request-id."""
    config = build_config(tmp_path, echoing_upstream, {OPENAI: ["sk-anything-0001"]})
    gateway = await start_gateway(config)

    async with http.post(
        gateway.url + "/v1/chat/completions",
        json={"model": MODELS[OPENAI], "messages": []},
        headers={"Authorization": f"Bearer {TOKENS[OPENAI]}", "x-request-id": "client-42"},
    ) as response:
        await response.read()

    assert response.status == 200
    assert response.headers.getall("x-request-id") == ["client-42"]
    assert response.headers["x-upstream-request-id"] == "req_provider_123"
