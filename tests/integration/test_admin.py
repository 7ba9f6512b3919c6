"""The operator endpoints on the real application: status, events, metrics, health, auth."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from llmgateway.core.loop_lag import SCHEDSTAT
from llmgateway.web.app import create_app
from llmgateway.web.keys import FOLLOWER, HEARTBEAT, POOL
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import MODELS, OPENAI, TOKENS, GatewayConfig, build_config

GOOD_KEY = "sk-good-0123456789-aaaa"
BAD_KEY = "sk-bad-0123456789-bbbbb"
ADMIN_TOKEN = "admin-secret-0123456789"

ClientFactory = Any  # pytest-aiohttp's aiohttp_client fixture

CPU_WAIT_READABLE = Path(SCHEDSTAT).exists()
"""Linux tells the loop thread's wait for a CPU here (the own part of each lag is measured)."""


def _config(tmp_path: Path, fake: FakeUpstream, keys: list[str]) -> GatewayConfig:
    return build_config(tmp_path, fake.url, {OPENAI: keys})


async def _client(
    aiohttp_client: ClientFactory, config: GatewayConfig
) -> TestClient[web.Request, web.Application]:
    app = create_app(config.accessor())
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    return client


async def _chat(client: TestClient[web.Request, web.Application]) -> int:
    response = await client.post(
        "/v1/chat/completions",
        json={"model": MODELS[OPENAI], "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {TOKENS[OPENAI]}"},
    )
    await response.read()
    return response.status


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_status_reports_the_live_pool(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """/-/status answers the status document of the live pool, keys masked, with this process."""
    fake_upstream.set_key(GOOD_KEY)
    fake_upstream.set_key(BAD_KEY, Behaviour.INVALID_KEY)
    client = await _client(aiohttp_client, _config(tmp_path, fake_upstream, [BAD_KEY, GOOD_KEY]))
    assert await _chat(client) == 200
    response = await client.get("/-/status?keys=1")
    assert response.status == 200
    text = await response.text()
    assert GOOD_KEY not in text and BAD_KEY not in text
    document = json.loads(text)
    oai = document["providers"][OPENAI]
    assert oai["keys_total"] == 2
    assert oai["models"] == {MODELS[OPENAI]: {"valid": 1, "verifying": 1}}
    assert oai["usable"] == {MODELS[OPENAI]: 1}
    assert {(k["key"], k["status"], k["reason"]) for k in oai["keys"]} == {
        ("sk-g...aaaa", "valid", None),
        ("sk-b...bbbb", "verifying", "invalid_key"),
    }
    assert document["process"]["pid"] == os.getpid()


async def test_healthy_and_ready(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """/-/healthy and /-/ready answer 200 once started, without any token."""
    config = _config(tmp_path, fake_upstream, [GOOD_KEY])
    config.set("server.admin_token", ADMIN_TOKEN)
    client = await _client(aiohttp_client, config)
    assert (await client.get("/-/healthy")).status == 200
    assert (await client.get("/-/ready")).status == 200


@pytest.mark.parametrize("path", ["/-/status", "/-/events", "/metrics"])
async def test_admin_token_is_required_when_set(
    path: str, tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """Without the admin token, or with a wrong one, the admin paths answer 401 JSON."""
    config = _config(tmp_path, fake_upstream, [GOOD_KEY])
    config.set("server.admin_token", ADMIN_TOKEN)
    client = await _client(aiohttp_client, config)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
        response = await client.get(path, headers=headers)
        assert response.status == 401
        assert (await response.json())["error"]["type"] == "unauthorized"
    gateway_token = {"Authorization": f"Bearer {TOKENS[OPENAI]}"}
    assert (await client.get(path, headers=gateway_token)).status == 401
    response = await client.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status == 200
    response.close()


async def test_admin_paths_are_not_proxied(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """/metrics and /-/status are answered by the gateway, never sent upstream."""
    client = await _client(aiohttp_client, _config(tmp_path, fake_upstream, [GOOD_KEY]))
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/-/status")).status == 200
    assert fake_upstream.requests == []


async def test_metrics_parse_and_move_as_requests_flow(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """A scrape parses with prometheus' parser and its counters follow the proxied requests."""
    fake_upstream.set_key(GOOD_KEY)
    fake_upstream.set_key(BAD_KEY, Behaviour.INVALID_KEY)
    client = await _client(aiohttp_client, _config(tmp_path, fake_upstream, [BAD_KEY, GOOD_KEY]))
    response = await client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    before = _samples(await response.text())
    ok = ("llmgateway_requests_total", frozenset({("instance", OPENAI), ("code", "200")}))
    assert before.get(ok, 0) == 0
    untested = frozenset({("instance", OPENAI), ("model", MODELS[OPENAI]), ("status", "untested")})
    assert before[("llmgateway_keys", untested)] == 2

    assert await _chat(client) == 200
    assert await _chat(client) == 200
    after_text = await (await client.get("/metrics")).text()
    after = _samples(after_text)
    assert after[ok] == 2
    failed = frozenset({("instance", OPENAI), ("reason", "invalid_key")})
    assert after[("llmgateway_upstream_attempts_failed_total", failed)] == 1
    assert after[("llmgateway_retries_total", failed)] == 1
    upstream_count = ("llmgateway_upstream_seconds_count", frozenset({("instance", OPENAI)}))
    assert after[upstream_count] == 2
    valid = frozenset({("instance", OPENAI), ("model", MODELS[OPENAI]), ("status", "valid")})
    invalid = frozenset({("instance", OPENAI), ("model", MODELS[OPENAI]), ("status", "verifying")})
    assert after[("llmgateway_keys", valid)] == 1
    assert after[("llmgateway_keys", invalid)] == 1
    assert ("llmgateway_write_queue_depth", frozenset()) in after
    assert GOOD_KEY not in after_text and BAD_KEY not in after_text


async def _next_data(response: Any) -> dict[str, Any]:
    """The next `data:` line of an SSE stream, parsed."""
    while True:
        line = (await response.content.readline()).decode()
        if not line:
            raise AssertionError("the event stream ended")
        if line.startswith("data: "):
            data: dict[str, Any] = json.loads(line.removeprefix("data: "))
            return data


async def test_events_announce_an_invalidated_key(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """/-/events sends one JSON event, key masked, when the gateway invalidates a key."""
    fake_upstream.set_key(GOOD_KEY)
    fake_upstream.set_key(BAD_KEY, Behaviour.INVALID_KEY)
    client = await _client(aiohttp_client, _config(tmp_path, fake_upstream, [BAD_KEY, GOOD_KEY]))
    app = client.app
    assert app is not None
    events = await client.get("/-/events")
    assert events.status == 200
    assert events.headers["Content-Type"].startswith("text/event-stream")
    assert await _chat(client) == 200
    first = await asyncio.wait_for(_next_data(events), timeout=5)
    second = await asyncio.wait_for(_next_data(events), timeout=5)
    by_key = {e["key"]: e for e in (first, second)}
    invalidated = by_key["sk-b...bbbb"]
    assert invalidated["instance"] == OPENAI
    assert invalidated["model"] == MODELS[OPENAI]
    assert (invalidated["old"], invalidated["new"]) == ("untested", "verifying")
    assert invalidated["reason"] == "invalid_key"
    assert invalidated["message"]
    assert invalidated["at"].endswith("Z")
    assert by_key["sk-g...aaaa"]["new"] == "valid"
    events.close()
    pool = app[POOL]
    for _ in range(100):  # the handler unsubscribes once it sees the disconnect
        if not pool._hub._subscribers:
            break
        await asyncio.sleep(0.01)
    assert pool._hub._subscribers == []


async def test_events_send_heartbeats(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """An idle /-/events stream carries `: ping` comments at the heartbeat interval."""
    app = create_app(_config(tmp_path, fake_upstream, [GOOD_KEY]).accessor())
    app[HEARTBEAT] = 0.01
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    events = await client.get("/-/events")
    line = await asyncio.wait_for(events.content.readline(), timeout=5)
    assert line == b": ping\r\n"
    events.close()


async def test_shutdown_ends_event_streams(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """On shutdown every /-/events stream is ended so it cannot hold the graceful shutdown."""
    client = await _client(aiohttp_client, _config(tmp_path, fake_upstream, [GOOD_KEY]))
    app = client.app
    assert app is not None
    events = await client.get("/-/events")
    await app.shutdown()
    rest = await asyncio.wait_for(events.content.read(), timeout=5)
    assert b"data:" not in rest
    assert events.content.at_eof()


async def test_keeper_probes_are_counted_by_result(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """With the keeper on, every probe moves llmgateway_probes_total for its result, whatever it is."""
    busy, flaky = "sk-busy-key-0123456789-cc", "sk-flaky-key-0123456789-dd"
    fake_upstream.set_key(GOOD_KEY)
    fake_upstream.set_key(BAD_KEY, Behaviour.INVALID_KEY)
    fake_upstream.set_key(busy, Behaviour.RATE_LIMITED)
    fake_upstream.set_key(flaky, Behaviour.SERVER_ERROR)
    config = _config(tmp_path, fake_upstream, [BAD_KEY, GOOD_KEY, busy, flaky])
    config.set("keeper.enabled", True)
    client = await _client(aiohttp_client, config)
    wanted = {
        ("llmgateway_probes_total", frozenset({("instance", OPENAI), ("result", result)})): 1
        for result in ("valid", "invalid_key", "rate_limited", "server_error")
    }
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for _ in range(500):  # the keeper probes both keys at start-up
        samples = _samples(await (await client.get("/metrics")).text())
        if all(samples.get(name) == value for name, value in wanted.items()):
            break
        await asyncio.sleep(0.01)
    assert {name: samples.get(name) for name in wanted} == wanted


@pytest.mark.parametrize(("worker_index", "follows"), [(None, False), (0, True)])
async def test_a_lone_sqlite_process_follows_nobody(
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    aiohttp_client: ClientFactory,
    worker_index: int | None,
    follows: bool,
) -> None:
    """Alone on its SQLite file a process runs no change feed; a worker of --workers N does."""
    config = _config(tmp_path, fake_upstream, [GOOD_KEY])
    app = create_app(config.accessor(), worker_index=worker_index)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)

    assert (FOLLOWER in app) is follows
    response = await client.get("/-/status")
    document = await response.json()
    assert ("store_view" in document["process"]) is follows


async def test_a_slow_stream_counts_as_upstream_time_not_gateway_overhead(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """The time spent waiting for a stream's chunks goes to the upstream histogram."""
    fake_upstream.set_key(GOOD_KEY)
    fake_upstream.chunk_count = 10
    fake_upstream.chunk_delay = 0.05
    client = await _client(aiohttp_client, _config(tmp_path, fake_upstream, [GOOD_KEY]))
    body = {"model": MODELS[OPENAI], "messages": [], "stream": True}
    headers = {"Authorization": f"Bearer {TOKENS[OPENAI]}"}
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    await response.read()

    after = _samples(await (await client.get("/metrics")).text())
    labels = frozenset({("instance", OPENAI)})
    upstream = after[("llmgateway_upstream_seconds_sum", labels)]
    overhead = after[("llmgateway_gateway_overhead_seconds_sum", labels)]
    assert upstream >= 0.45  # ten chunks 50 ms apart
    assert overhead < upstream / 5


async def test_metrics_show_the_event_loop_lag(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """/metrics carries the lag histogram the application's monitor feeds while it runs."""
    client = await _client(aiohttp_client, _config(tmp_path, fake_upstream, [GOOD_KEY]))
    await asyncio.sleep(0.1)
    samples = _samples(await (await client.get("/metrics")).text())
    count = samples[("llmgateway_event_loop_lag_seconds_count", frozenset())]
    assert count >= 3
    assert ("llmgateway_event_loop_lag_seconds_bucket", frozenset({("le", "0.02")})) in samples
    own = samples[("llmgateway_event_loop_own_lag_seconds_count", frozenset())]
    if CPU_WAIT_READABLE:  # each lag has its own part
        assert own >= 3
    else:
        assert own == 0
    assert not any("key" in dict(labels) for _, labels in samples)
