"""End to end: bad keys, keys going bad, exhausted and cooling pools, seen through the SDKs."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest
from google.genai import errors as genai_errors

from llmgateway.core.constants import ErrorReason, Status
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
    FakeClock,
    GatewayConfig,
    StartGateway,
)

BAD = (Behaviour.INVALID_KEY, Behaviour.NO_QUOTA, Behaviour.RATE_LIMITED)


def keys_for(instance: str, *names: str) -> list[str]:
    """Distinct, realistic-looking keys of one instance."""
    return [f"sk-{instance}-{name}-0123456789abcdef" for name in names]


@pytest.mark.parametrize("instance", INSTANCES)
async def test_bad_keys_are_tried_once_and_every_request_succeeds(
    gateway_config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    instance: str,
) -> None:
    """Invalid, no-quota and rate-limited keys beside one good key: all requests succeed, each bad key is tried once."""
    bad = dict(zip(keys_for(instance, *BAD), BAD, strict=True))
    (good,) = keys_for(instance, "good")
    for key, behaviour in bad.items():
        fake_upstream.set_key(key, behaviour)
    fake_upstream.set_key(good)
    gateway_config.keys[instance] = [*bad, good]
    gateway = await start_gateway(gateway_config, clock=FakeClock())

    for i in range(8):
        text = await ASK[instance](gateway.url, TOKENS[instance], stream=i % 2 == 1)
        assert text == fake_upstream.text_for(MODELS[instance])

    assert {key: fake_upstream.calls_by_key[key] for key in bad} == dict.fromkeys(bad, 1)
    assert fake_upstream.calls_by_key[good] == 8
    records = {r.key: r for r in gateway.pool.records(instance)}
    assert records[good].status is Status.VALID
    for key, behaviour in bad.items():
        # A fatal reason seen on traffic waits for the keeper's confirming probe.
        held = Status.RATE_LIMITED if behaviour is Behaviour.RATE_LIMITED else Status.VERIFYING
        assert records[key].status is held
        assert records[key].reason is not None and records[key].reason.value == str(behaviour)


async def test_concurrent_requests_all_succeed_beside_bad_keys(
    gateway_config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """Thirty concurrent SDK requests over a pool with bad keys all succeed."""
    bad = keys_for(OPENAI, "invalid", "quota")
    good = keys_for(OPENAI, "good1", "good2")
    fake_upstream.set_key(bad[0], Behaviour.INVALID_KEY)
    fake_upstream.set_key(bad[1], Behaviour.NO_QUOTA)
    for key in good:
        fake_upstream.set_key(key)
    gateway_config.keys[OPENAI] = [*bad, *good]
    gateway = await start_gateway(gateway_config)

    texts = await asyncio.gather(*(ASK[OPENAI](gateway.url, stream=i % 2 == 0) for i in range(30)))

    assert set(texts) == {fake_upstream.text_for(MODELS[OPENAI])}
    # In flight together, a bad key may be picked by a few requests before the first
    # failure takes it out; it is never picked after that.
    assert all(fake_upstream.calls_by_key[k] >= 1 for k in bad)
    after = {k: fake_upstream.calls_by_key[k] for k in bad}
    await asyncio.gather(*(ASK[OPENAI](gateway.url) for _ in range(10)))
    assert {k: fake_upstream.calls_by_key[k] for k in bad} == after


@pytest.mark.parametrize("instance", [OPENAI, GEMINI])
async def test_a_key_turning_invalid_mid_run_fails_no_request(
    gateway_config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    instance: str,
) -> None:
    """When a working key is revoked between requests, no client request fails and it leaves the pool."""
    doomed, other = keys_for(instance, "doomed", "other")
    fake_upstream.set_key(doomed)
    fake_upstream.set_key(other)
    gateway_config.keys[instance] = [doomed, other]
    gateway = await start_gateway(gateway_config)

    expected = fake_upstream.text_for(MODELS[instance])
    for _ in range(4):
        assert await ASK[instance](gateway.url, TOKENS[instance]) == expected
    assert fake_upstream.calls_by_key[doomed] == 2
    fake_upstream.set_key(doomed, Behaviour.INVALID_KEY)
    results = await asyncio.gather(
        *(ASK[instance](gateway.url, TOKENS[instance], stream=i % 2 == 0) for i in range(12))
    )

    assert results == [expected] * 12
    assert fake_upstream.calls_by_key[doomed] <= 2 + 12
    revoked_calls = fake_upstream.calls_by_key[doomed]
    for _ in range(4):
        assert await ASK[instance](gateway.url, TOKENS[instance]) == expected
    assert fake_upstream.calls_by_key[doomed] == revoked_calls
    held = {r.key: r for r in gateway.pool.records(instance)}[doomed]
    assert held.status is Status.VERIFYING
    assert held.reason is ErrorReason.INVALID_KEY


async def test_all_keys_invalid_gives_each_sdk_its_503(
    gateway_config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """With every key invalid, each SDK raises its usual server error carrying the gateway's 503."""
    for instance in INSTANCES:
        gateway_config.keys[instance] = keys_for(instance, "bad1", "bad2")
        for key in gateway_config.keys[instance]:
            fake_upstream.set_key(key, Behaviour.INVALID_KEY)
    gateway = await start_gateway(gateway_config)

    with pytest.raises(openai.InternalServerError) as oai:
        await ASK[OPENAI](gateway.url)
    assert oai.value.status_code == 503
    with pytest.raises(anthropic.InternalServerError) as ant:
        await ASK[ANTHROPIC](gateway.url, stream=True)
    assert ant.value.status_code == 503
    with pytest.raises(genai_errors.ServerError) as gem:
        await ASK[GEMINI](gateway.url)
    assert gem.value.code == 503

    calls = sum(fake_upstream.calls_by_key.values())
    assert calls == 6  # each key tried once, then the pool was empty
    with pytest.raises(openai.InternalServerError):
        await ASK[OPENAI](gateway.url, stream=True)
    assert sum(fake_upstream.calls_by_key.values()) == calls  # no upstream call any more


async def test_all_keys_cooling_gives_429_with_retry_after_then_recovers(
    gateway_config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """Every key rate-limited gives 429 with Retry-After of the soonest return; after it, keys serve again."""
    first, second = keys_for(OPENAI, "rl1", "rl2")
    fake_upstream.set_key(first, Behaviour.RATE_LIMITED, retry_after=7)
    fake_upstream.set_key(second, Behaviour.RATE_LIMITED, retry_after=30)
    gateway_config.keys[OPENAI] = [first, second]
    clock = FakeClock()
    gateway = await start_gateway(gateway_config, clock=clock)

    with pytest.raises(openai.RateLimitError) as caught:
        await ASK[OPENAI](gateway.url)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "7"
    assert fake_upstream.calls_by_key == {first: 1, second: 1}

    clock.advance(3)
    with pytest.raises(openai.RateLimitError) as again:
        await ASK[OPENAI](gateway.url, stream=True)
    assert again.value.response.headers["Retry-After"] == "4"
    assert fake_upstream.calls_by_key == {first: 1, second: 1}  # cooling keys are not tried

    fake_upstream.set_key(first)
    clock.advance(4)
    assert await ASK[OPENAI](gateway.url) == fake_upstream.text_for(MODELS[OPENAI])
    assert fake_upstream.calls_by_key == {first: 2, second: 1}


async def test_requests_succeed_with_the_store_closed(
    gateway_config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """The request path does no database I/O: with the store closed, requests and key failures still work."""
    bad, good = keys_for(OPENAI, "bad", "good")
    fake_upstream.set_key(bad, Behaviour.INVALID_KEY)
    fake_upstream.set_key(good)
    gateway_config.keys[OPENAI] = [bad, good]
    gateway = await start_gateway(gateway_config)
    await gateway.store.close()

    for i in range(6):
        assert await ASK[OPENAI](gateway.url, stream=i % 2 == 0) == fake_upstream.text_for(
            MODELS[OPENAI]
        )
    assert fake_upstream.calls_by_key[bad] == 1
    assert gateway.write_queue.depth >= 1  # the status change waits for the store

    await gateway.store.open()
    await gateway.write_queue.flush()
    stored = {r.key: r for r in await gateway.store.load_records() if r.instance == OPENAI}
    assert stored[bad].status is Status.VERIFYING
    assert stored[bad].reason is ErrorReason.INVALID_KEY
    assert stored[good].status is Status.VALID


async def test_more_dead_keys_than_the_retry_budget_still_reach_the_good_one(
    gateway_config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """Condemned keys do not use up on_key_error.attempts: ten dead keys, one retry allowed, success."""
    dead = keys_for(OPENAI, *(f"dead{i}" for i in range(10)))
    (good,) = keys_for(OPENAI, "good")
    for key in dead:
        fake_upstream.set_key(key, Behaviour.INVALID_KEY)
    fake_upstream.set_key(good)
    gateway_config.keys[OPENAI] = [*dead, good]
    gateway_config.set("providers.oai.gateway_policy.retry.on_key_error.attempts", 1)
    gateway_config.set("providers.oai.gateway_policy.retry.on_key_error.backoff", "1h")
    gateway = await start_gateway(gateway_config)

    assert await ASK[OPENAI](gateway.url) == fake_upstream.text_for(MODELS[OPENAI])
    assert {key: fake_upstream.calls_by_key[key] for key in dead} == dict.fromkeys(dead, 1)
    usable = [r for r in gateway.pool.records(OPENAI) if r.status.is_usable]
    assert [r.key for r in usable] == [good]


async def test_rate_limited_keys_use_the_retry_budget(
    gateway_config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """Rate limits count against on_key_error.attempts: past it, the upstream's 429 is returned."""
    limited = keys_for(OPENAI, "rl1", "rl2", "rl3")
    (good,) = keys_for(OPENAI, "good")
    for key in limited:
        fake_upstream.set_key(key, Behaviour.RATE_LIMITED)
    fake_upstream.set_key(good)
    gateway_config.keys[OPENAI] = [*limited, good]
    gateway_config.set("providers.oai.gateway_policy.retry.on_key_error.attempts", 1)
    gateway = await start_gateway(gateway_config, clock=FakeClock())

    with pytest.raises(openai.RateLimitError):
        await ASK[OPENAI](gateway.url)
    assert sum(fake_upstream.calls_by_key[key] for key in limited) == 2
    assert fake_upstream.calls_by_key[good] == 0


async def test_a_condemned_key_does_not_cost_a_new_upstream_connection(
    gateway_config: GatewayConfig, start_gateway: StartGateway, fake_upstream: FakeUpstream
) -> None:
    """After an error answer read to its end, the retry reuses the same keep-alive connection."""
    dead = keys_for(OPENAI, "dead1", "dead2")
    (good,) = keys_for(OPENAI, "good")
    for key in dead:
        fake_upstream.set_key(key, Behaviour.INVALID_KEY)
    fake_upstream.set_key(good)
    gateway_config.keys[OPENAI] = [*dead, good]
    gateway = await start_gateway(gateway_config)

    for _ in range(3):
        assert await ASK[OPENAI](gateway.url) == fake_upstream.text_for(MODELS[OPENAI])

    assert sum(fake_upstream.calls_by_key[key] for key in dead) == 2
    assert fake_upstream.accepted_connections == 1
