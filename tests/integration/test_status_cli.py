"""`llmgateway status` reads the store directly: table, --keys and --json, keys masked."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmgateway.cli.main import main
from llmgateway.core.constants import ProviderType, Status
from llmgateway.store import open_store
from tests.support.gateway import ANTHROPIC, MODELS, OPENAI, GatewayConfig, build_config

KEYS = [
    "sk-valid-0123456789-aaaa",
    "sk-invalid-0123456789-bbbb",
    "sk-quota-0123456789-cccc",
]
CHECKED = datetime(2026, 1, 1, tzinfo=UTC)


async def _seed(config: GatewayConfig) -> None:
    """Store three keys of the openai instance with valid, invalid_key and no_quota."""
    accessor = config.accessor()
    store = open_store(accessor.database)
    await store.open()
    try:
        await store.sync_providers([(p.name, p.provider_type) for p in accessor.providers()])
        await store.sync_keys(OPENAI, KEYS, [MODELS[OPENAI]], CHECKED)
        records = {r.key: r for r in await store.load_records(OPENAI)}
        statuses = [(Status.VALID, 200, ""), (Status.INVALID_KEY, 401, "bad key")]
        statuses.append((Status.NO_QUOTA, 429, "insufficient_quota"))
        await store.record(
            [
                replace(
                    records[key],
                    status=status,
                    status_code=code,
                    message=message,
                    last_checked_at=CHECKED,
                    next_check_at=CHECKED + timedelta(hours=1),
                    failing_since=None if status is Status.VALID else CHECKED,
                )
                for key, (status, code, message) in zip(KEYS, statuses, strict=True)
            ]
        )
    finally:
        await store.close()


def _seeded(tmp_path: Path) -> Path:
    config = build_config(tmp_path, "http://127.0.0.1:9", {OPENAI: KEYS})
    path = config.write()
    asyncio.run(_seed(config))
    return path


def test_status_table_counts_statuses_per_instance_and_model(tmp_path: Path) -> None:
    """The table has one row per instance and model with the stored status counts."""
    path = _seeded(tmp_path)
    result = CliRunner().invoke(main, ["status", "--config", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = ["INSTANCE", "MODEL", "TOTAL", "USABLE", "VALID", "INVALID_KEY", "NO_QUOTA"]
    assert lines[0].split() == header
    assert [OPENAI, MODELS[OPENAI], "3", "1", "1", "1", "1"] in [line.split() for line in lines]
    assert [ANTHROPIC, MODELS[ANTHROPIC], "0", "0", "0", "0", "0"] in [
        line.split() for line in lines
    ]
    assert "sk-v...aaaa" not in result.output
    assert not any(key in result.output for key in KEYS)


def test_status_keys_lists_masked_keys(tmp_path: Path) -> None:
    """--keys adds every (key, model) with its status, each key masked."""
    path = _seeded(tmp_path)
    result = CliRunner().invoke(main, ["status", "--config", str(path), "--keys"])
    assert result.exit_code == 0, result.output
    for masked, status in [
        ("sk-v...aaaa", "valid"),
        ("sk-i...bbbb", "invalid_key"),
        ("sk-q...cccc", "no_quota"),
    ]:
        assert any(masked in line and status in line for line in result.output.splitlines())
    assert not any(key in result.output for key in KEYS)


def test_status_json_is_the_summary_document(tmp_path: Path) -> None:
    """--json prints the summary /-/status answers, counted by the store; no key rows."""
    path = _seeded(tmp_path)
    result = CliRunner().invoke(main, ["status", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert list(printed) == ["providers"]
    oai = printed["providers"][OPENAI]
    assert oai == {
        "provider_type": ProviderType.OPENAI_LIKE.value,
        "keys_total": 3,
        "models": {MODELS[OPENAI]: {"valid": 1, "invalid_key": 1, "no_quota": 1}},
        "usable": {MODELS[OPENAI]: 1},
        "incidents": [],
    }
    assert printed["providers"][ANTHROPIC]["keys_total"] == 0
    assert "sk-v...aaaa" not in result.output


def test_status_json_with_keys_adds_every_row(tmp_path: Path) -> None:
    """--json --keys prints the same document with each instance's rows, keys masked."""
    path = _seeded(tmp_path)
    result = CliRunner().invoke(main, ["status", "--config", str(path), "--json", "--keys"])
    assert result.exit_code == 0, result.output
    oai = json.loads(result.output)["providers"][OPENAI]
    assert [k["key"] for k in oai["keys"]] == ["sk-v...aaaa", "sk-i...bbbb", "sk-q...cccc"]
    assert oai["keys"][1]["last_checked_at"] == "2026-01-01T00:00:00Z"
    assert oai["keys"][1]["status"] == "invalid_key"
    assert oai["models"] == {MODELS[OPENAI]: {"valid": 1, "invalid_key": 1, "no_quota": 1}}
    assert not any(key in result.output for key in KEYS)


def test_status_with_a_broken_config_exits_2_with_the_report(tmp_path: Path) -> None:
    """A configuration error prints every problem and exits 2 without touching the store."""
    path = tmp_path / "providers.yaml"
    path.write_text(
        "server:\n  port: many\nproviders:\n  Bad Name:\n    provider_type: nope\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["status", "--config", str(path)])
    assert result.exit_code == 2
    assert "server.port" in result.output
    assert "Bad Name" in result.output
    assert not (tmp_path / "data").exists()


def test_status_before_any_serve_says_so_and_creates_nothing(tmp_path: Path) -> None:
    """Without a store file yet, status exits 1 naming the path, and leaves no empty database."""
    config = build_config(tmp_path, "http://127.0.0.1:9", {OPENAI: KEYS})
    path = config.write()

    result = CliRunner().invoke(main, ["status", "--config", str(path)])

    assert result.exit_code == 1
    assert "no store at" in result.output
    assert "llmgateway serve" in result.output
    assert not list(tmp_path.rglob("*.db"))


def test_status_needs_no_client_token_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Client tokens written as unset `${VAR}` do not stop status; other variables still do."""
    path = _seeded(tmp_path)
    config = build_config(tmp_path, "http://127.0.0.1:9", {OPENAI: KEYS})
    for instance in config.tree["providers"]:
        variable = f"LLMGW_TEST_TOKEN_{instance.upper().replace('-', '_')}"
        monkeypatch.delenv(variable, raising=False)
        config.provider(instance)["access_control"]["gateway_access_token"] = f"${{{variable}}}"
    assert config.write() == path

    result = CliRunner().invoke(main, ["status", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["providers"][OPENAI]["models"][MODELS[OPENAI]]["valid"] == 1

    # A full load (what `serve` does) still refuses the same file.
    assert CliRunner().invoke(main, ["config", "check", "--config", str(path)]).exit_code == 2
    monkeypatch.delenv("LLMGW_TEST_ADMIN", raising=False)
    config.set("server.admin_token", "${LLMGW_TEST_ADMIN}")
    config.write()
    result = CliRunner().invoke(main, ["status", "--config", str(path)])
    assert result.exit_code == 2
    assert "LLMGW_TEST_ADMIN" in result.output
