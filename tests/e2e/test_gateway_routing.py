"""End to end: which pool a request is served from, and requests the client sends badly."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from llmgateway.core.constants import Status
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import (
    MODELS,
    OPENAI,
    TOKENS,
    GatewayConfig,
    RunningGateway,
    StartGateway,
    openai_client,
)

FIRST = "sk-route-first-0123456789abcdef"
SECOND = "sk-route-second-0123456789abcdef"
OTHER_MODEL = "gpt-4o"
AUTH = {"Authorization": f"Bearer {TOKENS[OPENAI]}"}


def status_of(gateway: RunningGateway, key: str, model: str) -> Status | None:
    """The pool's status of `key` for `model` of the OpenAI instance, None when not in the pool."""
    for record in gateway.pool.records(OPENAI):
        if record.key == key and record.model == model:
            return record.status
    return None


@pytest.fixture
def two_keys(gateway_config: GatewayConfig, fake_upstream: FakeUpstream) -> GatewayConfig:
    """Two good OpenAI keys; the instance configures MODELS[OPENAI] and OTHER_MODEL."""
    gateway_config.keys[OPENAI] = [FIRST, SECOND]
    gateway_config.set("providers.oai.models", {MODELS[OPENAI]: {}, OTHER_MODEL: {}})
    fake_upstream.set_key(FIRST)
    fake_upstream.set_key(SECOND)
    return gateway_config


async def chat(url: str, model: str, content: str = "hi") -> str:
    """One non-streaming completion for `model` through the OpenAI SDK."""
    async with openai_client(url) as client:
        completion = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}]
        )
    return completion.choices[0].message.content or ""


async def test_no_model_for_a_configured_model_holds_the_key_for_that_model_only(
    two_keys: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """A key without access to a configured model leaves that model's pool only, pending a probe."""
    fake_upstream.set_key(FIRST, Behaviour.NO_MODEL, models=[OTHER_MODEL])
    gateway = await start_gateway(two_keys)

    for _ in range(4):
        assert await chat(gateway.url, OTHER_MODEL) == fake_upstream.text_for(OTHER_MODEL)
        assert await chat(gateway.url, MODELS[OPENAI]) == fake_upstream.text_for(MODELS[OPENAI])

    assert status_of(gateway, FIRST, OTHER_MODEL) is Status.VERIFYING
    assert status_of(gateway, FIRST, MODELS[OPENAI]) is Status.VALID
    models_asked_with_first = [r.model for r in fake_upstream.requests if r.key == FIRST]
    assert models_asked_with_first.count(OTHER_MODEL) == 1
    assert models_asked_with_first.count(MODELS[OPENAI]) == 2


async def test_an_unknown_model_uses_the_default_pool_and_no_model_is_returned_as_is(
    two_keys: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """An unconfigured model is served from default_model's pool; its no_model is the client's problem."""
    fake_upstream.set_key(FIRST, Behaviour.NO_MODEL, models=["gpt-unknown"])
    fake_upstream.set_key(SECOND, Behaviour.NO_MODEL, models=["gpt-unknown"])
    gateway = await start_gateway(two_keys)

    assert await chat(gateway.url, "gpt-4.1-nano") == fake_upstream.text_for("gpt-4.1-nano")
    with pytest.raises(openai.NotFoundError):
        await chat(gateway.url, "gpt-unknown")

    assert len([r for r in fake_upstream.requests if r.model == "gpt-unknown"]) == 1  # no retry
    assert status_of(gateway, FIRST, MODELS[OPENAI]) is not Status.NO_MODEL
    assert status_of(gateway, SECOND, MODELS[OPENAI]) is not Status.NO_MODEL
    assert status_of(gateway, FIRST, "gpt-unknown") is None


async def test_a_bodyless_get_is_proxied(
    two_keys: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """`GET /v1/models` (no body, no model) is proxied with a key of the default pool."""
    gateway = await start_gateway(two_keys)

    async with openai_client(gateway.url) as client:
        models = [m.id async for m in client.models.list()]

    assert MODELS[OPENAI] in models
    (seen,) = fake_upstream.requests
    assert seen.method == "GET"
    assert seen.body == b""


async def test_a_client_trickling_its_body_is_cut_by_the_total_timeout(
    two_keys: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """A body that never finishes arriving is answered with 408 once timeouts.total passes."""
    two_keys.set("providers.oai.timeouts.total", "300ms")
    gateway = await start_gateway(two_keys)
    host, _, port = gateway.url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
            f"Authorization: Bearer {TOKENS[OPENAI]}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            '{"model": "'
        ).encode()
    )
    await writer.drain()

    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    writer.close()

    assert head.split(b" ", 2)[1] == b"408"
    assert fake_upstream.requests == []


async def test_a_large_body_over_the_limit_gets_413_not_a_broken_connection(
    two_keys: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """A 2 MB body against a 1 MB limit is refused with a readable 413."""
    two_keys.set("server.max_body_mb", 1)
    gateway = await start_gateway(two_keys)

    with pytest.raises(openai.APIStatusError) as caught:
        await chat(gateway.url, MODELS[OPENAI], "x" * (2 * 1024 * 1024))

    assert caught.value.status_code == 413
    assert fake_upstream.requests == []
