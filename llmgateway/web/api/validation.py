"""Reading the key admin API's requests: bodies, filters, selections, imports, paging.

Pure functions, no aiohttp: each takes what the handler read (bytes, a
query mapping) and returns plain values, or raises `ApiError` with the 4xx
the client gets. Everything is checked before anything is applied: an
unknown field, a wrong type or a malformed body refuses the whole request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

MAX_BODY_BYTES: Final = 32 * 1024 * 1024
"""The largest request body the API reads (an import of 100,000 keys fits several times)."""

MAX_LIMIT: Final = 1000
"""The most items one page of `GET /-/api/keys` holds."""

DEFAULT_LIMIT: Final = 100
"""Items per page when `limit` is not given."""

MAX_KEY_LENGTH: Final = 4096
"""The longest key an import accepts (any format is accepted, but not any size)."""

MAX_IDS: Final = 100_000
"""The most ids one request may name (a filter selects more)."""

FILTER_FIELDS: Final = ("instance", "model", "status", "source", "q")
"""The fields of a key filter, all optional."""

SOURCES: Final = frozenset({"file", "api"})
"""The values of `source`."""


class ApiError(Exception):
    """A request the API refuses: `status` (4xx), a machine `code` and a readable message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    """A 400 refusal."""
    return ApiError(400, code, message)


@dataclass(frozen=True, slots=True)
class Selection:
    """The keys a bulk action applies to: `ids`, or every key matching `filter`.

    Exactly one of the two is set; `filter` holds only the fields given.
    """

    ids: tuple[int, ...] | None = None
    filter: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class RejectedLine:
    """An import line that was not stored, and why (`line` counts from 1)."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class ImportRequest:
    """The keys of `POST /-/api/keys`, read and checked.

    `keys` are unique, trimmed, in first-seen order; `repeats` counts the
    lines repeating an earlier one of the same request (duplicates).
    """

    instance: str
    keys: tuple[str, ...]
    rejected: tuple[RejectedLine, ...] = ()
    repeats: int = 0


@dataclass(frozen=True, slots=True)
class RecheckRequest:
    """`POST /-/api/keys/recheck`: the keys and, optionally, only these models."""

    selection: Selection
    models: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ListQuery:
    """`GET /-/api/keys`: the filter, the cursor (the last id seen) and the page size."""

    filter: Mapping[str, str] = field(default_factory=dict)
    after: int | None = None
    limit: int = DEFAULT_LIMIT


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body (400 when it is not one)."""
    if len(body) > MAX_BODY_BYTES:
        raise too_large()
    if not body.strip():
        raise bad_request("the request needs a JSON object body", "malformed_json")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the body is not valid JSON: {exc}", "malformed_json") from None
    if not isinstance(value, dict):
        raise bad_request("the body must be a JSON object", "malformed_json")
    return value


def too_large() -> ApiError:
    """The 413 of a body over `MAX_BODY_BYTES`."""
    return ApiError(
        413, "too_large", f"the request body is larger than {MAX_BODY_BYTES} bytes; split it"
    )


def check_fields(obj: Mapping[str, Any], allowed: Iterable[str], where: str = "the body") -> None:
    """Refuse (400) any field of `obj` not in `allowed`."""
    known = set(allowed)
    unknown = sorted(name for name in obj if name not in known)
    if unknown:
        raise bad_request(
            f"unknown field(s) in {where}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})",
            "unknown_field",
        )


def parse_filter(
    raw: Any, instances: Sequence[str], statuses: Iterable[str], where: str = "filter"
) -> dict[str, str]:
    """A filter object's fields (only those given), checked against what exists.

    `instance` must be a configured instance, `status` a known status,
    `source` "file" or "api"; every value a non-empty string.
    """
    if not isinstance(raw, Mapping):
        raise bad_request(f"{where} must be a JSON object of {', '.join(FILTER_FIELDS)}")
    check_fields(raw, FILTER_FIELDS, where)
    fields: dict[str, str] = {}
    for name, value in raw.items():
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise bad_request(f"{where}.{name} must be a non-empty string")
        fields[name] = value.strip()
    if "instance" in fields and fields["instance"] not in instances:
        raise ApiError(
            404,
            "unknown_instance",
            f"no instance {fields['instance']!r} is configured "
            f"(known: {', '.join(instances) or 'none'})",
        )
    known_statuses = set(statuses)
    if "status" in fields and fields["status"] not in known_statuses:
        raise bad_request(
            f"unknown status {fields['status']!r} (known: {', '.join(sorted(known_statuses))})"
        )
    if "source" in fields and fields["source"] not in SOURCES:
        raise bad_request(f"source must be one of {', '.join(sorted(SOURCES))}")
    return fields


def parse_ids(raw: Any) -> tuple[int, ...]:
    """A non-empty list of key ids (positive integers), without repeats, in order."""
    if not isinstance(raw, list) or not raw:
        raise bad_request("ids must be a non-empty list of key ids (integers)")
    if len(raw) > MAX_IDS:
        raise bad_request(f"at most {MAX_IDS} ids per request; use a filter for more")
    seen: dict[int, None] = {}
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad_request(f"ids must be positive integers, not {value!r}")
        seen[value] = None
    return tuple(seen)


def parse_selection(
    body: Mapping[str, Any],
    instances: Sequence[str],
    statuses: Iterable[str],
    extra: Iterable[str] = (),
) -> Selection:
    """`{"ids": [..]}` or `{"filter": {..}}` (exactly one), plus the `extra` fields allowed."""
    check_fields(body, ("ids", "filter", *extra))
    if ("ids" in body) == ("filter" in body):
        raise bad_request('give exactly one of "ids" (a list of key ids) or "filter" (an object)')
    if "ids" in body:
        return Selection(ids=parse_ids(body["ids"]))
    return Selection(filter=parse_filter(body["filter"], instances, statuses))


def parse_recheck(
    body: Mapping[str, Any], instances: Sequence[str], statuses: Iterable[str]
) -> RecheckRequest:
    """The body of `POST /-/api/keys/recheck`: a selection and optional `models`."""
    selection = parse_selection(body, instances, statuses, extra=("models",))
    raw = body.get("models")
    if raw is None:
        return RecheckRequest(selection)
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(m, str) and m.strip() for m in raw)
    ):
        raise bad_request("models must be a non-empty list of model names")
    return RecheckRequest(selection, tuple(dict.fromkeys(m.strip() for m in raw)))


def parse_import(body: Mapping[str, Any], instances: Sequence[str]) -> ImportRequest:
    """The body of `POST /-/api/keys`: `{"instance", "keys": [..]}` or `{"instance", "text"}`.

    In `text` one key a line: lines are trimmed, blank lines and `#` comments
    skipped (a `#` after whitespace starts a trailing comment). In `keys`
    each item is one key (line n is item n). Any key format is accepted; a
    line is rejected (with its number and why) only when it cannot be a key:
    whitespace inside, control characters, longer than `MAX_KEY_LENGTH`.
    """
    check_fields(body, ("instance", "keys", "text"))
    instance = body.get("instance")
    if not isinstance(instance, str) or not instance:
        raise bad_request("instance (the provider instance the keys belong to) is required")
    if instance not in instances:
        raise ApiError(
            404,
            "unknown_instance",
            f"no instance {instance!r} is configured (known: {', '.join(instances) or 'none'})",
        )
    if ("keys" in body) == ("text" in body):
        raise bad_request('give exactly one of "keys" (a list of keys) or "text" (one key a line)')
    if "text" in body:
        text = body["text"]
        if not isinstance(text, str):
            raise bad_request("text must be a string, one key a line")
        lines = _text_lines(text)
    else:
        items = body["keys"]
        if not isinstance(items, list) or not all(isinstance(k, str) for k in items):
            raise bad_request("keys must be a list of strings")
        lines = [(n, item.strip()) for n, item in enumerate(items, start=1)]
    return _read_lines(instance, lines)


def _text_lines(text: str) -> list[tuple[int, str]]:
    """(line number, candidate key) of every line of `text` that is not blank or a comment."""
    found: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        candidate = line.strip()
        if not candidate or candidate.startswith("#"):
            continue
        for mark in (" #", "\t#"):
            cut = candidate.find(mark)
            if cut != -1:
                candidate = candidate[:cut].rstrip()
        found.append((number, candidate))
    return found


def _read_lines(instance: str, lines: Iterable[tuple[int, str]]) -> ImportRequest:
    keys: dict[str, None] = {}
    rejected: list[RejectedLine] = []
    repeats = 0
    for number, key in lines:
        why = key_problem(key)
        if why is not None:
            rejected.append(RejectedLine(number, why))
        elif key in keys:
            repeats += 1
        else:
            keys[key] = None
    return ImportRequest(instance, tuple(keys), tuple(rejected), repeats)


_WHITESPACE: Final = re.compile(r"\s")
"""Any whitespace character (str.isspace's, as `\\s` matches in a str pattern)."""


def key_problem(key: str) -> str | None:
    """Why `key` (trimmed) cannot be a key, or None: any other format is accepted."""
    if not key:
        return "empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"longer than {MAX_KEY_LENGTH} characters"
    if _WHITESPACE.search(key):
        return "whitespace inside the key (one key a line)"
    if not key.isprintable():
        return "control or non-printable characters"
    return None


def parse_list_query(
    query: Mapping[str, str], instances: Sequence[str], statuses: Iterable[str]
) -> ListQuery:
    """The query of `GET /-/api/keys`: filter fields, `cursor`, `limit` (≤ `MAX_LIMIT`)."""
    check_fields(query, (*FILTER_FIELDS, "cursor", "limit"), "the query")
    raw_filter = {name: query[name] for name in FILTER_FIELDS if name in query}
    flt = parse_filter(raw_filter, instances, statuses, "the query")
    limit = DEFAULT_LIMIT
    if "limit" in query:
        limit = _positive_int(query["limit"], "limit")
        if limit > MAX_LIMIT:
            raise bad_request(f"limit must be at most {MAX_LIMIT}")
    after = _positive_int(query["cursor"], "cursor") if query.get("cursor") else None
    return ListQuery(flt, after, limit)


def parse_route_query(query: Mapping[str, str], instances: Sequence[str]) -> tuple[str, str]:
    """The (instance, model) of `GET /-/api/route`, both required."""
    check_fields(query, ("instance", "model"), "the query")
    instance = query.get("instance", "").strip()
    model = query.get("model", "").strip()
    if not instance or not model:
        raise bad_request("instance and model are both required")
    if instance not in instances:
        raise ApiError(
            404,
            "unknown_instance",
            f"no instance {instance!r} is configured (known: {', '.join(instances) or 'none'})",
        )
    return instance, model


def parse_id(text: str, what: str = "key") -> int:
    """An id from a URL (404 when it cannot be one: no such key)."""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise ApiError(404, "not_found", f"no {what} with id {text!r}")
    return int(text)


def _positive_int(text: str, name: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise bad_request(f"{name} must be a positive integer, not {text!r}")
    return int(text)
