"""Parsers of single configuration values: each returns the typed value or raises ValueError.

The ValueError text completes a sentence about the value ("... is not a
duration"), so the validator can prefix it with the offending value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from llmgateway.core.key_material import decode_encryption_key

INSTANCE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")
"""What a provider instance name must look like."""

INSTANCE_NAME_FORM: Final = (
    "lower-case letters, digits, '_' and '-', starting with a letter or digit"
)
SIMPLE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")

_DURATION: Final = re.compile(r"\s*([-+]?(?:\d+(?:\.\d+)?|\.\d+))\s*(ms|s|m|h|d)?\s*")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_FORMS: Final = 'seconds as a number, or "250ms", "90s", "30m", "24h", "10d"'

DATABASE_SCHEMES: Final = ("sqlite", "postgresql", "postgres")
DATABASE_FORMS: Final = '"sqlite:///path/to/file.db" or "postgresql://user:password@host:5432/db"'

_TRUE: Final = frozenset({"true", "yes", "on"})
_FALSE: Final = frozenset({"false", "no", "off"})

Parser = Callable[[Any], Any]


def parse_duration(value: object) -> float:
    """Seconds as a float from a number of seconds or a string such as "250ms", "90s", "10d".

    Raises ValueError naming the value and the accepted forms. The sign is not
    judged here: `-5` and `"-5s"` give -5.0 (the validator rejects them).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; use {DURATION_FORMS}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration; use {DURATION_FORMS}")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration; use {DURATION_FORMS}")
    return seconds


def describe(value: object, *, secret: bool = False, mask: Callable[[str], str] = str) -> str:
    """A short human text for `value` in a problem message; secrets are masked.

    Credentials written into a URL (`scheme://user:password@host`) are never shown.
    """
    if value is None:
        return "empty value"
    if isinstance(value, str):
        if secret:
            return repr(mask(value))
        value = redact_userinfo(value)
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)


def string(value: Any) -> str:
    """A string (numbers are not silently turned into strings)."""
    if not isinstance(value, str):
        raise ValueError("is not a string")
    return value


def encryption_key(value: Any) -> str:
    """An encryption key as `decode_encryption_key` reads it, or "" (keys stored in clear)."""
    text = string(value).strip()
    if text:
        decode_encryption_key(text)
    return text


def non_empty(value: Any) -> str:
    """A string with at least one non-blank character."""
    if not string(value).strip():
        raise ValueError("is empty")
    return str(value)


def boolean(value: Any) -> bool:
    """true/false; the strings true/false/yes/no/on/off too (values from `${VAR}`)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("is not true or false")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise ValueError("is not an integer")


def integer(minimum: int | None = None, maximum: int | None = None) -> Parser:
    """An integer parser with optional inclusive bounds (digit strings accepted)."""

    def parse(value: Any) -> int:
        number = _to_int(value)
        if minimum is not None and number < minimum:
            raise ValueError("is too small")
        if maximum is not None and number > maximum:
            raise ValueError("is too large")
        return number

    return parse


def number(*, minimum: float | None = None, above: float | None = None) -> Parser:
    """A real-number parser: `minimum` inclusive, `above` exclusive."""

    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("is not a number")
        try:
            result = float(value) if isinstance(value, int | float | str) else math.nan
        except ValueError:
            raise ValueError("is not a number") from None
        if not math.isfinite(result):
            raise ValueError("is not a number")
        if minimum is not None and result < minimum:
            raise ValueError("is too small")
        if above is not None and result <= above:
            raise ValueError("is too small")
        return result

    return parse


def duration(*, allow_zero: bool = False) -> Parser:
    """A duration parser refusing negative values, and zero unless `allow_zero`."""

    def parse(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise ValueError("is not a duration") from None
        if seconds < 0 or (seconds == 0 and not allow_zero):
            raise ValueError("is not a positive duration" if not allow_zero else "is negative")
        return seconds

    return parse


def choice(values: list[str]) -> Parser:
    """A parser accepting one of `values` exactly."""

    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in values:
            raise ValueError("is not one of the allowed values")
        return value

    return parse


def dot_path(value: Any) -> str:
    """A dot path into a JSON document ("error.code", "error.details.*.reason"): no empty segment."""
    text = non_empty(value)
    if any(not part for part in text.split(".")):
        raise ValueError("is not a dot path like error.code")
    return text


def regex(value: Any) -> str:
    """A string that compiles as a Python regular expression."""
    text = string(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression: {exc}") from None
    return text


_USERINFO: Final = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@\s]*@")


def redact_userinfo(text: str) -> str:
    """`text` with the `user:password@` part of any URL in it replaced by `***@`."""
    return _USERINFO.sub(r"\g<scheme>***@", text) if "@" in text else text


def http_url(value: Any) -> str:
    """An absolute http(s) URL without query, fragment or credentials; the trailing '/' is dropped.

    `user:password@` is refused: the gateway sets each request's credentials
    itself (a key per attempt), and a password in the URL would be shown
    wherever the URL is.
    """
    text = non_empty(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("is not an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError(
            "must not contain credentials (user:password@): the gateway sends each "
            "instance's keys itself; put upstream credentials in keys or key files"
        )
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    return text.rstrip("/")


def url_path(value: Any) -> str:
    """A URL path starting with '/'."""
    text = non_empty(value)
    if not text.startswith("/"):
        raise ValueError("does not start with '/'")
    return text


def mapping(value: Any) -> dict[str, Any]:
    """A mapping, returned as a plain dict."""
    if not isinstance(value, Mapping):
        raise ValueError("is not a mapping")
    return dict(value)


def optional(parse: Parser) -> Parser:
    """`parse`, letting None (not set) through."""

    def wrapped(value: Any) -> Any:
        return None if value is None else parse(value)

    return wrapped


def database_url(value: Any) -> str:
    """A `sqlite:///...` or `postgresql://` / `postgres://` URL."""
    text = non_empty(value).strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in DATABASE_SCHEMES:
        raise ValueError("has an unknown database URL scheme")
    if scheme == "sqlite" and (not rest.startswith("/") or len(rest) < 2):
        raise ValueError('is not "sqlite:///<path>"')
    return text


def instance_name(value: Any) -> str:
    """A provider instance name: [a-z0-9][a-z0-9_-]*."""
    if not isinstance(value, str) or not INSTANCE_NAME.fullmatch(value):
        raise ValueError("is not a valid instance name")
    return value
