"""No configured key or token leaves the process, in any form, even at `logging.level: debug`.

One served gateway (keeper on, debug logs, access log) in front of the hostile
upstream, one instance per (API family, hostility) with one key each. Every
scenario of the hostile-upstream tests runs against it, plus the attacker's
requests (TRACE, wrong tokens, malformed HTTP). Then every byte that came out
is searched for every key and token, raw, JSON `\\u`-escaped, percent-encoded
and in base64: the process's whole output, `/-/status`, `/-/events`,
`/metrics`, the CLI's output, and the store (every table and column except the
key column itself; the file bytes for the encoded forms).
"""

from __future__ import annotations

import asyncio
import copy
import signal
import sqlite3
import sys
from collections.abc import Iterable
from contextlib import closing, suppress
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from tests.fakes.hostile_upstream import HostileUpstream, Hostility, key_forms
from tests.support.gateway import (
    ANTHROPIC,
    GEMINI,
    INSTANCES,
    MODELS,
    OPENAI,
    ServeGateway,
    anthropic_client,
    build_config,
    genai_client,
    openai_client,
)

ADMIN_TOKEN: Final = "admin-leak-test-0123456789abcdef"
FAMILIES: Final = {OPENAI: "openai_like", ANTHROPIC: "anthropic", GEMINI: "gemini"}

pytestmark = pytest.mark.slow


def instance_name(family: str, hostility: Hostility) -> str:
    return f"{family}-{hostility.value.replace('_', '-')}"


def key_for(family: str, hostility: Hostility) -> str:
    prefix = {OPENAI: "sk-proj-", ANTHROPIC: "sk-ant-api03-", GEMINI: "AIzaSy"}[family]
    return f"{prefix}leak{hostility.value.replace('_', '')}{family}0123456789abcdefXYZ"


def token_for(family: str, hostility: Hostility) -> str:
    return f"gw-{family}-{hostility.value}-token-0123456789"


def leaks(where: str, data: bytes | str, secrets: Iterable[str], forms: Iterable[str]) -> list[str]:
    """One line per secret form found in `data`."""
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    found: list[str] = []
    for secret in secrets:
        for form_name, form in key_forms(secret).items():
            if form_name in forms and form in text:
                at = text.index(form)
                found.append(f"{where}: {form_name} form of {secret[:8]}…: {text[at - 80 : at]!r}")
    return found


ALL_FORMS: Final = ("raw", "json", "percent", "base64")


async def call_sdk(url: str, family: str, token: str, *, stream: bool) -> None:
    """One generation through the family's SDK; any error is the point, not a failure."""
    messages: Any = [{"role": "user", "content": "hi"}]
    with suppress(Exception):
        if family == OPENAI:
            async with openai_client(url, token) as client:
                if stream:
                    async for _ in await client.chat.completions.create(
                        model=MODELS[OPENAI], messages=messages, stream=True
                    ):
                        pass
                else:
                    await client.chat.completions.create(model=MODELS[OPENAI], messages=messages)
        elif family == ANTHROPIC:
            async with anthropic_client(url, token) as client:
                if stream:
                    async with client.messages.stream(
                        model=MODELS[ANTHROPIC], max_tokens=16, messages=messages
                    ) as events:
                        async for _ in events.text_stream:
                            pass
                else:
                    await client.messages.create(
                        model=MODELS[ANTHROPIC], max_tokens=16, messages=messages
                    )
        else:
            client = genai_client(url, token)
            try:
                if stream:
                    async for _ in await client.aio.models.generate_content_stream(
                        model=MODELS[GEMINI], contents="hi"
                    ):
                        pass
                else:
                    await client.aio.models.generate_content(model=MODELS[GEMINI], contents="hi")
            finally:
                await client.aio.aclose()


async def collect_events(url: str, into: bytearray, ready: asyncio.Event) -> None:
    """Every byte of `/-/events` until cancelled; `ready` is set once subscribed."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 200
        ready.set()
        async for chunk in response.content.iter_any():
            into += chunk


async def attack(url: str, port: int, token: str) -> None:
    """What an attacker sends: TRACE with a valid token, guessed tokens, malformed HTTP."""
    async with aiohttp.ClientSession() as session:
        for method in ("TRACE", "OPTIONS", "PROPFIND"):
            async with session.request(
                method, url + "/v1/chat/completions", headers={"Authorization": f"Bearer {token}"}
            ) as response:
                await response.read()
        for attempt in range(5):
            async with session.post(
                url + f"/v1beta/models/{MODELS[GEMINI]}:generateContent?key=guess-{attempt:020d}",
                json={},
            ) as response:
                await response.read()
            async with session.get(
                url + "/-/status", headers={"Authorization": f"Bearer wrong-{attempt:020d}"}
            ) as response:
                await response.read()
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /?key={token} HTTP/1.1\r\nBroken {token}\r\n\r\n".encode())
        await writer.drain()
        await reader.read()
        writer.close()


async def wait_for_probes(url: str, within: float = 30.0) -> dict[str, Any]:
    """The status document once the keeper has probed every key."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url + "/-/status", headers=headers) as response:
                document: dict[str, Any] = await response.json()
            untested = [
                name
                for name, provider in document["providers"].items()
                for counts in provider["models"].values()
                if counts.get("untested")
            ]
            if not untested or loop.time() > deadline:
                return document
            await asyncio.sleep(0.2)


async def run_cli(*args: str, cwd: Path) -> str:
    """`python -m llmgateway ...`: stdout and stderr together."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgateway",
        *args,
        cwd=str(cwd),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await child.communicate()
    return out.decode("utf-8", "replace")


def store_tables(path: Path) -> str:
    """Every value of every table, except the stored keys themselves (api_keys.key_value)."""
    lines: list[str] = []
    with closing(sqlite3.connect(path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            kept = [c for c in columns if (table, c) != ("api_keys", "key_value")]
            if not kept:
                continue
            selected = ", ".join(f'"{c}"' for c in kept)
            for row in conn.execute(f'SELECT {selected} FROM "{table}"'):
                lines.append(f"{table}: {row!r}")
    return "\n".join(lines)


async def test_no_key_or_token_leaves_the_process_in_any_form(
    tmp_path: Path, hostile_upstream: HostileUpstream, serve_gateway: ServeGateway
) -> None:
    """Every byte out of a gateway at debug, under every hostile scenario, is free of secrets."""
    config = build_config(tmp_path, hostile_upstream.url)
    template = config.tree["providers"]
    providers: dict[str, Any] = {}
    keys: list[str] = []
    tokens: list[str] = []
    for family in INSTANCES:
        for hostility in Hostility:
            name = instance_name(family, hostility)
            section = copy.deepcopy(template[family])
            section["keys_path"] = str(tmp_path / "keys" / name)
            section["access_control"] = {"gateway_access_token": token_for(family, hostility)}
            section["health_policy"] = {"verification_attempts": 1}
            providers[name] = section
            config.keys[name] = [key_for(family, hostility)]
            hostile_upstream.set_key(key_for(family, hostility), hostility)
            keys.append(key_for(family, hostility))
            tokens.append(token_for(family, hostility))
    for family in INSTANCES:
        config.keys.pop(family)
    config.tree["providers"] = providers
    config.set("server.admin_token", ADMIN_TOKEN)
    config.set("logging.level", "debug")
    config.set("logging.access_log", True)
    config.set("keeper.enabled", True)
    config.set("keeper.check_interval", "100ms")
    secrets = [*keys, *tokens, ADMIN_TOKEN]

    gateway = await serve_gateway(config)
    port = int(config.tree["server"]["port"])
    events = bytearray()
    subscribed = asyncio.Event()
    listener = asyncio.create_task(collect_events(gateway.url + "/-/events", events, subscribed))
    await asyncio.wait_for(subscribed.wait(), timeout=10)
    document = await wait_for_probes(gateway.url)
    for family in INSTANCES:
        for hostility in Hostility:
            token = token_for(family, hostility)
            await call_sdk(gateway.url, family, token, stream=False)
            await call_sdk(gateway.url, family, token, stream=True)
    await attack(gateway.url, port, token_for(OPENAI, Hostility.ECHO))
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(headers=admin) as session:
        async with session.get(gateway.url + "/-/status?keys=1") as response:
            status_bytes = await response.read()
        async with session.get(gateway.url + "/metrics") as response:
            metrics_bytes = await response.read()
    await asyncio.sleep(0.3)
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)
    gateway.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(gateway.process.wait(), timeout=20) == 0
    path = str(config.write())
    cli = "\n".join(
        [
            await run_cli("status", "--config", path, "--keys", cwd=tmp_path),
            await run_cli("status", "--config", path, "--keys", "--json", cwd=tmp_path),
            await run_cli("config", "check", "--config", path, cwd=tmp_path),
        ]
    )
    database = tmp_path / "data" / "llmgateway.db"
    files = b"".join(
        p.read_bytes() for p in database.parent.iterdir() if p.name.startswith(database.name)
    )

    output = gateway.output()
    problems = [
        *leaks("serve output", output, secrets, ALL_FORMS),
        *leaks("/-/status", status_bytes, secrets, ALL_FORMS),
        *leaks("/-/events", bytes(events), secrets, ALL_FORMS),
        *leaks("/metrics", metrics_bytes, secrets, ALL_FORMS),
        *leaks("CLI", cli, secrets, ALL_FORMS),
        *leaks("store tables", store_tables(database), secrets, ALL_FORMS),
        *leaks("store files", files, keys, ("json", "percent", "base64")),
        *leaks("store files", files, [*tokens, ADMIN_TOKEN], ALL_FORMS),
    ]
    assert problems == []
    # The scenarios really ran: debug lines of the store, quoted keys (masked), events.
    assert len(output) > 10_000 and "executing" in output
    assert "sk-p...fXYZ" in output and "malformed client request" in output
    assert any(
        counts.get("no_access") or counts.get("invalid_key")
        for provider in document["providers"].values()
        for counts in provider["models"].values()
    )
    assert b"api_key:AIza..." in status_bytes and b"data:" in events
