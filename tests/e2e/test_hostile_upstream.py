"""End to end against a hostile upstream: no form of a key reaches a client, the store or an event.

Each test configures one key per instance with one `Hostility` and drives the
real application (in-process) with the official SDKs and raw HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from google.genai import errors as genai_errors

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.schemas import AppConfig
from llmgateway.core.constants import Status
from llmgateway.core.masking import mask_key, same_length_mask
from llmgateway.web.app import create_app
from tests.fakes.hostile_upstream import (
    HUGE_ERROR_SIZE,
    HostileUpstream,
    Hostility,
    key_forms,
)
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
    build_config,
)

SDK_ERRORS: Final = {
    OPENAI: openai.APIStatusError,
    ANTHROPIC: anthropic.APIStatusError,
    GEMINI: genai_errors.APIError,
}


def key_of(instance: str, hostility: Hostility) -> str:
    """A distinct realistic key per instance and behaviour."""
    prefix = {OPENAI: "sk-proj-", ANTHROPIC: "sk-ant-api03-", GEMINI: "AIzaSy"}[instance]
    return f"{prefix}{hostility.value.replace('_', '')}{instance}0123456789abcdefXYZ"


def leaked(data: bytes | str, key: str) -> list[str]:
    """The forms of `key` present in `data` (empty: nothing leaked)."""
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    return [name for name, form in key_forms(key).items() if form in text]


def status_of(exc: BaseException) -> int:
    """The HTTP status an SDK exception carries."""
    if isinstance(exc, genai_errors.APIError):
        return exc.code
    assert isinstance(exc, openai.APIStatusError | anthropic.APIStatusError)
    return exc.status_code


def configured(tmp_path: Path, hostile: HostileUpstream, hostility: Hostility) -> GatewayConfig:
    """Every instance at the hostile upstream with one key behaving so."""
    keys = {i: [key_of(i, hostility)] for i in INSTANCES}
    for instance in INSTANCES:
        hostile.set_key(key_of(instance, hostility), hostility)
    return build_config(tmp_path, hostile.url, keys)


def request_of(instance: str, *, stream: bool = False) -> tuple[str, dict[str, str], Any]:
    """(path, headers, JSON body) of a raw generation request in the instance's API."""
    model = MODELS[instance]
    if instance == OPENAI:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        return "/v1/chat/completions", {"Authorization": f"Bearer {TOKENS[OPENAI]}"}, body
    if instance == ANTHROPIC:
        headers = {"x-api-key": TOKENS[ANTHROPIC], "anthropic-version": "2023-06-01"}
        body = {
            "model": model,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        }
        return "/v1/messages", headers, body
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    return f"/v1beta/models/{model}:{method}", {"x-goog-api-key": TOKENS[GEMINI]}, body


async def raw_call(
    http: aiohttp.ClientSession, gateway: RunningGateway, instance: str, *, stream: bool = False
) -> tuple[int, aiohttp.typedefs.LooseHeaders, bytes]:
    """One raw request through the gateway: (status, headers, whole body)."""
    path, headers, body = request_of(instance, stream=stream)
    async with http.post(gateway.url + path, json=body, headers=headers) as response:
        return response.status, response.headers, await response.read()


def all_headers(headers: Any) -> str:
    """Every header name and value of a response, as one text."""
    return "\n".join(f"{name}: {value}" for name, value in headers.items())


# -- echoes in successful answers ------------------------------------------------------------


@pytest.mark.parametrize("instance", INSTANCES)
async def test_a_key_echoed_in_headers_and_body_reaches_the_client_masked(
    tmp_path: Path,
    hostile_upstream: HostileUpstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    instance: str,
) -> None:
    """Echo headers (every form) are masked; the key in the success body keeps its length, masked."""
    key = key_of(instance, Hostility.ECHO)
    gateway = await start_gateway(configured(tmp_path, hostile_upstream, Hostility.ECHO))

    status, headers, body = await raw_call(http, gateway, instance)
    text = await ASK[instance](gateway.url, TOKENS[instance])

    assert status == 200
    assert leaked(all_headers(headers), key) == [] and leaked(body, key) == []
    assert headers["x-echo-key"] == mask_key(key)
    assert text.endswith(f" echo {same_length_mask(key)}")


@pytest.mark.parametrize("instance", INSTANCES)
async def test_a_key_echoed_in_a_stream_is_masked_even_split_between_chunks(
    tmp_path: Path,
    hostile_upstream: HostileUpstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    instance: str,
) -> None:
    """The upstream writes the key in two halves; the client still never sees it."""
    key = key_of(instance, Hostility.ECHO)
    gateway = await start_gateway(configured(tmp_path, hostile_upstream, Hostility.ECHO))

    status, headers, body = await raw_call(http, gateway, instance, stream=True)
    text = await ASK[instance](gateway.url, TOKENS[instance], stream=True)

    assert status == 200
    assert leaked(all_headers(headers), key) == [] and leaked(body, key) == []
    assert text.endswith(f" echo {same_length_mask(key)}")


# -- keys quoted in errors -------------------------------------------------------------------


@pytest.mark.parametrize("instance", INSTANCES)
async def test_a_key_quoted_in_an_error_returned_as_is_is_masked_in_every_form(
    tmp_path: Path,
    hostile_upstream: HostileUpstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    instance: str,
) -> None:
    """A 400 quoting the key raw, \\u-escaped, percent-encoded and in base64 comes back masked."""
    key = key_of(instance, Hostility.QUOTE_BAD_REQUEST)
    gateway = await start_gateway(
        configured(tmp_path, hostile_upstream, Hostility.QUOTE_BAD_REQUEST)
    )

    status, headers, body = await raw_call(http, gateway, instance)
    with pytest.raises(SDK_ERRORS[instance]) as caught:
        await ASK[instance](gateway.url, TOKENS[instance])

    assert status == 400
    assert leaked(body, key) == [] and leaked(all_headers(headers), key) == []
    assert mask_key(key) in body.decode()
    assert status_of(caught.value) == 400
    assert leaked(str(caught.value), key) == []


async def event_texts(gateway: RunningGateway, into: list[str], ready: asyncio.Event) -> None:
    """Collect every `/-/events` line until cancelled; `ready` is set once subscribed."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(gateway.url + "/-/events") as response,
    ):
        ready.set()
        async for line in response.content:
            into.append(line.decode())


async def test_a_key_quoted_in_fatal_and_rate_limit_errors_is_stored_and_shown_masked(
    tmp_path: Path,
    hostile_upstream: HostileUpstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
) -> None:
    """Quoted keys never reach the pool, the store, `/-/status` or `/-/events` unmasked."""
    config = configured(tmp_path, hostile_upstream, Hostility.QUOTE_INVALID)
    limited = key_of(OPENAI, Hostility.QUOTE_RATE_LIMIT)
    hostile_upstream.set_key(limited, Hostility.QUOTE_RATE_LIMIT)
    config.keys[OPENAI].append(limited)
    gateway = await start_gateway(config)
    events: list[str] = []
    subscribed = asyncio.Event()
    listener = asyncio.create_task(event_texts(gateway, events, subscribed))
    await asyncio.wait_for(subscribed.wait(), timeout=10)

    for instance in INSTANCES:
        with pytest.raises(SDK_ERRORS[instance]) as caught:
            await ASK[instance](gateway.url, TOKENS[instance])
        assert status_of(caught.value) >= 400
        assert all(leaked(str(caught.value), k) == [] for k in config.keys[instance])
    await gateway.write_queue.flush()
    async with http.get(gateway.url + "/-/status?keys=1") as response:
        document = await response.read()
    stored = await gateway.store.load_records()
    await asyncio.sleep(0.1)
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)

    keys = [k for i in INSTANCES for k in config.keys[i]]
    records = gateway.pool.records()
    assert {r.status for r in records} != {Status.UNTESTED}  # the errors were recorded
    assert any(r.message for r in records)
    assert all(mask_key(r.key) in r.message for r in records if r.message)
    for key in keys:
        assert leaked(document, key) == []
        assert leaked("".join(events), key) == []
        assert all(leaked(r.message, key) == [] for r in records)
        assert all(leaked(r.message, key) == [] for r in stored)
    assert any(mask_key(k) in "".join(events) for k in keys)


@pytest.mark.parametrize("instance", INSTANCES)
async def test_a_key_quoted_in_a_stream_error_event_is_masked(
    tmp_path: Path,
    hostile_upstream: HostileUpstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    instance: str,
) -> None:
    """The error event reaches the client with the key masked; the stored message too."""
    key = key_of(instance, Hostility.STREAM_ERROR)
    gateway = await start_gateway(configured(tmp_path, hostile_upstream, Hostility.STREAM_ERROR))

    path, headers, body = request_of(instance, stream=True)
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):  # the stream ends as an error
        async with http.post(gateway.url + path, json=body, headers=headers) as response:
            async for chunk in response.content.iter_any():
                received += chunk

    assert b"error" in received and mask_key(key).encode() in received
    assert leaked(bytes(received), key) == []
    (record,) = gateway.pool.records(instance)
    assert record.status is not Status.UNTESTED  # the error event was recorded for the key
    assert mask_key(key) in record.message and leaked(record.message, key) == []


# -- gateway-made errors ---------------------------------------------------------------------


@pytest.mark.parametrize("instance", INSTANCES)
async def test_an_error_body_too_large_to_relay_becomes_a_502_of_the_gateway(
    tmp_path: Path,
    hostile_upstream: HostileUpstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    instance: str,
) -> None:
    """A 10 MB upstream 500 is never cut to 1 MiB and passed on as complete."""
    key = key_of(instance, Hostility.HUGE_ERROR)
    gateway = await start_gateway(configured(tmp_path, hostile_upstream, Hostility.HUGE_ERROR))

    status, _, body = await raw_call(http, gateway, instance)
    with pytest.raises(SDK_ERRORS[instance]) as caught:
        await ASK[instance](gateway.url, TOKENS[instance])

    assert status == 502 and status_of(caught.value) == 502
    assert len(body) < 1000 and b"too large to relay" in body
    assert leaked(body, key) == []
    assert HUGE_ERROR_SIZE > 1024 * 1024


@pytest.mark.parametrize("instance", INSTANCES)
async def test_an_invalid_http_answer_gives_a_502_naming_the_failure_only(
    tmp_path: Path,
    hostile_upstream: HostileUpstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    instance: str,
) -> None:
    """The 502 says what failed, never the upstream's URL or the bytes it sent."""
    key = key_of(instance, Hostility.INVALID_HTTP)
    gateway = await start_gateway(configured(tmp_path, hostile_upstream, Hostility.INVALID_HTTP))

    status, _, body = await raw_call(http, gateway, instance)

    assert status == 502
    text = body.decode()
    assert "the upstream sent an invalid HTTP response" in text
    port = hostile_upstream.url.rsplit(":", 1)[1]
    assert "127.0.0.1" not in text and "http://" not in text and port not in text
    assert "AAAA" not in text and leaked(text, key) == []


async def test_a_refused_connection_is_named_as_such(
    tmp_path: Path, start_gateway: StartGateway, http: aiohttp.ClientSession, refused_port: int
) -> None:
    """Nothing listening: "connection refused", without the address."""
    config = build_config(tmp_path, f"http://127.0.0.1:{refused_port}", {OPENAI: ["sk-x" * 5]})
    gateway = await start_gateway(config)

    status, _, body = await raw_call(http, gateway, OPENAI)

    assert status == 502
    assert "connection refused" in body.decode()
    assert str(refused_port) not in body.decode() and "127.0.0.1" not in body.decode()


# -- methods ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS", "HEAD", "PROPFIND", "PURGE"])
@pytest.mark.parametrize("instance", INSTANCES)
async def test_methods_other_than_the_five_get_405_and_reach_no_upstream(
    tmp_path: Path,
    hostile_upstream: HostileUpstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    method: str,
    instance: str,
) -> None:
    """TRACE and friends are refused in the provider's shape; the upstream sees nothing."""
    gateway = await start_gateway(configured(tmp_path, hostile_upstream, Hostility.OK))
    path, headers, _ = request_of(instance)

    async with http.request(method, gateway.url + path, headers=headers) as response:
        body = await response.read()

    assert response.status == 405
    assert response.headers["Allow"] == "DELETE, GET, PATCH, POST, PUT"
    if method != "HEAD":
        shape = {OPENAI: b'"invalid_request_error"', ANTHROPIC: b'"type":"error"'}
        assert shape.get(instance, b'"code":405') in body
    assert hostile_upstream.requests == []


# -- the outermost guard ---------------------------------------------------------------------


@pytest.fixture
async def credentials_in_url(
    tmp_path: Path, hostile_upstream: HostileUpstream
) -> AsyncIterator[web.Application]:
    """An application whose OpenAI instance has `user:password@` in its URL (validation bypassed)."""
    config = build_config(tmp_path, hostile_upstream.url, {OPENAI: ["sk-proj-0123456789abcdef"]})
    loaded = config.accessor()
    provider = loaded.get_provider(OPENAI)
    assert provider is not None
    origin = hostile_upstream.url.replace("http://", "http://admin:hunter2-password@")
    providers = {p.name: p for p in loaded.providers()}
    providers[OPENAI] = dataclasses.replace(provider, api_base_url=origin)
    app_config = AppConfig(
        server=loaded.server,
        database=loaded.database,
        keeper=loaded.keeper,
        logging=loaded.logging,
        providers=providers,
    )
    yield create_app(ConfigAccessor(app_config))


async def test_an_unforeseen_failure_is_a_provider_shaped_500_not_plain_text(
    credentials_in_url: web.Application, aiohttp_client: Any
) -> None:
    """A configuration that slipped past validation still gets JSON in the provider's shape."""
    client = await aiohttp_client(credentials_in_url)
    path, headers, body = request_of(OPENAI)

    response = await client.post(path, json=body, headers=headers)
    text = await response.text()

    assert response.status == 500
    assert response.content_type == "application/json"
    assert '"type":"server_error"' in text and "hunter2" not in text
