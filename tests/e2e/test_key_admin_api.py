"""End to end: the key admin API on a real gateway, on SQLite and on PostgreSQL.

Each test starts the application in-process (its store opened for real, the
live pool at hand) with an admin token, keys in a key file, and drives
`/-/api/` over HTTP the way a script would; requests through the gateway
use the official SDK.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import aiohttp
import openai
import orjson
import pytest

from llmgateway.web.api.operations import KEYS_ON_THREAD
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import (
    ANTHROPIC,
    MODELS,
    OPENAI,
    GatewayConfig,
    RunningGateway,
    StartGateway,
    ask_anthropic,
    ask_openai,
)

ADMIN: Final = "admin-token-0123456789abcdef"
FILE_KEYS: Final = [f"sk-file-key-{i:02d}-0123456789abcdef" for i in range(3)]
API_KEYS: Final = [f"sk-api-key-{i:02d}-fedcba9876543210" for i in range(4)]
MODEL: Final = MODELS[OPENAI]
WAIT: Final = 10.0


@pytest.fixture
async def gateway(
    store_engine: str,
    gateway_config: GatewayConfig,
    fake_upstream: FakeUpstream,
    start_gateway: StartGateway,
) -> RunningGateway:
    """The gateway with an admin token and FILE_KEYS (all good) in a key file."""
    gateway_config.set("server.admin_token", ADMIN)
    gateway_config.keys[OPENAI] = list(FILE_KEYS)
    for key in [*FILE_KEYS, *API_KEYS]:
        fake_upstream.set_key(key)
    return await start_gateway(gateway_config)


async def call(
    gateway: RunningGateway,
    method: str,
    path: str,
    body: Any = None,
    *,
    params: dict[str, str] | None = None,
    raw: bytes | None = None,
    token: str | None = ADMIN,
) -> tuple[int, Any]:
    """One API request; returns (status, JSON answer)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = raw
    if body is not None:
        data = orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            gateway.url + "/-/api" + path,
            data=data,
            params=params,
            headers={**headers, "Content-Type": "application/json"},
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def add(gateway: RunningGateway, keys: list[str]) -> dict[str, Any]:
    status, answer = await call(gateway, "POST", "/keys", {"instance": OPENAI, "keys": keys})
    assert status == 200, answer
    return answer  # type: ignore[no-any-return]


async def ids_by_key(gateway: RunningGateway) -> dict[str, int]:
    """The id of every key of the instance, by key (read from the live pool)."""
    return {r.key: r.key_id for r in gateway.pool.records(OPENAI)}


async def settle(gateway: RunningGateway) -> None:
    """Wait until everything the pool queued is in the store."""
    queue = gateway.write_queue
    await asyncio.wait_for(queue.written_through(queue.mark()), WAIT)


async def test_keys_are_listed_masked_with_filters_facets_and_a_cursor(
    gateway: RunningGateway,
) -> None:
    await add(gateway, API_KEYS)
    status, page = await call(gateway, "GET", "/keys", params={"instance": OPENAI, "limit": "3"})
    assert status == 200
    assert page["total"] == len(FILE_KEYS) + len(API_KEYS)
    assert page["facets"]["instance"] == {OPENAI: 7}
    assert page["facets"]["status"] == {"untested": 7}
    assert len(page["items"]) == 3 and page["next_cursor"] is not None
    seen = [item["id"] for item in page["items"]]
    while page["next_cursor"] is not None:
        status, page = await call(
            gateway, "GET", "/keys", params={"limit": "3", "cursor": page["next_cursor"]}
        )
        assert status == 200
        seen += [item["id"] for item in page["items"]]
    assert len(seen) == len(set(seen)) == 7
    status, api_only = await call(gateway, "GET", "/keys", params={"source": "api"})
    assert api_only["total"] == len(API_KEYS)
    item = api_only["items"][0]
    assert set(item) == {"id", "instance", "key", "fingerprint", "source", "models", "usage"}
    assert item["key"] == f"{API_KEYS[0][:4]}...{API_KEYS[0][-4:]}"
    assert len(item["fingerprint"]) == 12
    assert item["models"][MODEL]["status"] == "untested"
    status, found = await call(gateway, "GET", "/keys", params={"q": API_KEYS[2]})
    assert [i["id"] for i in found["items"]] == [item["id"] + 2]
    for document in (page, api_only, found):
        assert not any(key in str(document) for key in [*FILE_KEYS, *API_KEYS])


async def test_a_page_of_many_keys_is_what_small_pages_list(gateway: RunningGateway) -> None:
    """A page large enough to be shaped on a thread holds what pages shaped on the loop do."""
    many = [f"sk-many-{i:04d}-0123456789abcdef" for i in range(KEYS_ON_THREAD + 10)]
    await add(gateway, many)
    status, large = await call(gateway, "GET", "/keys", params={"limit": "1000"})
    assert status == 200 and len(large["items"]) == len(FILE_KEYS) + len(many)
    small: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "25", **({"cursor": cursor} if cursor else {})}
        status, page = await call(gateway, "GET", "/keys", params=params)
        small += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert large["items"] == small
    assert large["items"][-1]["key"] == f"{many[-1][:4]}...{many[-1][-4:]}"
    assert not any(key in str(large) for key in many)


async def test_added_keys_serve_at_once_and_each_rejected_line_is_reported(
    gateway: RunningGateway, fake_upstream: FakeUpstream
) -> None:
    text = "\n".join(["# pasted", API_KEYS[0], "", FILE_KEYS[0], "two words", API_KEYS[0]])
    status, answer = await call(gateway, "POST", "/keys", {"instance": OPENAI, "text": text})
    assert status == 200
    assert answer == {
        "added": 1,
        "duplicates": 2,
        "rejected": [{"line": 5, "reason": "whitespace inside the key (one key a line)"}],
    }
    for key in FILE_KEYS:
        fake_upstream.set_key(key, Behaviour.INVALID_KEY)
    assert await ask_openai(gateway.url)  # only the added key can serve it
    assert fake_upstream.calls_by_key[API_KEYS[0]] >= 1


async def test_a_key_shows_its_usage_and_history(
    gateway: RunningGateway, fake_upstream: FakeUpstream
) -> None:
    await add(gateway, API_KEYS[:1])
    for key in FILE_KEYS:
        fake_upstream.set_key(key, Behaviour.INVALID_KEY)
    for _ in range(3):
        await ask_openai(gateway.url)
    key_id = (await ids_by_key(gateway))[API_KEYS[0]]
    await call(gateway, "POST", "/keys/disable", {"ids": [key_id]})
    await settle(gateway)
    status, key = await call(gateway, "GET", f"/keys/{key_id}")
    assert status == 200
    assert key["usage"]["requests"] >= 3
    assert key["usage"]["last_used_at"].endswith("Z")
    assert key["models"][MODEL]["status"] == "disabled"
    changes = [(h["old"], h["new"]) for h in key["history"]]
    assert ("valid", "disabled") in changes or ("untested", "disabled") in changes
    assert key["history"][0]["new"] == "disabled"  # newest first


async def test_disabled_keys_leave_the_pool_and_come_back_enabled(
    gateway: RunningGateway,
) -> None:
    ids = await ids_by_key(gateway)
    disabled = [ids[FILE_KEYS[0]], ids[FILE_KEYS[1]]]
    status, answer = await call(gateway, "POST", "/keys/disable", {"ids": disabled})
    assert (status, answer) == (200, {"changed": 2})
    status, route = await call(
        gateway, "GET", "/route", params={"instance": OPENAI, "model": MODEL}
    )
    assert status == 200
    assert route["usable"] == 1
    assert route["next"]["id"] == ids[FILE_KEYS[2]]
    assert {s["id"]: s["why"] for s in route["skipped"]} == {
        key_id: "status disabled" for key_id in disabled
    }
    assert route["counts"] == {"disabled": 2, "untested": 1}
    for _ in range(4):
        await ask_openai(gateway.url)
    status, answer = await call(
        gateway, "POST", "/keys/enable", {"filter": {"instance": OPENAI, "status": "disabled"}}
    )
    assert (status, answer) == (200, {"changed": 2})
    status, route = await call(
        gateway, "GET", "/route", params={"instance": OPENAI, "model": MODEL}
    )
    assert route["usable"] == 3 and route["skipped"] == []


async def test_api_keys_are_deleted_and_file_keys_refused_with_their_file(
    gateway: RunningGateway,
) -> None:
    await add(gateway, API_KEYS)
    ids = await ids_by_key(gateway)
    selected = [ids[API_KEYS[0]], ids[FILE_KEYS[0]]]
    status, answer = await call(gateway, "POST", "/keys/delete", {"ids": selected})
    assert status == 200
    assert answer["deleted"] == 1
    [refused] = answer["refused"]
    assert refused["id"] == ids[FILE_KEYS[0]]
    assert refused["reason"].startswith("remove it from ")
    assert refused["reason"].endswith("keys.txt")
    assert API_KEYS[0] not in await ids_by_key(gateway)
    status, answer = await call(
        gateway, "POST", "/keys/delete", {"filter": {"instance": OPENAI, "source": "api"}}
    )
    assert (status, answer["deleted"]) == (200, len(API_KEYS) - 1)
    assert set(await ids_by_key(gateway)) == set(FILE_KEYS)
    status, _ = await call(gateway, "GET", f"/keys/{ids[API_KEYS[1]]}")
    assert status == 404


async def test_a_recheck_job_probes_the_keys_and_reports_progress(
    gateway: RunningGateway, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_key(FILE_KEYS[1], Behaviour.INVALID_KEY)
    async with aiohttp.ClientSession() as session:
        events = await session.get(
            gateway.url + "/-/events", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        status, started = await call(
            gateway, "POST", "/keys/recheck", {"filter": {"instance": OPENAI}}
        )
        assert status == 202
        assert started["queued"] == len(FILE_KEYS)
        job: dict[str, Any] = {}
        async with asyncio.timeout(WAIT):
            while job.get("state") != "done":
                status, job = await call(gateway, "GET", f"/jobs/{started['job']}")
                assert status == 200
                await asyncio.sleep(0.05)
        assert job["kind"] == "recheck"
        assert (job["done"], job["total"]) == (3, 3)
        assert job["results"] == {"valid": 2, "invalid_key": 1}
        announced: list[str] = []
        async with asyncio.timeout(WAIT):
            while not any('"state":"done"' in line for line in announced):
                announced.append((await events.content.readline()).decode())
        events.close()
    ids = await ids_by_key(gateway)
    record = gateway.pool.get(OPENAI, MODEL, ids[FILE_KEYS[1]])
    assert record is not None and record.status.value == "invalid_key"


async def test_bad_input_is_refused_whole_with_a_clear_error(gateway: RunningGateway) -> None:
    ids = await ids_by_key(gateway)
    cases: list[tuple[str, str, Any, bytes | None, int]] = [
        ("POST", "/keys/disable", None, b"{not json", 400),
        ("POST", "/keys/disable", {"ids": [ids[FILE_KEYS[0]]], "force": True}, None, 400),
        ("POST", "/keys/disable", {"ids": [ids[FILE_KEYS[0]], 999_999]}, None, 404),
        ("POST", "/keys/disable", {"filter": {"status": "no_quota"}}, None, 404),
        ("POST", "/keys/delete", {"filter": {"instance": "nope"}}, None, 404),
        ("POST", "/keys", {"instance": OPENAI, "text": "x" * (33 * 1024 * 1024)}, None, 413),
        ("GET", "/keys/999999", None, None, 404),
        ("GET", "/keys/abc", None, None, 404),
        ("GET", "/jobs/999999", None, None, 404),
        ("GET", "/keys", None, None, 200),
        ("GET", "/nothing-here", None, None, 404),
    ]
    for method, path, body, raw, expected in cases:
        status, answer = await call(gateway, method, path, body, raw=raw)
        assert status == expected, (path, body, answer)
        if expected >= 400:
            assert set(answer["error"]) == {"message", "code"} and answer["error"]["message"]
    status, _ = await call(gateway, "GET", "/keys", token=None)
    assert status == 401
    status, route = await call(
        gateway, "GET", "/route", params={"instance": OPENAI, "model": MODEL}
    )
    assert route["usable"] == 3  # nothing was disabled by the refused requests


async def test_the_openai_sdk_still_serves_while_keys_change(gateway: RunningGateway) -> None:
    """Changing keys never breaks the request path: every request meanwhile succeeds."""

    async def traffic() -> int:
        served = 0
        for _ in range(20):
            try:
                await ask_openai(gateway.url)
                served += 1
            except openai.APIError:
                pass
        return served

    changes = asyncio.gather(
        add(gateway, API_KEYS),
        call(gateway, "POST", "/keys/disable", {"filter": {"source": "api"}}),
    )
    served, _ = await asyncio.gather(traffic(), changes)
    assert served == 20


async def test_a_recheck_keeps_to_the_keepers_concurrency_and_never_blocks_requests(
    store_engine: str,
    gateway_config: GatewayConfig,
    fake_upstream: FakeUpstream,
    start_gateway: StartGateway,
) -> None:
    """Eight slow keys, two probes at a time at most; a request meanwhile is served at once."""
    slow = [f"sk-slow-key-0123456789-{i:04d}" for i in range(8)]
    fast = "sk-fast-claude-key-0123456789abcdef"
    gateway_config.set("server.admin_token", ADMIN)
    gateway_config.set("keeper.max_concurrent_probes", 2)
    gateway_config.keys[OPENAI] = slow
    gateway_config.keys[ANTHROPIC] = [fast]
    for key in slow:
        fake_upstream.set_key(key, Behaviour.SLOW_FIRST_BYTE, delay=0.2)
    fake_upstream.set_key(fast)
    gateway = await start_gateway(gateway_config)

    def judged() -> int:
        return sum(1 for r in gateway.pool.records(OPENAI) if r.status.value == "valid")

    def in_flight() -> int:
        return sum(1 for r in fake_upstream.requests if r.key in slow) - judged()

    status, started = await call(gateway, "POST", "/keys/recheck", {"filter": {"instance": OPENAI}})
    assert (status, started["queued"]) == (202, len(slow))
    assert await ask_anthropic(gateway.url)  # served while the job runs
    assert judged() < len(slow)
    most = 0
    async with asyncio.timeout(WAIT):
        while judged() < len(slow):
            most = max(most, in_flight())
            await asyncio.sleep(0.01)
    assert most == 2
    job: dict[str, Any] = {"state": "running"}
    async with asyncio.timeout(WAIT):
        while job["state"] == "running":
            _, job = await call(gateway, "GET", f"/jobs/{started['job']}")
    assert job["results"] == {"valid": len(slow)}
