"""End to end, on both engines: what a client request may and may not do to a key's status.

An answer seen on client traffic is evidence, not a verdict: a fatal reason makes
the key `verifying` until the keeper's own probe confirms or clears it; a path or
model the provider does not have is the client's error; many working keys failing
alike at once is an incident; server errors switch keys without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp import web
from google.genai import errors as genai_errors

from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.models import KeyRecord
from llmgateway.pool.key_pool import IncidentEvent, PoolEvent
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.databases import postgres_database
from tests.support.gateway import (
    GEMINI,
    MODELS,
    OPENAI,
    TOKENS,
    GatewayConfig,
    RunningGateway,
    ServeGateway,
    StartGateway,
    ask_openai,
    genai_client,
    inline_upstream,
    openai_client,
)

WAIT = 30.0
"""The longest any wait below may take before the test fails (never a timing assertion)."""


def keys(instance: str, *labels: str) -> list[str]:
    """Distinct, long keys for `instance`."""
    return [f"sk-{instance}-{label}-0123456789abcdef" for label in labels]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine_config(
    request: pytest.FixtureRequest, gateway_config: GatewayConfig
) -> AsyncIterator[GatewayConfig]:
    """The e2e configuration on each engine (PostgreSQL: a database of its own)."""
    if request.param == "sqlite":
        yield gateway_config
        return
    async with postgres_database("llmgw_e2e", gateway_config):
        yield gateway_config


def with_keeper(config: GatewayConfig, confirm_within: str = "1s") -> None:
    """Turn the keeper on, looking for due checks often."""
    config.set("keeper.enabled", True)
    config.set("keeper.check_interval", "50ms")
    config.set("keeper.confirm_within", confirm_within)


def record_of(gateway: RunningGateway, instance: str, key: str) -> KeyRecord:
    """The pool's record of `key` for the instance's configured model."""
    for record in gateway.pool.records(instance):
        if record.key == key and record.model == MODELS[instance]:
            return record
    raise AssertionError(f"{key} is not in the pool")


async def until(predicate: Callable[[], bool], what: str, within: float = WAIT) -> None:
    """Wait until `predicate()` holds; fail naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {within} s")
        await asyncio.sleep(0.05)


def statuses(gateway: RunningGateway, instance: str) -> dict[str, Status]:
    """Every key of `instance` with its status for the configured model."""
    return {r.key: r.status for r in gateway.pool.records(instance) if r.model == MODELS[instance]}


async def test_a_bogus_gemini_method_is_relayed_and_touches_no_key(
    engine_config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """POST models/{model}:bogusMethod gets Gemini's own 404; no key changes, nothing is retried."""
    pool_keys = keys(GEMINI, "a", "b", "c")
    for key in pool_keys:
        fake_upstream.set_key(key)
    engine_config.keys[GEMINI] = pool_keys
    gateway = await start_gateway(engine_config)
    events = gateway.pool.subscribe()

    url = f"{gateway.url}/v1beta/models/{MODELS[GEMINI]}:bogusMethod"
    for _ in range(3):
        async with http.post(
            url, headers={"x-goog-api-key": TOKENS[GEMINI]}, json={"contents": []}
        ) as response:
            assert response.status == 404
            body = await response.json()
        assert body["error"]["status"] == "NOT_FOUND"

    assert len(fake_upstream.requests) == 3  # one attempt per request: no key was judged
    assert set(statuses(gateway, GEMINI).values()) == {Status.UNTESTED}
    assert events.empty()


async def test_a_plain_text_404_is_the_clients_error(
    engine_config: GatewayConfig, start_gateway: StartGateway
) -> None:
    """An openai_like upstream answering `404: Not Found` to an unknown path condemns no key."""
    seen: list[str] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": MODELS[OPENAI],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hi"},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        return web.Response(status=404, text="404: Not Found")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_route("*", "/{tail:.*}", elsewhere)
    async with inline_upstream(app) as url:
        engine_config.provider(OPENAI)["api_base_url"] = url
        engine_config.keys[OPENAI] = keys(OPENAI, "a", "b")
        gateway = await start_gateway(engine_config)
        async with openai_client(gateway.url) as client:
            for _ in range(3):
                with pytest.raises(openai.NotFoundError):
                    await client.embeddings.create(model=MODELS[OPENAI], input="hi")
            assert await ask_openai(gateway.url) == "hi"

    assert len(seen) == 4
    assert set(statuses(gateway, OPENAI).values()) <= {Status.UNTESTED, Status.VALID}


async def test_a_spurious_401_on_a_listing_call_is_cleared_by_the_next_probe(
    engine_config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """google-genai's models.list answered 401-like: the key is verifying, then back after a probe."""
    (key,) = keys(GEMINI, "only")
    fake_upstream.set_key(key)
    fake_upstream.set_key(key, Behaviour.INVALID_KEY, models=[""])  # only calls naming no model
    engine_config.keys[GEMINI] = [key]
    with_keeper(engine_config, confirm_within="2s")
    gateway = await start_gateway(engine_config)
    await until(lambda: record_of(gateway, GEMINI, key).status is Status.VALID, "the first probe")
    probes_before = fake_upstream.calls_by_key[key]

    client = genai_client(gateway.url)
    try:
        with pytest.raises(genai_errors.APIError):
            async for _ in await client.aio.models.list():
                pass
        held = record_of(gateway, GEMINI, key)
        assert (held.status, held.reason) == (Status.VERIFYING, ErrorReason.INVALID_KEY)
        assert held.next_check_at is not None and held.last_checked_at is not None
        assert held.next_check_at - held.last_checked_at <= timedelta(seconds=2)
        # Back within confirm_within plus one probe.
        await until(
            lambda: record_of(gateway, GEMINI, key).status is Status.VALID,
            "the confirming probe",
            within=2 + 10,
        )
        assert fake_upstream.calls_by_key[key] >= probes_before + 2  # the listing and the probe
        response = await client.aio.models.generate_content(model=MODELS[GEMINI], contents="hi")
        assert response.text == fake_upstream.text_for(MODELS[GEMINI])
    finally:
        await client.aio.aclose()


async def test_a_real_invalid_key_is_confirmed_then_checked_on_the_long_interval(
    engine_config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """A key revoked mid-run is verifying after a request, invalid_key once a probe confirms it."""
    revoked, good = keys(OPENAI, "revoked", "good")
    fake_upstream.set_key(revoked)
    fake_upstream.set_key(good)
    engine_config.keys[OPENAI] = [revoked, good]
    with_keeper(engine_config)
    gateway = await start_gateway(engine_config)
    await until(
        lambda: set(statuses(gateway, OPENAI).values()) == {Status.VALID}, "the first probes"
    )
    fake_upstream.set_key(revoked, Behaviour.INVALID_KEY)

    for _ in range(4):
        assert await ask_openai(gateway.url) == fake_upstream.text_for(MODELS[OPENAI])
    await until(
        lambda: record_of(gateway, OPENAI, revoked).status is Status.INVALID_KEY,
        "the confirming probe",
    )
    confirmed = record_of(gateway, OPENAI, revoked)
    assert confirmed.next_check_at is not None and confirmed.last_checked_at is not None
    assert confirmed.next_check_at - confirmed.last_checked_at == timedelta(days=10)
    await gateway.write_queue.flush()
    stored = {r.key: r for r in await gateway.store.load_records(OPENAI)}
    assert stored[revoked].status is Status.INVALID_KEY
    assert stored[revoked].reason is ErrorReason.INVALID_KEY


@pytest.mark.slow
async def test_an_incident_condemns_no_key_for_long_and_traffic_recovers(
    engine_config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """Every key killed for 10 s: an incident, 503 naming it, traffic back, no long verdicts."""
    pool_keys = keys(OPENAI, "a", "b", "c", "d")
    for key in pool_keys:
        fake_upstream.set_key(key)
    engine_config.keys[OPENAI] = pool_keys
    with_keeper(engine_config, confirm_within="30s")
    gateway = await start_gateway(engine_config)
    await until(
        lambda: set(statuses(gateway, OPENAI).values()) == {Status.VALID}, "the first probes"
    )
    events = gateway.pool.subscribe()

    for key in pool_keys:
        fake_upstream.set_key(key, Behaviour.INVALID_KEY)
    killed_at = time.monotonic()
    with pytest.raises(openai.InternalServerError) as raised:
        await ask_openai(gateway.url)
    assert raised.value.status_code == 503
    assert "incident" in str(raised.value)
    (incident,) = gateway.pool.incidents()
    assert incident.reason is ErrorReason.INVALID_KEY
    assert any(r.status is Status.VALID for r in gateway.pool.records(OPENAI))  # not condemned

    await asyncio.sleep(max(0.0, 10.0 - (time.monotonic() - killed_at)))
    for key in pool_keys:
        fake_upstream.set_key(key)
    deadline = time.monotonic() + 60
    while True:
        try:
            assert await ask_openai(gateway.url) == fake_upstream.text_for(MODELS[OPENAI])
            break
        except openai.APIStatusError:
            assert time.monotonic() < deadline, "traffic did not recover within 60 s"
            await asyncio.sleep(0.5)
    await until(lambda: not gateway.pool.incidents(), "the incident to end", within=60)
    assert set(statuses(gateway, OPENAI).values()) == {Status.VALID}
    seen: list[PoolEvent] = []
    while not events.empty():
        seen.append(events.get_nowait())
    kinds = [e.kind for e in seen if isinstance(e, IncidentEvent)]
    assert kinds == ["incident_started", "incident_ended"]
    await gateway.write_queue.flush()
    for record in await gateway.store.load_records(OPENAI):
        assert record.status is Status.VALID
        assert record.next_check_at is not None and record.last_checked_at is not None
        assert record.next_check_at - record.last_checked_at <= timedelta(days=1)


async def test_a_flaky_key_is_switched_at_once_then_benched(
    engine_config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """A 5xx key: the retry goes to another key without the (huge) backoff; 3 in a row bench it."""
    flaky, good = keys(OPENAI, "flaky", "good")
    fake_upstream.set_key(flaky, Behaviour.SERVER_ERROR)
    fake_upstream.set_key(good)
    engine_config.keys[OPENAI] = [flaky, good]
    retry = engine_config.provider(OPENAI)["gateway_policy"]["retry"]
    # A backoff sleep would outlast timeouts.total: every request would end 504.
    retry["on_server_error"] = {"attempts": 2, "backoff": "60s", "backoff_factor": 1.0}
    engine_config.provider(OPENAI)["timeouts"]["total"] = "20s"
    gateway = await start_gateway(engine_config)

    for _ in range(10):
        assert await ask_openai(gateway.url) == fake_upstream.text_for(MODELS[OPENAI])
    assert fake_upstream.calls_by_key[flaky] == 3  # benched after 3 server errors in a row
    assert fake_upstream.calls_by_key[good] == 10
    assert record_of(gateway, OPENAI, flaky).status is Status.UNTESTED  # never condemned


async def test_inline_keys_load_without_a_keys_folder(
    engine_config: GatewayConfig,
    serve_gateway: ServeGateway,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    """Inline `keys:` serve although the keys folder does not exist; keyless instances are named."""
    (key,) = keys(OPENAI, "inline")
    fake_upstream.set_key(key)
    section = engine_config.provider(OPENAI)
    section["keys_path"] = str(tmp_path / "never-created")
    section["keys"] = [key]
    engine_config.set("logging.level", "info")
    served = await serve_gateway(engine_config)
    assert await ask_openai(served.url) == fake_upstream.text_for(MODELS[OPENAI])
    output = served.output()
    assert "keys_not_synced" not in output
    assert "instance_has_no_keys" in output and str(tmp_path / "keys" / GEMINI) in output
    assert key not in output
