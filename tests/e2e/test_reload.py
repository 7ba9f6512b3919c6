"""Reload without restart, seen from outside: SIGHUP and `POST /-/api/reload` on `llmgateway serve`."""

from __future__ import annotations

import asyncio
import copy
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from llmgateway.config.live import LiveConfig
from llmgateway.web.app import create_app
from llmgateway.web.keys import LIVE, POOL, RELOADS
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import (
    ANTHROPIC,
    MODELS,
    OPENAI,
    TOKENS,
    GatewayConfig,
    ServedGateway,
    ServeGateway,
)
from tests.support.processes import wait_until

pytestmark = pytest.mark.slow

KEY = "sk-reload-kept-0123456789abcdef"
CLAUDE_KEY = "sk-ant-reload-0123456789abcdef"
EXTRA = "oai-extra"
EXTRA_KEY = "sk-reload-added-0123456789abcdef"
EXTRA_TOKEN = "gw-token-extra-0123456789"
NEW_TOKEN = "gw-token-openai-renewed-0123456789"
ADDED_MODEL = "gpt-4.1-reloaded"
WAIT = 20.0
"""Seconds a bounded wait on the gateway gets before the test fails."""


def _masked(key: str) -> str:
    return f"{key[:4]}...{key[-4:]}"


def _chat(stream: bool = False, model: str = MODELS[OPENAI]) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }


async def _status(url: str) -> dict[str, Any]:
    """`/-/status` over a fresh connection (with workers, each connection may land elsewhere)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.get(url + "/-/status?keys=1") as response,
    ):
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document


async def _ask(url: str, token: str, *, model: str = MODELS[OPENAI]) -> int:
    """The status of one chat completion of `model` sent with `token`."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.post(
            url + "/v1/chat/completions",
            json=_chat(model=model),
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        await response.read()
        return response.status


async def _reload(url: str, query: str = "") -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.post(url + "/-/api/reload" + query) as response,
    ):
        document: dict[str, Any] = await response.json()
        return response.status, document


async def _until(
    url: str, predicate: Callable[[dict[str, Any]], bool], *, processes: int = 1
) -> dict[int, dict[str, Any]]:
    """Status documents of `processes` distinct processes that satisfy `predicate`."""
    seen: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(WAIT):
        while len(seen) < processes:
            try:
                document = await _status(url)
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
                continue
            if predicate(document):
                seen[document["process"]["pid"]] = document
            else:
                await asyncio.sleep(0.05)
    return seen


def _add_extra(config: GatewayConfig) -> None:
    """A second openai-like instance with its own key and token."""
    extra = copy.deepcopy(config.provider(OPENAI))
    extra["keys_path"] = str(config.tmp_path / "keys" / EXTRA)
    extra["access_control"] = {"gateway_access_token": EXTRA_TOKEN}
    config.tree["providers"][EXTRA] = extra
    config.keys[EXTRA] = [EXTRA_KEY]


def _has_extra(document: dict[str, Any]) -> bool:
    return EXTRA in document["providers"]


@asynccontextmanager
async def _in_process(config: GatewayConfig) -> AsyncIterator[tuple[web.Application, str]]:
    """The gateway of `config` served in this process, reloadable from its file; its URL."""
    path = config.write()
    app = create_app(LiveConfig(config.accessor(), path=path, env=config.env))
    server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
    await server.start_server()
    try:
        yield app, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
def keyed(gateway_config: GatewayConfig, fake_upstream: FakeUpstream) -> GatewayConfig:
    """KEY for the openai instance, CLAUDE_KEY for the anthropic one; every key answers."""
    for key in (KEY, CLAUDE_KEY, EXTRA_KEY):
        fake_upstream.set_key(key)
    gateway_config.keys[OPENAI] = [KEY]
    gateway_config.keys[ANTHROPIC] = [CLAUDE_KEY]
    gateway_config.set("logging.level", "info")  # the reload's own lines are info
    return gateway_config


async def test_sighup_swaps_instances_tokens_and_keys(
    keyed: GatewayConfig, fake_upstream: FakeUpstream, serve_gateway: ServeGateway
) -> None:
    """Added instance serves, removed one's keys leave, a new token replaces the old at once."""
    served = await serve_gateway(keyed)
    assert await _ask(served.url, TOKENS[OPENAI]) == 200

    _add_extra(keyed)
    del keyed.tree["providers"][ANTHROPIC]
    keyed.provider(OPENAI)["access_control"]["gateway_access_token"] = NEW_TOKEN
    keyed.write()
    served.process.send_signal(signal.SIGHUP)

    (document,) = (await _until(served.url, _has_extra)).values()
    assert ANTHROPIC not in document["providers"]
    assert [k["key"] for k in document["providers"][EXTRA]["keys"]] == [_masked(EXTRA_KEY)]
    assert await _ask(served.url, EXTRA_TOKEN) == 200
    assert fake_upstream.calls_by_key[EXTRA_KEY] == 1
    assert await _ask(served.url, NEW_TOKEN) == 200
    assert await _ask(served.url, TOKENS[OPENAI]) == 401
    assert await _ask(served.url, TOKENS[ANTHROPIC]) == 401
    assert served.process.returncode is None
    output = served.output()
    assert "config_reloaded" in output
    for secret in (EXTRA_KEY, EXTRA_TOKEN, NEW_TOKEN):
        assert secret not in output


async def test_statuses_survive_a_reload_and_nothing_is_probed_again(
    keyed: GatewayConfig, fake_upstream: FakeUpstream, serve_gateway: ServeGateway
) -> None:
    """Kept keys keep their probed status; a changed instance keeps its keys; no new probe."""
    keyed.set("keeper.enabled", True)
    served = await serve_gateway(keyed)

    def probed(document: dict[str, Any]) -> bool:
        keys = document["providers"][OPENAI]["keys"]
        return [k["status"] for k in keys] == ["valid"]

    await _until(served.url, probed)
    probes = fake_upstream.calls_by_key[KEY]
    keyed.provider(OPENAI)["timeouts"]["total"] = "40s"  # the instance changes, its keys do not
    _add_extra(keyed)
    keyed.write()
    served.process.send_signal(signal.SIGHUP)

    (document,) = (await _until(served.url, _has_extra)).values()
    assert [(k["key"], k["status"]) for k in document["providers"][OPENAI]["keys"]] == [
        (_masked(KEY), "valid")
    ]
    assert fake_upstream.calls_by_key[KEY] == probes


async def test_a_stream_in_flight_finishes_on_the_configuration_it_started_with(
    keyed: GatewayConfig, fake_upstream: FakeUpstream, serve_gateway: ServeGateway
) -> None:
    """A stream of an instance removed meanwhile ends whole; new requests for it get 401."""
    fake_upstream.chunk_delay = 0.1
    served = await serve_gateway(keyed)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            served.url + "/v1/chat/completions",
            json=_chat(stream=True),
            headers={"Authorization": f"Bearer {TOKENS[OPENAI]}"},
        ) as response,
    ):
        assert response.status == 200
        first = await response.content.readline()
        assert first.startswith(b"data: ")
        del keyed.tree["providers"][OPENAI]
        keyed.write()
        served.process.send_signal(signal.SIGHUP)
        await _until(served.url, lambda d: OPENAI not in d["providers"])
        assert await _ask(served.url, TOKENS[OPENAI]) == 401
        rest = await response.content.read()
    text = (first + rest).decode()
    assert text.rstrip().endswith("data: [DONE]")
    for i in range(1, fake_upstream.chunk_count):
        assert f" #{i}" in text


async def test_an_invalid_file_changes_nothing(
    keyed: GatewayConfig, serve_gateway: ServeGateway
) -> None:
    """A reload of a file with problems answers them, logs them, and the old config serves on."""
    served = await serve_gateway(keyed)
    keyed.provider(OPENAI)["access_control"]["gateway_access_token"] = NEW_TOKEN
    keyed.provider(ANTHROPIC)["provider_type"] = "nope"
    keyed.write()

    status, answer = await _reload(served.url)

    assert status == 200
    assert answer["applied"] is False
    assert any("provider_type" in error for error in answer["errors"])
    assert await _ask(served.url, TOKENS[OPENAI]) == 200
    assert await _ask(served.url, NEW_TOKEN) == 401
    served.process.send_signal(signal.SIGHUP)
    await _wait_for_output(served, "config_reload_failed", count=2)
    assert await _ask(served.url, TOKENS[OPENAI]) == 200


async def test_a_dry_run_answers_the_diff_and_changes_nothing(
    keyed: GatewayConfig, serve_gateway: ServeGateway
) -> None:
    """`?dry_run=1` compares only; the same reload without it applies."""
    served = await serve_gateway(keyed)
    _add_extra(keyed)
    del keyed.tree["providers"][ANTHROPIC]
    keyed.provider(OPENAI)["access_control"]["gateway_access_token"] = NEW_TOKEN
    keyed.write()

    status, answer = await _reload(served.url, "?dry_run=1")
    assert status == 200
    expected = {"added": [EXTRA], "removed": [ANTHROPIC], "changed": [OPENAI], "errors": []}
    assert answer == {"applied": False, **expected}
    assert await _ask(served.url, TOKENS[OPENAI]) == 200
    assert not _has_extra(await _status(served.url))

    status, answer = await _reload(served.url)
    assert (status, answer) == (200, {"applied": True, **expected})
    assert await _ask(served.url, NEW_TOKEN) == 200


async def test_an_option_fixed_while_serving_is_refused(
    keyed: GatewayConfig, serve_gateway: ServeGateway
) -> None:
    """A new port is an error of the reload; nothing else of the file is applied."""
    served = await serve_gateway(keyed)
    keyed.set("server.port", int(keyed.tree["server"]["port"]) + 1)
    _add_extra(keyed)
    keyed.write()
    status, answer = await _reload(served.url)
    assert status == 200
    assert answer["applied"] is False
    assert answer["added"] == [EXTRA]
    assert answer["errors"] == [
        "server.port cannot change while serving; restart llmgateway to apply it"
    ]
    assert not _has_extra(await _status(served.url))


async def test_bad_reload_requests_are_refused(
    keyed: GatewayConfig, serve_gateway: ServeGateway
) -> None:
    """An unknown parameter or a dry_run that is no yes/no gets 400 in the API's error shape."""
    served = await serve_gateway(keyed)
    for query in ("?dry_run=maybe", "?force=1"):
        status, answer = await _reload(served.url, query)
        assert status == 400
        assert set(answer["error"]) == {"message", "code"}


async def _wait_for_output(served: ServedGateway, text: str, count: int = 1) -> None:
    await wait_until(lambda: served.output().count(text) >= count, WAIT, f"{count} x {text}")


@pytest.mark.parametrize("through", ["sighup", "api"])
async def test_a_reload_reaches_every_worker(
    through: str, keyed: GatewayConfig, serve_gateway: ServeGateway
) -> None:
    """With --workers 2, SIGHUP to the supervisor or the API of one worker reloads both."""
    keyed.set("server.workers", 2)
    served = await serve_gateway(keyed)
    await _until(served.url, lambda d: not _has_extra(d), processes=2)
    _add_extra(keyed)
    keyed.write()
    if through == "sighup":
        served.process.send_signal(signal.SIGHUP)
    else:
        status, answer = await _reload(served.url)
        assert (status, answer["applied"], answer["added"]) == (200, True, [EXTRA])

    workers = await _until(served.url, _has_extra, processes=2)
    assert {d["process"]["worker_index"] for d in workers.values()} == {0, 1}
    assert await _ask(served.url, EXTRA_TOKEN) == 200
    served.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(served.process.wait(), timeout=30) == 0, served.output()


async def test_in_process_the_pool_follows_the_reload(
    keyed: GatewayConfig, fake_upstream: FakeUpstream
) -> None:
    """A removed instance's keys leave the pool, an added one's enter it, kept ones keep state."""
    async with _in_process(keyed) as (app, url):
        pool = app[POOL]
        assert await _ask(url, TOKENS[OPENAI]) == 200
        (kept,) = pool.records(OPENAI)
        assert [r.key for r in pool.records(ANTHROPIC)] == [CLAUDE_KEY]

        _add_extra(keyed)
        del keyed.tree["providers"][ANTHROPIC]
        keyed.provider(OPENAI)["access_control"]["gateway_access_token"] = NEW_TOKEN
        keyed.write()
        result = await app[RELOADS].from_api()

        assert result.applied, result.errors
        assert pool.records(ANTHROPIC) == []
        assert [r.key for r in pool.records(EXTRA)] == [EXTRA_KEY]
        assert pool.records(OPENAI) == [kept]
        assert await _ask(url, NEW_TOKEN) == 200
        assert await _ask(url, TOKENS[ANTHROPIC]) == 401


async def test_a_model_added_is_served_at_once_and_a_removed_one_leaves_the_pool(
    keyed: GatewayConfig, fake_upstream: FakeUpstream
) -> None:
    """The kept key joins the new model's slot before the switch, and leaves the removed one."""
    async with _in_process(keyed) as (app, url):
        pool = app[POOL]
        models = keyed.provider(OPENAI)["models"]
        models[ADDED_MODEL] = copy.deepcopy(models[MODELS[OPENAI]])
        keyed.write()
        assert (await app[RELOADS].from_api()).applied
        assert {r.model for r in pool.records(OPENAI)} == {MODELS[OPENAI], ADDED_MODEL}
        assert await _ask(url, TOKENS[OPENAI], model=ADDED_MODEL) == 200

        del models[MODELS[OPENAI]]
        keyed.provider(OPENAI)["default_model"] = ADDED_MODEL
        keyed.write()
        assert (await app[RELOADS].from_api()).applied
        assert [(r.model, r.key) for r in pool.records(OPENAI)] == [(ADDED_MODEL, KEY)]
        assert await _ask(url, TOKENS[OPENAI], model=ADDED_MODEL) == 200


async def test_the_reload_endpoint_is_behind_the_admin_guard(keyed: GatewayConfig) -> None:
    """With an admin token set, a reload without it gets 401 and changes nothing."""
    admin = "adm-reload-0123456789abcdef"
    keyed.set("server.admin_token", admin)
    async with _in_process(keyed) as (app, url):
        _add_extra(keyed)
        keyed.write()
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/-/api/reload") as response:
                assert response.status == 401
            assert app[LIVE].current.get_provider(EXTRA) is None
            headers = {"Authorization": f"Bearer {admin}"}
            async with session.post(url + "/-/api/reload", headers=headers) as response:
                assert response.status == 200
                assert (await response.json())["added"] == [EXTRA]
        assert app[LIVE].current.get_provider(EXTRA) is not None
