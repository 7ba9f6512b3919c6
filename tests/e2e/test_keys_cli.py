"""End to end: `llmgateway keys …` through a running server, and on the store when none answers.

The commands run as real processes, on SQLite and on PostgreSQL. First a
gateway serves at the configured address and every command goes through
its API; then it is stopped and the same commands act on the store
directly, with the same output.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import MODELS, OPENAI, GatewayConfig, ServeGateway

pytestmark = pytest.mark.slow

ADMIN: Final = "admin-token-0123456789abcdef"
FILE_KEYS: Final = [f"sk-cli-file-0123456789abcdef-{i:04d}" for i in range(2)]
PASTED: Final = [f"sk-cli-pasted-0123456789abcdef-{i:04d}" for i in range(10, 14)]
"""Distinct masks (the last four characters differ)."""
MODEL: Final = MODELS[OPENAI]
EXIT_TIMEOUT: Final = 30.0


async def keys_command(
    config: Path, *args: str, stdin: bytes = b"", expect: int = 0
) -> tuple[str, str]:
    """Run `llmgateway keys <args> --config <config>`; returns (stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgateway",
        "keys",
        *args,
        "--config",
        str(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(config.parent),
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), EXIT_TIMEOUT)
    assert process.returncode == expect, (args, out.decode(), err.decode())
    return out.decode(), err.decode()


async def as_json(config: Path, *args: str, stdin: bytes = b"") -> Any:
    out, _ = await keys_command(config, *args, "--json", stdin=stdin)
    return orjson.loads(out)


async def exercise(config: Path, fake_upstream: FakeUpstream, pasted: list[str]) -> dict[str, Any]:
    """Every command once, checked; returns the final listing."""
    paste = "# from the CLI\n" + "\n".join(pasted) + "\nnot one key\n"
    added = await as_json(config, "add", "--instance", OPENAI, "-", stdin=paste.encode())
    assert added == {
        "added": len(pasted),
        "duplicates": 0,
        "rejected": [
            {"line": len(pasted) + 2, "reason": "whitespace inside the key (one key a line)"}
        ],
    }
    listing = await as_json(config, "list", "--source", "api")
    ids = {item["key"]: item["id"] for item in listing["items"]}
    mine = [ids[f"{key[:4]}...{key[-4:]}"] for key in pasted]
    first = mine[0]
    assert await as_json(config, "disable", str(first)) == {"changed": 1}
    route = await as_json(config, "route", "--instance", OPENAI, "--model", MODEL)
    assert {s["id"]: s["why"] for s in route["skipped"]} == {first: "status disabled"}
    assert await as_json(config, "enable", "--status", "disabled") == {"changed": 1}
    fake_upstream.set_key(pasted[1], Behaviour.INVALID_KEY)
    job = await as_json(config, "recheck", *map(str, mine), "--wait")
    assert (job["state"], job["total"]) == ("done", len(pasted))
    assert job["results"] == {"valid": len(pasted) - 1, "invalid_key": 1}
    removed = await as_json(config, "remove", "--status", "invalid_key")
    assert removed == {"deleted": 1, "refused": []}
    file_key = await as_json(config, "list", "--source", "file")
    refused = await as_json(config, "remove", str(file_key["items"][0]["id"]))
    assert refused["deleted"] == 0 and refused["refused"][0]["reason"].startswith("remove it from")
    text, _ = await keys_command(config, "list")
    assert "ID" in text.splitlines()[0] and "keys" in text
    for key in [*pasted, *FILE_KEYS]:
        assert key not in text
    final: dict[str, Any] = await as_json(config, "list")
    return final


async def test_every_keys_command_through_the_server_then_on_the_store(
    store_engine: str,
    fake_upstream: FakeUpstream,
    gateway_config: GatewayConfig,
    serve_gateway: ServeGateway,
) -> None:
    gateway_config.set("server.admin_token", ADMIN)
    gateway_config.keys[OPENAI] = list(FILE_KEYS)
    for key in [*FILE_KEYS, *PASTED]:
        fake_upstream.set_key(key)
    served = await serve_gateway(gateway_config)
    config = gateway_config.tmp_path / "providers.yaml"
    through_server = await exercise(config, fake_upstream, PASTED[:2])
    assert through_server["total"] == len(FILE_KEYS) + 1
    served.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(served.process.wait(), EXIT_TIMEOUT) == 0
    on_store = await as_json(config, "list")
    assert on_store["total"] == through_server["total"]
    assert [i["id"] for i in on_store["items"]] == [i["id"] for i in through_server["items"]]
    assert [i["key"] for i in on_store["items"]] == [i["key"] for i in through_server["items"]]
    direct = await exercise(config, fake_upstream, PASTED[2:])
    assert direct["total"] == on_store["total"] + 1


async def test_keys_are_never_taken_from_the_command_line(gateway_config: GatewayConfig) -> None:
    config = gateway_config.write()
    _, err = await keys_command(config, "add", "--instance", OPENAI, "sk-x-y", expect=2)
    assert "sk-x-y" in err  # click names the missing file: the key is not read as a key
