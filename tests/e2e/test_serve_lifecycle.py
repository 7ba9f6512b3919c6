"""`llmgateway serve` as a real process: graceful shutdown on SIGTERM, config errors exit 2."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from llmgateway.core.constants import Status
from llmgateway.store.sqlite import SqliteStore
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import MODELS, OPENAI, TOKENS, GatewayConfig, ServeGateway

pytestmark = pytest.mark.slow

BAD_KEYS = ["sk-bad-one-0123456789-aa", "sk-bad-two-0123456789-bb"]
GOOD_KEY = "sk-good-0123456789-cccc"
EXIT_TIMEOUT = 20.0
"""Far above the shutdown's real duration, far below `server.shutdown_timeout` (60 s)."""


async def _stored_statuses(config: GatewayConfig) -> dict[str, Status]:
    store = SqliteStore(config.tmp_path / "data" / "llmgateway.db")
    await store.open()
    try:
        return {r.key: r.status for r in await store.load_records(OPENAI)}
    finally:
        await store.close()


async def test_sigterm_lets_a_stream_finish_flushes_statuses_and_exits_0(
    fake_upstream: FakeUpstream, gateway_config: GatewayConfig, serve_gateway: ServeGateway
) -> None:
    """SIGTERM during a streamed answer: the stream completes, statuses reach the store, exit 0."""
    fake_upstream.chunk_delay = 0.05
    for key in BAD_KEYS:
        fake_upstream.set_key(key, Behaviour.INVALID_KEY)
    fake_upstream.set_key(GOOD_KEY)
    gateway_config.keys[OPENAI] = [*BAD_KEYS, GOOD_KEY]
    gateway_config.set("server.shutdown_timeout", "60s")
    gateway_config.set("logging.level", "info")
    served = await serve_gateway(gateway_config)

    async with aiohttp.ClientSession() as session:
        # An open /-/events subscriber must not hold the shutdown until its deadline.
        events = await session.get(served.url + "/-/events")
        assert events.status == 200
        response = await session.post(
            served.url + "/v1/chat/completions",
            json={"model": MODELS[OPENAI], "stream": True, "messages": [{"role": "user"}]},
            headers={"Authorization": f"Bearer {TOKENS[OPENAI]}"},
        )
        assert response.status == 200
        body = await response.content.readany()
        served.process.send_signal(signal.SIGTERM)
        body += await response.content.read()
        events.close()

    code = await asyncio.wait_for(served.process.wait(), timeout=EXIT_TIMEOUT)
    output = served.output()
    assert code == 0, output
    events_seen = [line for line in body.decode().splitlines() if line.startswith("data: ")]
    assert events_seen[-1] == "data: [DONE]"
    text = "".join(
        choice["delta"].get("content") or ""
        for line in events_seen[:-1]
        for choice in json.loads(line.removeprefix("data: "))["choices"]
    )
    assert text == fake_upstream.text_for(MODELS[OPENAI])
    assert await _stored_statuses(gateway_config) == {
        BAD_KEYS[0]: Status.VERIFYING,
        BAD_KEYS[1]: Status.VERIFYING,
        GOOD_KEY: Status.VALID,
    }
    assert "unwritten" not in output
    assert "shutting_down" in output


def test_a_broken_config_exits_2_with_the_whole_report(tmp_path: Path) -> None:
    """`serve` with an invalid configuration prints every problem and exits 2 without starting."""
    path = tmp_path / "providers.yaml"
    path.write_text(
        "server:\n"
        "  port: not-a-port\n"
        "logging:\n"
        "  level: loud\n"
        "providers:\n"
        "  main:\n"
        "    provider_type: openai_like\n"
        "    api_base_url: http://127.0.0.1:9\n"
        "    default_model: m\n"
        "    timeouts:\n"
        "      total: forever\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "llmgateway", "serve", "--config", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    report = result.stderr
    for problem in ("server.port", "logging.level", "providers.main.timeouts.total"):
        assert problem in report, report
    assert "listening" not in result.stdout + result.stderr
    assert not (tmp_path / "data").exists()
