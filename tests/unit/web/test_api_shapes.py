"""The key admin API's answers: keys masked with a short fingerprint, times in UTC with Z."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.models import KeyRecord
from llmgateway.pool.route import RouteView, SkippedKey
from llmgateway.web.api.shapes import (
    delete_json,
    error_body,
    history_json,
    import_json,
    iso,
    job_json,
    key_json,
    page_json,
    route_json,
)
from llmgateway.web.api.validation import RejectedLine

KEY = "sk-shapes-0001-secretvalue"
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Usage:
    requests: int = 0
    failures: int = 0
    last_used_at: datetime | None = None


@dataclass
class Stored:
    id: int
    instance: str
    key: str
    fingerprint: str
    source: str
    models: dict[str, KeyRecord] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)


@dataclass
class History:
    model: str
    old: str
    new: str
    reason: str | None
    message: str
    at: datetime


@dataclass
class Job:
    id: int
    kind: str
    state: str
    done: int
    total: int
    results: dict[str, int]


def record(model: str, status: Status, **extra: object) -> KeyRecord:
    return KeyRecord(1, "main", KEY, model, status, **extra)  # type: ignore[arg-type]


def hide(text: str) -> str:
    return text.replace(KEY, "sk-s...alue")


def test_times_are_utc_with_z() -> None:
    assert iso(AT) == "2026-01-02T03:04:05Z"
    assert iso(AT.astimezone(timezone(timedelta(hours=2)))) == "2026-01-02T03:04:05Z"
    assert iso(None) is None


def test_errors_carry_a_message_and_a_code() -> None:
    assert error_body("not_found", "no key 3") == {
        "error": {"message": "no key 3", "code": "not_found"}
    }


def test_a_key_is_masked_with_its_short_fingerprint_and_newer_live_records_win() -> None:
    stored = Stored(
        id=7,
        instance="main",
        key=KEY,
        fingerprint="ab" * 32,
        source="api",
        models={
            "m1": record("m1", Status.UNTESTED),
            "m2": record("m2", Status.VALID, last_checked_at=AT),
        },
        usage=Usage(10, 2, AT),
    )
    live = {
        "m1": record(
            "m1",
            Status.INVALID_KEY,
            reason=ErrorReason.INVALID_KEY,
            status_code=401,
            message=f"bad key {KEY}",
            last_checked_at=AT,
            next_check_at=AT + timedelta(hours=1),
        )
    }
    later = AT + timedelta(minutes=5)
    shaped = key_json(stored, hide, live, unflushed=(3, 1, later))
    assert shaped["id"] == 7
    assert shaped["key"] == "sk-s...alue"
    assert shaped["fingerprint"] == "abababababab"
    assert shaped["source"] == "api"
    assert shaped["models"]["m1"] == {
        "status": "invalid_key",
        "reason": "invalid_key",
        "status_code": 401,
        "message": "bad key sk-s...alue",
        "last_checked_at": "2026-01-02T03:04:05Z",
        "next_check_at": "2026-01-02T04:04:05Z",
        "cooldown_until": None,
    }
    assert shaped["models"]["m2"]["status"] == "valid"
    assert shaped["usage"] == {
        "requests": 13,
        "failures": 3,
        "last_used_at": "2026-01-02T03:09:05Z",
    }
    assert KEY not in str(shaped)


def test_history_page_import_delete_and_job_answers() -> None:
    entries = [History("m1", "valid", "invalid_key", "invalid_key", f"x {KEY}", AT)]
    assert history_json(entries, hide) == [
        {
            "model": "m1",
            "old": "valid",
            "new": "invalid_key",
            "reason": "invalid_key",
            "message": "x sk-s...alue",
            "at": "2026-01-02T03:04:05Z",
        }
    ]
    page = page_json([{"id": 1}], 5, {"status": {"valid": 5}}, 1)
    assert page == {
        "items": [{"id": 1}],
        "total": 5,
        "facets": {"status": {"valid": 5}, "instance": {}},
        "next_cursor": "1",
    }
    assert page_json([], 0, {}, None)["next_cursor"] is None
    assert import_json(2, 1, [RejectedLine(4, "empty")]) == {
        "added": 2,
        "duplicates": 1,
        "rejected": [{"line": 4, "reason": "empty"}],
    }
    assert delete_json(3, [(9, "remove it from keys/main/a.txt")]) == {
        "deleted": 3,
        "refused": [{"id": 9, "reason": "remove it from keys/main/a.txt"}],
    }
    job = Job(4, "recheck", "running", 10, 20, {"valid": 9, "invalid_key": 1})
    assert job_json(job) == {
        "id": 4,
        "kind": "recheck",
        "state": "running",
        "done": 10,
        "total": 20,
        "results": {"valid": 9, "invalid_key": 1},
    }


def test_the_route_answer_masks_the_next_key() -> None:
    view = RouteView(
        "main",
        "gpt",
        "gpt",
        2,
        record("gpt", Status.VALID),
        (SkippedKey(2, "sk-o...ther", "status invalid_key"),),
        {"valid": 2, "invalid_key": 1},
    )
    assert route_json(view) == {
        "instance": "main",
        "model": "gpt",
        "usable": 2,
        "next": {"id": 1, "key": "sk-s...alue", "status": "valid"},
        "skipped": [{"id": 2, "key": "sk-o...ther", "why": "status invalid_key"}],
        "counts": {"valid": 2, "invalid_key": 1},
    }
