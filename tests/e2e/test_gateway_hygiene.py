"""End to end: what the gateway lets through, in each direction, and what it refuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from google.genai import errors as genai_errors
from yarl import URL

from llmgateway.core.constants import Status
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import (
    ANTHROPIC,
    ASK,
    GEMINI,
    INSTANCES,
    MODELS,
    OPENAI,
    TOKENS,
    GatewayConfig,
    RunningGateway,
    StartGateway,
    inline_upstream,
)

REAL = {
    OPENAI: "sk-proj-real-openai-0123456789abcdef",
    ANTHROPIC: "sk-ant-api03-real-0123456789abcdef",
    GEMINI: "AIzaSyReal-gemini-0123456789abcdef",
}
"""The one real key of each instance."""

GEMINI_PATH = f"/v1beta/models/{MODELS[GEMINI]}:generateContent"
CHAT_BODY = {"model": MODELS[OPENAI], "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def config(gateway_config: GatewayConfig, fake_upstream: FakeUpstream) -> GatewayConfig:
    """One real key per instance, known to the fake."""
    for instance in INSTANCES:
        gateway_config.keys[instance] = [REAL[instance]]
        fake_upstream.set_key(REAL[instance])
    return gateway_config


def status_of(gateway: RunningGateway, instance: str = OPENAI) -> Status:
    """The pool's status of the instance's real key."""
    (record,) = [r for r in gateway.pool.records(instance) if r.key == REAL[instance]]
    return record.status


async def raw_exchange(url: str, request_head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes exactly as given (no client-side path normalisation); the status and raw answer."""
    host, _, port = url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request_head + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), head
    finally:
        writer.close()


# -- what reaches the upstream -----------------------------------------------------------------


@pytest.mark.parametrize("instance", INSTANCES)
async def test_the_gateway_token_never_reaches_the_upstream(
    config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream, instance: str
) -> None:
    """Each SDK's request arrives with the real key set the provider's way and no gateway token."""
    gateway = await start_gateway(config)

    for stream in (False, True):
        await ASK[instance](gateway.url, TOKENS[instance], stream=stream)

    for seen in fake_upstream.requests:
        assert seen.key == REAL[instance]
        wire = repr(list(seen.headers.items())).encode() + seen.raw_path.encode() + seen.body
        assert TOKENS[instance].encode() not in wire
        carriers = {"authorization", "x-api-key", "x-goog-api-key"} & {
            h.lower() for h in seen.headers
        }
        expected = {OPENAI: "authorization", ANTHROPIC: "x-api-key", GEMINI: "x-goog-api-key"}
        assert carriers == {expected[instance]}


async def test_hop_by_hop_and_credential_headers_are_not_forwarded(
    config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """Hop-by-hop fields, those named by Connection, and Proxy-Authorization stay at the gateway."""
    gateway = await start_gateway(config)
    headers = {
        "Authorization": f"Bearer {TOKENS[OPENAI]}",
        "Connection": "keep-alive, X-Private-Hop",
        "X-Private-Hop": "secret",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
        "TE": "trailers",
        "X-Client-Trace": "trace-1",
        "OpenAI-Beta": "assistants=v2",
    }
    async with http.post(
        gateway.url + "/v1/chat/completions?api-version=2024-06-01", json=CHAT_BODY, headers=headers
    ) as response:
        assert response.status == 200

    (seen,) = fake_upstream.requests
    for name in ("X-Private-Hop", "Keep-Alive", "Proxy-Authorization", "TE"):
        assert name not in seen.headers
    assert seen.headers.get("Connection", "keep-alive").lower() == "keep-alive"
    assert seen.headers["X-Client-Trace"] == "trace-1"
    assert seen.headers["OpenAI-Beta"] == "assistants=v2"
    assert seen.raw_path == "/v1/chat/completions?api-version=2024-06-01"
    assert json.loads(seen.body) == CHAT_BODY


@pytest.mark.parametrize(
    "query",
    [f"?key={TOKENS[GEMINI]}", f"?alt=sse&k%65y={TOKENS[GEMINI]}"],
    ids=["plain", "encoded-name"],
)
async def test_gemini_key_query_parameter_authenticates_and_is_removed(
    config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    query: str,
) -> None:
    """A Gemini client may send the token as `?key=`; the upstream sees only the real key header."""
    gateway = await start_gateway(config)
    url = URL(gateway.url + GEMINI_PATH + query, encoded=True)
    payload = {"contents": [{"parts": [{"text": "hi"}]}]}

    async with http.post(url, json=payload) as response:
        assert response.status == 200
        reply = await response.json()

    assert reply["candidates"][0]["content"]["parts"][0]["text"] == fake_upstream.text_for(
        MODELS[GEMINI]
    )
    (seen,) = fake_upstream.requests
    assert seen.headers["x-goog-api-key"] == REAL[GEMINI]
    assert "key" not in seen.query
    assert TOKENS[GEMINI] not in seen.raw_path


@pytest.mark.parametrize(
    ("instance", "path", "header"),
    [
        (GEMINI, GEMINI_PATH, "x-goog-api-key"),
        (ANTHROPIC, "/v1/messages", "x-api-key"),
        (OPENAI, "/v1/chat/completions", "x-api-key"),
    ],
)
async def test_header_carriers_authenticate(
    config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    instance: str,
    path: str,
    header: str,
) -> None:
    """x-goog-api-key and x-api-key carry the gateway token like Bearer does."""
    gateway = await start_gateway(config)
    body = {
        OPENAI: CHAT_BODY,
        ANTHROPIC: {"model": MODELS[ANTHROPIC], "max_tokens": 8, "messages": CHAT_BODY["messages"]},
        GEMINI: {"contents": [{"parts": [{"text": "hi"}]}]},
    }[instance]

    async with http.post(gateway.url + path, json=body, headers={header: TOKENS[instance]}) as resp:
        assert resp.status == 200

    (seen,) = fake_upstream.requests
    assert seen.key == REAL[instance]


# -- what reaches the client -------------------------------------------------------------------


@pytest.fixture
async def chatty_upstream() -> AsyncIterator[str]:
    """An upstream answering with hop-by-hop headers, one named by its Connection header."""

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        headers = {
            "Connection": "keep-alive, X-Upstream-Hop",
            "X-Upstream-Hop": "internal",
            "Keep-Alive": "timeout=30",
            "Proxy-Authenticate": "Basic realm=upstream",
            "X-Upstream-Visible": "yes",
        }
        return web.json_response({"ok": True}, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with inline_upstream(app) as url:
        yield url


async def test_upstream_hop_by_hop_headers_are_not_relayed(
    config: GatewayConfig,
    start_gateway: StartGateway,
    chatty_upstream: str,
    http: aiohttp.ClientSession,
) -> None:
    """Hop-by-hop response fields, and those the upstream's Connection names, stay at the gateway."""
    config.set("providers.oai.api_base_url", chatty_upstream)
    gateway = await start_gateway(config)

    async with http.post(
        gateway.url + "/v1/chat/completions",
        json=CHAT_BODY,
        headers={"Authorization": f"Bearer {TOKENS[OPENAI]}"},
    ) as response:
        assert response.status == 200
        assert await response.json() == {"ok": True}
        for name in ("X-Upstream-Hop", "Keep-Alive", "Proxy-Authenticate"):
            assert name not in response.headers
        assert response.headers["X-Upstream-Visible"] == "yes"


async def test_the_real_key_never_reaches_the_client(
    config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """Neither a success nor an error relayed from the upstream shows the client a real key."""
    fake_upstream.set_key(REAL[OPENAI], Behaviour.BAD_REQUEST)
    gateway = await start_gateway(config)
    headers = {"Authorization": f"Bearer {TOKENS[OPENAI]}"}
    answers: list[bytes] = []

    for stream in (False, True):
        async with http.post(
            gateway.url + "/v1/chat/completions",
            json=CHAT_BODY | {"stream": stream},
            headers=headers,
        ) as response:
            assert response.status == 400  # a client error is returned as is, not retried
            answers.append(repr(list(response.headers.items())).encode() + await response.read())
    fake_upstream.set_key(REAL[OPENAI])
    async with http.post(
        gateway.url + "/v1/chat/completions", json=CHAT_BODY, headers=headers
    ) as response:
        assert response.status == 200
        answers.append(repr(list(response.headers.items())).encode() + await response.read())

    assert fake_upstream.calls_by_key[REAL[OPENAI]] == 3
    for answer in answers:
        assert REAL[OPENAI].encode() not in answer
        assert REAL[OPENAI][-8:].encode() not in answer
    assert status_of(gateway) is Status.VALID


async def test_request_id_is_echoed_or_generated(
    config: GatewayConfig, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A client's x-request-id comes back on the answer; without one the gateway makes a fresh one."""
    gateway = await start_gateway(config)
    headers = {"Authorization": f"Bearer {TOKENS[OPENAI]}"}
    url = gateway.url + "/v1/chat/completions"

    async with http.post(url, json=CHAT_BODY, headers=headers | {"X-Request-Id": "abc-123"}) as r:
        assert r.headers["x-request-id"] == "abc-123"
    generated = set()
    for _ in range(2):
        async with http.post(url, json=CHAT_BODY, headers=headers) as r:
            generated.add(r.headers["x-request-id"])
    async with http.post(url, json=CHAT_BODY, headers={"X-Request-Id": "err-1"}) as r:
        assert r.status == 401
        assert r.headers["x-request-id"] == "err-1"
    assert len(generated) == 2
    assert all(len(rid) >= 16 for rid in generated)


# -- refused before going upstream -------------------------------------------------------------


async def test_two_different_credentials_are_refused(
    config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """Two valid tokens of different instances in one request get 401 and nothing goes upstream."""
    gateway = await start_gateway(config)
    headers = {"Authorization": f"Bearer {TOKENS[OPENAI]}", "x-api-key": TOKENS[ANTHROPIC]}

    async with http.post(
        gateway.url + "/v1/chat/completions", json=CHAT_BODY, headers=headers
    ) as r:
        assert r.status == 401
        assert (await r.json())["error"]["message"]
    assert fake_upstream.requests == []


async def test_unknown_token_gets_401_in_each_sdk_shape(
    config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """An unknown token makes each SDK raise its authentication error, shaped by the path."""
    gateway = await start_gateway(config)

    with pytest.raises(openai.AuthenticationError) as oai:
        await ASK[OPENAI](gateway.url, "not-a-token")
    assert oai.value.status_code == 401
    with pytest.raises(anthropic.AuthenticationError) as ant:
        await ASK[ANTHROPIC](gateway.url, "not-a-token")
    assert isinstance(ant.value.body, dict)
    assert ant.value.body["type"] == "error"
    assert ant.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(genai_errors.ClientError) as gem:
        await ASK[GEMINI](gateway.url, "not-a-token")
    assert gem.value.code == 401
    assert gem.value.status == "UNAUTHENTICATED"
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/chat/completions", {"error": {"message", "type", "param", "code"}}),
        ("/v1/messages", {"type", "error"}),
        (GEMINI_PATH, {"error": {"code", "message", "status"}}),
    ],
)
async def test_no_token_gets_401_shaped_by_the_path(
    config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    path: str,
    shape: dict[str, set[str]] | set[str],
) -> None:
    """Without any token the 401 body has the error shape of the API family the path belongs to."""
    gateway = await start_gateway(config)

    async with http.post(gateway.url + path, json={}) as response:
        assert response.status == 401
        body = await response.json()
    if isinstance(shape, set):
        assert set(body) == shape
    else:
        assert set(body["error"]) >= shape["error"]
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    "path",
    ["/v1/../admin", "/v1/chat/../../secret", "/v1/%2e%2e/admin", "/v1/%2E%2E%2fadmin", "/v1/./x"],
)
async def test_paths_climbing_out_of_the_base_url_are_refused(
    config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream, path: str
) -> None:
    """Dot segments, raw or percent-encoded, are refused with a 4xx and never sent upstream."""
    gateway = await start_gateway(config)
    body = json.dumps(CHAT_BODY).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKENS[OPENAI]}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()

    status, _ = await raw_exchange(gateway.url, head, body)

    assert 400 <= status < 500
    assert fake_upstream.requests == []


async def test_body_over_max_body_mb_gets_413(
    config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """A body larger than server.max_body_mb is refused with 413, with or without Content-Length."""
    config.set("server.max_body_mb", 0.001)  # 1048 bytes
    gateway = await start_gateway(config)
    big = "x" * 5000

    with pytest.raises(openai.APIStatusError) as caught:
        async with openai.AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key=TOKENS[OPENAI], max_retries=0
        ) as client:
            await client.chat.completions.create(
                model=MODELS[OPENAI], messages=[{"role": "user", "content": big}]
            )
    assert caught.value.status_code == 413

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 500

    async with http.post(
        gateway.url + "/v1/chat/completions",
        data=chunked(),
        headers={"Authorization": f"Bearer {TOKENS[OPENAI]}"},
    ) as response:
        assert response.status == 413
        assert (await response.json())["error"]["message"]
    assert fake_upstream.requests == []
    # A small body still passes.
    assert await ASK[OPENAI](gateway.url) == fake_upstream.text_for(MODELS[OPENAI])
