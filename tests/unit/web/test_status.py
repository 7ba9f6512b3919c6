"""The status document of `/-/status` and `llmgateway status`, and its text table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from llmgateway.cli.status import render_table
from llmgateway.config.schemas import ModelConfig, ProviderConfig
from llmgateway.core.constants import ALL_MODELS_MARKER, ProviderType, Status
from llmgateway.core.models import KeyRecord
from llmgateway.web.status import (
    ProcessInfo,
    build_status_document,
    iso_utc,
)

KEY_A = "sk-aaaa-0123456789-9f3k"
KEY_B = "sk-bbbb-0123456789-77xy"
SHORT_KEY = "sk-short"
CHECKED = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)


def _provider(name: str = "openai-main", shared: bool = False) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        provider_type=ProviderType.OPENAI_LIKE,
        api_base_url="https://api.example.com",
        default_model="gpt-4o-mini",
        shared_key_status=shared,
        models={"gpt-4o-mini": ModelConfig(), "gpt-4o": ModelConfig()},
    )


def _record(key_id: int, key: str, model: str, status: Status, **extra: object) -> KeyRecord:
    return KeyRecord(
        key_id=key_id,
        instance=extra.pop("instance", "openai-main"),  # type: ignore[arg-type]
        key=key,
        model=model,
        status=status,
        **extra,  # type: ignore[arg-type]
    )


class TestBuildStatusDocument:
    def test_shape_matches_the_design_document(self) -> None:
        """An instance has provider_type, keys_total, per-model status counts and a key list."""
        records = [
            _record(1, KEY_A, "gpt-4o-mini", Status.VALID, last_checked_at=CHECKED),
            _record(
                2,
                KEY_B,
                "gpt-4o-mini",
                Status.INVALID_KEY,
                last_checked_at=CHECKED,
                next_check_at=CHECKED + timedelta(days=10),
                failing_since=CHECKED,
                status_code=401,
                message="Incorrect API key provided",
            ),
            _record(1, KEY_A, "gpt-4o", Status.NO_MODEL),
            _record(2, KEY_B, "gpt-4o", Status.INVALID_KEY),
        ]
        document = build_status_document([_provider()], records, now=CHECKED)
        assert list(document) == ["providers"]
        instance = document["providers"]["openai-main"]
        assert instance["provider_type"] == "openai_like"
        assert instance["keys_total"] == 2
        assert instance["models"] == {
            "gpt-4o-mini": {"valid": 1, "invalid_key": 1},
            "gpt-4o": {"invalid_key": 1, "no_model": 1},
        }
        assert instance["usable"] == {"gpt-4o-mini": 1, "gpt-4o": 0}
        assert instance["incidents"] == []
        assert instance["keys"][3] == {
            "key": "sk-b...77xy",
            "model": "gpt-4o-mini",
            "status": "invalid_key",
            "reason": None,
            "last_checked_at": "2026-01-01T00:00:00Z",
            "next_check_at": "2026-01-11T00:00:00Z",
            "failing_since": "2026-01-01T00:00:00Z",
            "status_code": 401,
            "message": "Incorrect API key provided",
        }

    def test_keys_are_masked(self) -> None:
        """No key appears in full; short keys become `***`."""
        records = [
            _record(1, KEY_A, "gpt-4o-mini", Status.VALID),
            _record(2, SHORT_KEY, "gpt-4o-mini", Status.UNTESTED),
        ]
        document = build_status_document([_provider()], records)
        text = repr(document)
        assert KEY_A not in text and SHORT_KEY not in text
        assert [k["key"] for k in document["providers"]["openai-main"]["keys"]] == [
            "sk-a...9f3k",
            "***",
        ]

    def test_keys_sorted_by_model_then_key_id(self) -> None:
        """The key list is ordered by model, then key id, whatever the input order."""
        records = [
            _record(2, KEY_B, "gpt-4o-mini", Status.VALID),
            _record(1, KEY_A, "gpt-4o-mini", Status.VALID),
            _record(2, KEY_B, "gpt-4o", Status.VALID),
        ]
        keys = build_status_document([_provider()], records)["providers"]["openai-main"]["keys"]
        assert [(k["model"], k["key"]) for k in keys] == [
            ("gpt-4o", "sk-b...77xy"),
            ("gpt-4o-mini", "sk-a...9f3k"),
            ("gpt-4o-mini", "sk-b...77xy"),
        ]

    def test_every_configured_instance_and_model_appears(self) -> None:
        """Instances and models without records appear empty; unknown instances are left out."""
        records = [_record(1, KEY_A, "gpt-4o", Status.VALID, instance="removed-instance")]
        document = build_status_document([_provider("a"), _provider("b", shared=True)], records)
        assert document["providers"] == {
            "a": {
                "provider_type": "openai_like",
                "keys_total": 0,
                "models": {"gpt-4o-mini": {}, "gpt-4o": {}},
                "usable": {"gpt-4o-mini": 0, "gpt-4o": 0},
                "incidents": [],
                "keys": [],
            },
            "b": {
                "provider_type": "openai_like",
                "keys_total": 0,
                "models": {ALL_MODELS_MARKER: {}},
                "usable": {ALL_MODELS_MARKER: 0},
                "incidents": [],
                "keys": [],
            },
        }

    def test_process_block_is_added_when_given(self) -> None:
        """With a ProcessInfo the document says which process answered."""
        process = ProcessInfo(pid=4242, started_at=CHECKED)
        document = build_status_document([_provider()], [], process)
        assert document["process"] == {"pid": 4242, "started_at": "2026-01-01T00:00:00Z"}


def test_iso_utc_converts_to_utc_with_z() -> None:
    """Aware datetimes of any zone are printed in UTC, to the second, with a Z suffix."""
    paris = timezone(timedelta(hours=1))
    assert iso_utc(datetime(2026, 1, 1, 1, 0, 0, 999, tzinfo=paris)) == "2026-01-01T00:00:00Z"
    assert iso_utc(None) is None


def test_table_has_a_row_per_instance_and_model() -> None:
    """The table shows one row per model with a column per status present, keys only on demand."""
    records = [
        _record(1, KEY_A, "gpt-4o-mini", Status.VALID),
        _record(2, KEY_B, "gpt-4o-mini", Status.RATE_LIMITED),
    ]
    document = build_status_document([_provider()], records)
    table = render_table(document)
    lines = table.splitlines()
    assert lines[0].split() == ["INSTANCE", "MODEL", "TOTAL", "USABLE", "VALID", "RATE_LIMITED"]
    assert lines[1].split() == ["openai-main", "gpt-4o-mini", "2", "2", "1", "1"]
    assert lines[2].split() == ["openai-main", "gpt-4o", "0", "0", "0", "0"]
    assert "sk-a...9f3k" not in table
    with_keys = render_table(document, show_keys=True)
    assert "sk-a...9f3k" in with_keys and "rate_limited" in with_keys
    assert KEY_A not in with_keys
