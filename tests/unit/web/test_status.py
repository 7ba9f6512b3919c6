"""The status document of `/-/status` and `llmgateway status`: summary, key pages, table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from llmgateway.cli.status import render_table
from llmgateway.config.schemas import ModelConfig, ProviderConfig
from llmgateway.core.constants import ALL_MODELS_MARKER, ProviderType, Status
from llmgateway.core.models import KeyRecord
from llmgateway.pool.listing import ModelTally
from llmgateway.web.status import (
    MAX_PAGE,
    Cursor,
    PageRequest,
    ProcessInfo,
    add_key_page,
    iso_utc,
    key_row,
    summary_document,
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


def _tally(model: str, usable: int, **counts: int) -> ModelTally:
    tally = {Status(name): n for name, n in counts.items()}
    return ModelTally("openai-main", model, tally, usable=usable, rows=sum(tally.values()))


class TestSummaryDocument:
    def test_shape_matches_the_design_document(self) -> None:
        """An instance has provider_type, keys_total, per-model counts, usable and incidents."""
        tallies = [
            _tally("gpt-4o-mini", 1, invalid_key=1, valid=1),
            _tally("gpt-4o", 0, no_model=1, invalid_key=1),
        ]
        document = summary_document([_provider()], tallies)
        assert list(document) == ["providers"]
        assert document["providers"]["openai-main"] == {
            "provider_type": "openai_like",
            "keys_total": 2,
            "models": {
                "gpt-4o-mini": {"valid": 1, "invalid_key": 1},
                "gpt-4o": {"invalid_key": 1, "no_model": 1},
            },
            "usable": {"gpt-4o-mini": 1, "gpt-4o": 0},
            "incidents": [],
        }

    def test_keys_total_is_given_or_the_largest_model(self) -> None:
        """Without `keys_total`, an instance counts the rows of its largest status model."""
        tallies = [_tally("gpt-4o-mini", 3, valid=3), _tally("gpt-4o", 2, valid=2)]
        assert (
            summary_document([_provider()], tallies)["providers"]["openai-main"]["keys_total"] == 3
        )
        given = summary_document([_provider()], tallies, keys_total={"openai-main": 7})
        assert given["providers"]["openai-main"]["keys_total"] == 7

    def test_every_configured_instance_and_model_appears(self) -> None:
        """Instances and models without rows appear empty; unknown instances are left out."""
        stray = ModelTally("removed-instance", "gpt-4o", {Status.VALID: 1}, usable=1, rows=1)
        document = summary_document([_provider("a"), _provider("b", shared=True)], [stray])
        assert document["providers"] == {
            "a": {
                "provider_type": "openai_like",
                "keys_total": 0,
                "models": {"gpt-4o-mini": {}, "gpt-4o": {}},
                "usable": {"gpt-4o-mini": 0, "gpt-4o": 0},
                "incidents": [],
            },
            "b": {
                "provider_type": "openai_like",
                "keys_total": 0,
                "models": {ALL_MODELS_MARKER: {}},
                "usable": {ALL_MODELS_MARKER: 0},
                "incidents": [],
            },
        }

    def test_incidents_go_to_their_instance(self) -> None:
        """Each incident is listed under its own instance."""
        incident = {"instance": "b", "reason": "invalid_key", "message": "many keys failing"}
        document = summary_document([_provider("a"), _provider("b")], [], incidents=[incident])
        assert document["providers"]["a"]["incidents"] == []
        assert document["providers"]["b"]["incidents"] == [incident]

    def test_process_block_is_added_when_given(self) -> None:
        """With a ProcessInfo the document says which process answered."""
        process = ProcessInfo(pid=4242, started_at=CHECKED)
        document = summary_document([_provider()], [], process=process)
        assert document["process"] == {"pid": 4242, "started_at": "2026-01-01T00:00:00Z"}


class TestKeyPages:
    def test_a_row_carries_the_masked_key_and_its_status(self) -> None:
        """A row has the masked key, model, status, reason, times, code and message."""
        record = _record(
            2,
            KEY_B,
            "gpt-4o-mini",
            Status.INVALID_KEY,
            last_checked_at=CHECKED,
            next_check_at=CHECKED + timedelta(days=10),
            failing_since=CHECKED,
            status_code=401,
            message="Incorrect API key provided",
        )
        assert key_row(record) == {
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

    def test_keys_are_masked_and_messages_go_through_the_mask(self) -> None:
        """No key appears in full; short keys become `***`; messages are masked as given."""
        records = [
            _record(1, KEY_A, "gpt-4o-mini", Status.VALID, message=f"saw {KEY_A}"),
            _record(2, SHORT_KEY, "gpt-4o-mini", Status.UNTESTED),
        ]
        document = add_key_page(
            summary_document([_provider()], []),
            records,
            None,
            mask=lambda text: text.replace(KEY_A, "sk-a...9f3k"),
        )
        text = repr(document)
        assert KEY_A not in text and SHORT_KEY not in text
        keys = document["providers"]["openai-main"]["keys"]
        assert [k["key"] for k in keys] == ["sk-a...9f3k", "***"]
        assert keys[0]["message"] == "saw sk-a...9f3k"
        assert document["next_cursor"] is None

    def test_every_instance_gets_its_list_and_the_page_its_cursor(self) -> None:
        """Instances without rows in the page get an empty list; next_cursor is the opaque text."""
        records = [_record(1, KEY_A, "gpt-4o", Status.VALID, instance="a")]
        after = Cursor("a", 1, "gpt-4o")
        document = add_key_page(
            summary_document([_provider("a"), _provider("b")], []), records, after
        )
        assert [len(p["keys"]) for p in document["providers"].values()] == [1, 0]
        assert Cursor.decode(document["next_cursor"]) == after

    def test_cursors_order_rows_by_instance_key_id_and_model(self) -> None:
        """The row order: instance name, then key id, then model."""
        ordered = [
            Cursor("a", 2, "z"),
            Cursor("a", 10, "b"),
            Cursor("a", 10, "c"),
            Cursor("b", 1, "a"),
        ]
        assert sorted(reversed(ordered)) == ordered

    @pytest.mark.parametrize("text", ["", "nope", "WzEsMiwzXQ", "WyJhIiwiMSIsImIiXQ"])
    def test_a_cursor_not_given_by_the_gateway_is_refused(self, text: str) -> None:
        """Garbage, or JSON of the wrong shape, is a ValueError (the handler's 400)."""
        with pytest.raises(ValueError, match="cursor"):
            Cursor.decode(text)

    def test_page_requests_are_read_from_the_query(self) -> None:
        """`limit` defaults to 1000 and must lie in 1..1000; `cursor` is decoded."""
        assert PageRequest.parse(None, None) == PageRequest(None, MAX_PAGE)
        cursor = Cursor("a", 5, "m")
        assert PageRequest.parse("20", cursor.encode()) == PageRequest(cursor, 20)
        for wrong in ("0", "1001", "ten", "-5"):
            with pytest.raises(ValueError, match="limit"):
                PageRequest.parse(wrong, None)


def test_iso_utc_converts_to_utc_with_z() -> None:
    """Aware datetimes of any zone are printed in UTC, to the second, with a Z suffix."""
    paris = timezone(timedelta(hours=1))
    assert iso_utc(datetime(2026, 1, 1, 1, 0, 0, 999, tzinfo=paris)) == "2026-01-01T00:00:00Z"
    assert iso_utc(None) is None


def test_table_has_a_row_per_instance_and_model() -> None:
    """The table shows one row per model with a column per status present, never a key."""
    tallies = [_tally("gpt-4o-mini", 2, valid=1, rate_limited=1)]
    table = render_table(summary_document([_provider()], tallies))
    lines = table.splitlines()
    assert lines[0].split() == ["INSTANCE", "MODEL", "TOTAL", "USABLE", "VALID", "RATE_LIMITED"]
    assert lines[1].split() == ["openai-main", "gpt-4o-mini", "2", "2", "1", "1"]
    assert lines[2].split() == ["openai-main", "gpt-4o", "0", "0", "0", "0"]
