"""Parsing of every retry signal the providers send."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from llmgateway.providers.retry_after import (
    header_retry_after,
    latest_reset,
    parse_duration,
    parse_retry_after,
    parse_rfc3339_wait,
)
from tests.fixtures.provider_errors import FIXED_NOW


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("2.488s", 2.488),
        ("37s", 37.0),
        ("17", 17.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    """Go-style durations and plain seconds parse to seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-5", "5x", "nan", "1e99", "s"])
def test_bad_durations_are_none(text: str) -> None:
    """Anything unparseable, negative or absurd is None, never an exception."""
    assert parse_duration(text) is None


def test_retry_after_http_date_and_seconds() -> None:
    """Retry-After is delay-seconds or an HTTP date relative to now."""
    assert parse_retry_after("120", FIXED_NOW) == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", FIXED_NOW) == 60.0
    assert parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", FIXED_NOW) == 0.0
    assert parse_retry_after("not a date", FIXED_NOW) is None


def test_rfc3339_reset_times() -> None:
    """Anthropic's reset times become seconds from now; naive or bad times are None."""
    assert parse_rfc3339_wait("2026-01-01T00:00:17Z", FIXED_NOW) == 17.0
    assert parse_rfc3339_wait("2026-01-01T01:00:00+01:00", FIXED_NOW) == 0.0
    assert parse_rfc3339_wait("2026-01-01T00:00:17", FIXED_NOW) is None
    assert parse_rfc3339_wait("tomorrow", FIXED_NOW) is None


def test_retry_after_ms_is_preferred() -> None:
    """retry-after-ms (OpenAI SDKs honour it) wins over Retry-After."""
    headers = CIMultiDict({"retry-after-ms": "1500", "Retry-After": "9"})
    assert header_retry_after(headers, FIXED_NOW) == 1.5


def test_latest_reset_uses_the_exhausted_limit() -> None:
    """The reset of the limit at 0 remaining is used, not a longer one still available."""
    headers = CIMultiDict(
        {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "2s",
            "x-ratelimit-remaining-tokens": "5000",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    fmt = "x-ratelimit-{field}-{limit}"
    assert latest_reset(headers, ("requests", "tokens"), fmt, parse_duration) == 2.0
    del headers["x-ratelimit-remaining-requests"]
    assert latest_reset(headers, ("requests", "tokens"), fmt, parse_duration) == 360.0
    assert latest_reset(CIMultiDict(), ("requests",), fmt, parse_duration) is None
