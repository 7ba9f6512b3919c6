"""Reading the key admin API's requests: every malformed or unknown input is a clear 4xx."""

from __future__ import annotations

import pytest

from llmgateway.core.constants import Status
from llmgateway.web.api.validation import (
    MAX_BODY_BYTES,
    MAX_KEY_LENGTH,
    ApiError,
    RejectedLine,
    Selection,
    key_problem,
    parse_id,
    parse_import,
    parse_json_object,
    parse_list_query,
    parse_recheck,
    parse_route_query,
    parse_selection,
)

INSTANCES = ("openai-main", "claude")
STATUSES = [s.value for s in Status] + ["disabled"]


def refused(call: object, status: int, code: str | None = None) -> ApiError:
    """Run `call` and return the ApiError it raised, checking its status and code."""
    assert callable(call)
    with pytest.raises(ApiError) as caught:
        call()
    assert caught.value.status == status
    if code is not None:
        assert caught.value.code == code
    return caught.value


@pytest.mark.parametrize("body", [b"", b"  ", b"{", b"[1, 2]", b'"text"', b"null", b"\xff"])
def test_a_body_that_is_not_a_json_object_is_refused(body: bytes) -> None:
    refused(lambda: parse_json_object(body), 400, "malformed_json")


def test_a_body_over_the_limit_is_too_large() -> None:
    refused(lambda: parse_json_object(b" " * (MAX_BODY_BYTES + 1)), 413, "too_large")


def test_a_json_object_is_read() -> None:
    assert parse_json_object(b'{"ids": [1]}') == {"ids": [1]}


def test_a_selection_is_ids_or_a_filter() -> None:
    assert parse_selection({"ids": [3, 1, 3]}, INSTANCES, STATUSES) == Selection(ids=(3, 1))
    chosen = parse_selection(
        {"filter": {"instance": "claude", "status": "invalid_key", "q": None}},
        INSTANCES,
        STATUSES,
    )
    assert chosen == Selection(filter={"instance": "claude", "status": "invalid_key"})


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": [1], "filter": {}},
        {"ids": []},
        {"ids": "1"},
        {"ids": [1, "2"]},
        {"ids": [0]},
        {"ids": [True]},
        {"filter": []},
        {"filter": {"status": 3}},
        {"filter": {"status": "nonsense"}},
        {"filter": {"source": "disk"}},
        {"filter": {"colour": "red"}},
        {"ids": [1], "models": ["m"]},
    ],
)
def test_a_bad_selection_is_refused(body: dict[str, object]) -> None:
    refused(lambda: parse_selection(body, INSTANCES, STATUSES), 400)


def test_an_unknown_field_is_named_in_the_refusal() -> None:
    error = refused(
        lambda: parse_selection({"ids": [1], "force": True}, INSTANCES, STATUSES),
        400,
        "unknown_field",
    )
    assert "force" in error.message


def test_a_filter_naming_an_unknown_instance_is_not_found() -> None:
    error = refused(
        lambda: parse_selection({"filter": {"instance": "nope"}}, INSTANCES, STATUSES),
        404,
        "unknown_instance",
    )
    assert "openai-main" in error.message


def test_a_recheck_may_name_models() -> None:
    request = parse_recheck({"filter": {}, "models": ["m1", "m1", " m2 "]}, INSTANCES, STATUSES)
    assert request.models == ("m1", "m2")
    assert parse_recheck({"ids": [4]}, INSTANCES, STATUSES).models is None
    refused(lambda: parse_recheck({"ids": [4], "models": []}, INSTANCES, STATUSES), 400)
    refused(lambda: parse_recheck({"ids": [4], "models": [""]}, INSTANCES, STATUSES), 400)


def test_an_import_reads_one_key_a_line_and_reports_each_rejected_line() -> None:
    text = "\n".join(
        [
            "# team A",
            "  sk-first-key  ",
            "",
            "sk-second  # a trailing comment",
            "two keys here",
            "sk-first-key",
            "bad\x01key",
            "x" * (MAX_KEY_LENGTH + 1),
            "AIzaSyAnyFormatAtAll",
        ]
    )
    request = parse_import({"instance": "claude", "text": text}, INSTANCES)
    assert request.instance == "claude"
    assert request.keys == ("sk-first-key", "sk-second", "AIzaSyAnyFormatAtAll")
    assert request.repeats == 1
    assert [r.line for r in request.rejected] == [5, 7, 8]
    assert all(isinstance(r, RejectedLine) and r.reason for r in request.rejected)


def test_an_import_of_a_list_numbers_its_items() -> None:
    request = parse_import({"instance": "claude", "keys": ["k1-abc", " ", "k2-abc "]}, INSTANCES)
    assert request.keys == ("k1-abc", "k2-abc")
    assert request.rejected == (RejectedLine(2, "empty"),)


@pytest.mark.parametrize(
    "body",
    [
        {"keys": ["k"]},
        {"instance": "claude"},
        {"instance": "claude", "keys": ["k"], "text": "k"},
        {"instance": "claude", "keys": "k"},
        {"instance": "claude", "keys": [1]},
        {"instance": "claude", "text": ["k"]},
        {"instance": "claude", "text": "k", "source": "api"},
        {"instance": 3, "text": "k"},
    ],
)
def test_a_bad_import_is_refused(body: dict[str, object]) -> None:
    refused(lambda: parse_import(body, INSTANCES), 400)


def test_an_import_into_an_unknown_instance_is_not_found() -> None:
    refused(lambda: parse_import({"instance": "x", "text": "k"}, INSTANCES), 404)


def test_any_key_format_is_accepted() -> None:
    for key in ("sk-proj-abc", "AIza_-.", "a", "ключ-ünïcode", "x" * MAX_KEY_LENGTH):
        assert key_problem(key) is None


def test_the_list_query_has_defaults_and_limits() -> None:
    query = parse_list_query({}, INSTANCES, STATUSES)
    assert (dict(query.filter), query.after, query.limit) == ({}, None, 100)
    query = parse_list_query(
        {"status": "valid", "cursor": "42", "limit": "1000"}, INSTANCES, STATUSES
    )
    assert (dict(query.filter), query.after, query.limit) == ({"status": "valid"}, 42, 1000)
    for bad in ({"limit": "1001"}, {"limit": "0"}, {"limit": "x"}, {"cursor": "-1"}, {"x": "1"}):
        refused(lambda bad=bad: parse_list_query(bad, INSTANCES, STATUSES), 400)


def test_the_route_query_needs_a_known_instance_and_a_model() -> None:
    assert parse_route_query({"instance": "claude", "model": "m"}, INSTANCES) == ("claude", "m")
    refused(lambda: parse_route_query({"instance": "claude"}, INSTANCES), 400)
    refused(lambda: parse_route_query({"instance": "x", "model": "m"}, INSTANCES), 404)
    refused(lambda: parse_route_query({"instance": "c", "model": "m", "k": "1"}, INSTANCES), 400)


@pytest.mark.parametrize("text", ["0", "-3", "abc", "1.5", "٣"])
def test_an_id_that_cannot_exist_is_not_found(text: str) -> None:
    refused(lambda: parse_id(text), 404, "not_found")


def test_an_id_is_read() -> None:
    assert parse_id("17") == 17
