"""End to end: upstreams that redirect, refuse, hang, babble or answer with big errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from google.genai import errors as genai_errors

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

KEY = "sk-upstream-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKENS[OPENAI]}"}
CHAT_BODY = {"model": MODELS[OPENAI], "messages": [{"role": "user", "content": "hi"}]}

SERVER_ERRORS = {
    OPENAI: openai.InternalServerError,
    ANTHROPIC: anthropic.InternalServerError,
    GEMINI: genai_errors.ServerError,
}
"""What each SDK raises for a 5xx answer."""


def status_code(exc: BaseException) -> int:
    """The HTTP status an SDK exception carries."""
    if isinstance(exc, genai_errors.APIError):
        return exc.code
    assert isinstance(exc, (openai.APIStatusError, anthropic.APIStatusError))
    return exc.status_code


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


@pytest.mark.parametrize("instance", INSTANCES)
async def test_a_refused_port_gives_502_and_no_key_fault(
    one_key: GatewayConfig, start_gateway: StartGateway, refused_port: int, instance: str
) -> None:
    """An upstream where nothing listens gives each SDK a 502 (network_error); the key is kept."""
    one_key.set(f"providers.{instance}.api_base_url", f"http://127.0.0.1:{refused_port}")
    gateway = await start_gateway(one_key)

    with pytest.raises(SERVER_ERRORS[instance]) as caught:
        await ASK[instance](gateway.url, TOKENS[instance])

    assert status_code(caught.value) == 502
    assert key_status(gateway, instance) is Status.UNTESTED


@pytest.mark.parametrize("instance", INSTANCES)
async def test_a_hanging_upstream_gives_504_after_first_byte(
    one_key: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    instance: str,
) -> None:
    """An upstream that never answers gives 504 once first_byte passes (with retries); key kept."""
    fake_upstream.set_key(KEY, Behaviour.HANG)
    one_key.set(f"providers.{instance}.timeouts.first_byte", "100ms")
    gateway = await start_gateway(one_key)

    with pytest.raises(SERVER_ERRORS[instance]) as caught:
        await ASK[instance](gateway.url, TOKENS[instance], stream=True)

    assert status_code(caught.value) == 504
    assert fake_upstream.calls_by_key[KEY] == 3  # first try + on_server_error.attempts (2)
    assert key_status(gateway, instance) is Status.UNTESTED
    await fake_upstream.wait_for_connections(0)  # timed-out requests do not linger upstream


async def test_total_timeout_bounds_every_retry(
    one_key: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """timeouts.total ends the exchange with 504 even when first_byte would allow more waiting."""
    fake_upstream.set_key(KEY, Behaviour.HANG)
    one_key.set("providers.oai.timeouts.first_byte", "10s")
    one_key.set("providers.oai.timeouts.total", "300ms")
    gateway = await start_gateway(one_key)

    with pytest.raises(openai.InternalServerError) as caught:
        await ASK[OPENAI](gateway.url)

    assert caught.value.status_code == 504
    assert fake_upstream.calls_by_key[KEY] == 1
    await fake_upstream.wait_for_connections(0)


@pytest.mark.parametrize("instance", INSTANCES)
async def test_garbage_from_the_upstream_is_502_and_no_key_fault(
    one_key: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream, instance: str
) -> None:
    """Bytes that are not HTTP give the SDK a 502 and never condemn the key."""
    fake_upstream.set_key(KEY, Behaviour.GARBAGE)
    gateway = await start_gateway(one_key)

    with pytest.raises(SERVER_ERRORS[instance]) as caught:
        await ASK[instance](gateway.url, TOKENS[instance])

    assert status_code(caught.value) == 502
    assert key_status(gateway, instance).is_usable
    fake_upstream.set_key(KEY)
    assert await ASK[instance](gateway.url, TOKENS[instance]) == fake_upstream.text_for(
        MODELS[instance]
    )


@pytest.mark.parametrize("behaviour", [Behaviour.SERVER_ERROR, Behaviour.OVERLOADED])
async def test_server_errors_are_retried_then_returned_as_is_without_penalty(
    one_key: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    behaviour: Behaviour,
) -> None:
    """A provider-side error is retried on_server_error times, then the last answer goes back as is."""
    fake_upstream.set_key(KEY, behaviour)
    gateway = await start_gateway(one_key)

    async with http.post(gateway.url + "/v1/chat/completions", json=CHAT_BODY, headers=AUTH) as r:
        status, body = r.status, await r.json()

    assert status >= 500
    assert body["error"]["message"]
    assert fake_upstream.calls_by_key[KEY] == 3
    assert key_status(gateway) is Status.UNTESTED


# -- inline upstreams: a redirect, a large error body --------------------------------------------

BIG_ERROR = (
    b'{"error":{"message":"'
    + b"context too long; " * 12000
    + b'","type":"invalid_request_error","code":"context_length_exceeded"}}'
)


@pytest.fixture
async def odd_upstream(fake_upstream: FakeUpstream) -> AsyncIterator[str]:
    """An upstream redirecting chat to the fake upstream and answering embeddings with BIG_ERROR."""

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        raise web.HTTPFound(fake_upstream.url + "/v1/chat/completions")

    async def embeddings(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=400, headers={"Content-Type": "application/json"})
        response.content_length = len(BIG_ERROR)
        await response.prepare(request)
        for start in range(0, len(BIG_ERROR), 4096):  # many small writes: many TCP segments
            await response.write(BIG_ERROR[start : start + 4096])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    async with inline_upstream(app) as url:
        yield url


async def test_an_upstream_redirect_is_not_followed(
    one_key: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    odd_upstream: str,
    http: aiohttp.ClientSession,
) -> None:
    """A 3xx from the upstream is not followed by the gateway: the key never goes elsewhere."""
    one_key.set("providers.oai.api_base_url", odd_upstream)
    gateway = await start_gateway(one_key)

    async with http.post(
        gateway.url + "/v1/chat/completions", json=CHAT_BODY, headers=AUTH, allow_redirects=False
    ) as response:
        assert response.status != 200
    assert fake_upstream.requests == []
    assert key_status(gateway).is_usable


async def test_a_large_client_error_body_is_returned_whole(
    one_key: GatewayConfig,
    start_gateway: StartGateway,
    odd_upstream: str,
    http: aiohttp.ClientSession,
) -> None:
    """A 400 with a body spread over many TCP segments reaches the client whole, not cut short."""
    one_key.set("providers.oai.api_base_url", odd_upstream)
    gateway = await start_gateway(one_key)

    async with http.post(
        gateway.url + "/v1/embeddings",
        json={"model": MODELS[OPENAI], "input": "x"},
        headers=AUTH,
    ) as response:
        assert response.status == 400
        assert await response.read() == BIG_ERROR
    assert key_status(gateway).is_usable
