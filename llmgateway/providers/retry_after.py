"""Parsing of the ways providers say when to come back after a rate limit.

Retry-After (seconds or HTTP date), OpenAI's `x-ratelimit-reset-*` durations
("1s", "6m0s", "20ms"), Anthropic's `anthropic-ratelimit-*-reset` RFC 3339
times and Gemini's RetryInfo `retryDelay` ("37s"). Every parser returns None on
anything it does not understand; none raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Final

Clock = Callable[[], float]
"""Returns the current Unix time in seconds (injected so tests can fix it)."""

_GO_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_GO_DURATION_WHOLE: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|us|µs|ns|h|m|s))+")
_UNIT_SECONDS: Final = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}
_MAX_WAIT: Final = 7 * 86400.0
"""Waits longer than a week are treated as nonsense rather than trusted."""


def _sane(seconds: float) -> float | None:
    if seconds != seconds or seconds < 0 or seconds > _MAX_WAIT:  # NaN, negative, absurd
        return None
    return seconds


def parse_seconds(value: str) -> float | None:
    """A plain non-negative number of seconds ("17", "2.5"), else None."""
    try:
        return _sane(float(value.strip()))
    except ValueError:
        return None


def parse_duration(value: str) -> float | None:
    """A Go-style duration ("1s", "6m0s", "20ms", "1h2m3.5s") or plain seconds, else None."""
    text = value.strip()
    if _GO_DURATION_WHOLE.fullmatch(text) is None:
        return parse_seconds(text)
    total = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _GO_DURATION.findall(text))
    return _sane(total)


def parse_retry_after(value: str, now: float) -> float | None:
    """An HTTP Retry-After value, delay-seconds or HTTP-date (RFC 9110 §10.2.3), else None."""
    seconds = parse_seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return _sane(max(0.0, when.timestamp() - now))


def parse_rfc3339_wait(value: str, now: float) -> float | None:
    """Seconds from `now` until an RFC 3339 time ("2026-01-01T00:00:17Z"), else None."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return _sane(max(0.0, when.timestamp() - now))


def latest_reset(
    headers: Mapping[str, str],
    limits: Iterable[str],
    header_format: str,
    parse: Callable[[str], float | None],
) -> float | None:
    """The wait until the exhausted rate limits reset, from per-limit reset headers.

    For each limit name, `header_format.format(limit=name, field="reset")` names
    its reset header and `field="remaining"` its remaining-count header. The
    limits reported at "0" remaining are the ones hit; when none says so, all
    of them are considered. Returns the latest of their resets, or None.
    """
    exhausted: list[float] = []
    others: list[float] = []
    for limit in limits:
        raw = headers.get(header_format.format(limit=limit, field="reset"))
        if raw is None:
            continue
        wait = parse(raw)
        if wait is None:
            continue
        remaining = headers.get(header_format.format(limit=limit, field="remaining"))
        (exhausted if remaining is not None and remaining.strip() == "0" else others).append(wait)
    chosen = exhausted or others
    return max(chosen) if chosen else None


def header_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """The standard `retry-after-ms` / `Retry-After` header, when present and valid."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        millis = parse_seconds(raw_ms)
        if millis is not None:
            return millis / 1000.0
    raw = headers.get("Retry-After")
    return parse_retry_after(raw, now) if raw is not None else None
