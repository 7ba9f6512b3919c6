"""Error-classification rules compiled once at start-up into tables indexed by status code.

A rule looks at one dot path of the parsed JSON error body and maps a regex
match to an ErrorReason. `CompiledRules` holds the instance's `error_parsing`
rules (patterns compiled, paths split, sorted by priority with file order
breaking ties); `BuiltinDefaults` adds a provider type's own knowledge as data:
regex rules, symbol tables (e.g. Anthropic's `error.type`) and status-code
defaults. Nothing here compiles or sorts on the request path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from types import MappingProxyType
from typing import Final, final

from llmgateway.config.schemas import ErrorRule
from llmgateway.core.constants import ErrorReason

WILDCARD: Final = "*"
"""A path segment that fans out over every element of a list (or value of an object)."""

_MAX_FANOUT_VALUES: Final = 256
"""At most this many values are inspected per path, however wide the body is."""


def split_path(path: str) -> tuple[str, ...]:
    """Split a dot path ("error.details.*.reason") into its segments, once."""
    return tuple(path.split("."))


def values_at(doc: object, path: tuple[str, ...]) -> Iterator[str]:
    """Every scalar at `path` in a parsed JSON document, as text.

    Object keys select members, digit segments index lists, `*` fans out.
    Strings are yielded as they are, numbers and booleans as JSON would write
    them; objects, lists, null and missing members yield nothing.
    """
    return islice(_walk(doc, path, 0), _MAX_FANOUT_VALUES)


def _walk(node: object, path: tuple[str, ...], depth: int) -> Iterator[str]:
    if depth == len(path):
        if isinstance(node, str):
            yield node
        elif isinstance(node, bool):
            yield "true" if node else "false"
        elif isinstance(node, int | float):
            yield str(node)
        return
    segment = path[depth]
    if isinstance(node, dict):
        if segment == WILDCARD:
            for child in node.values():
                yield from _walk(child, path, depth + 1)
        elif segment in node:
            yield from _walk(node[segment], path, depth + 1)
    elif isinstance(node, list):
        if segment == WILDCARD:
            for child in node:
                yield from _walk(child, path, depth + 1)
        elif segment.isdigit() and int(segment) < len(node):
            yield from _walk(node[int(segment)], path, depth + 1)


def first_text(doc: object, path: tuple[str, ...]) -> str | None:
    """The first scalar at `path`, or None."""
    return next(values_at(doc, path), None)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule ready to run: path split, pattern compiled."""

    status_code: int
    path: tuple[str, ...]
    pattern: re.Pattern[str]
    reason: ErrorReason
    priority: int = 0
    description: str = ""

    def matches(self, doc: object) -> bool:
        """True when any value at the rule's path contains a match of its pattern."""
        search = self.pattern.search
        return any(search(value) is not None for value in values_at(doc, self.path))


@final
class CompiledRules:
    """Rules indexed by status code, each bucket sorted by priority (ties: given order).

    Build once from the config's `ErrorRule`s, which the configuration
    validator has checked (status, dot path, regex, reason); the built-in
    rules are checked by their tests.
    """

    __slots__ = ("_by_status", "_count")

    def __init__(self, rules: Iterable[ErrorRule] = ()) -> None:
        compiled = [_compile_rule(rule) for rule in rules]
        # sorted() is stable: equal priorities keep their order in the file.
        ordered = sorted(compiled, key=lambda rule: -rule.priority)
        buckets: dict[int, list[CompiledRule]] = {}
        for rule in ordered:
            buckets.setdefault(rule.status_code, []).append(rule)
        self._by_status: Mapping[int, tuple[CompiledRule, ...]] = MappingProxyType(
            {status: tuple(bucket) for status, bucket in buckets.items()}
        )
        self._count = len(compiled)

    def __len__(self) -> int:
        return self._count

    def rules_for(self, status: int) -> tuple[CompiledRule, ...]:
        """The rules for `status`, in the order they are tried."""
        return self._by_status.get(status, ())

    def match(self, status: int, parsed: object) -> ErrorReason | None:
        """The reason of the first matching rule for `status`, or None."""
        for rule in self._by_status.get(status, ()):
            if rule.matches(parsed):
                return rule.reason
        return None


def _compile_rule(rule: ErrorRule) -> CompiledRule:
    return CompiledRule(
        status_code=rule.status_code,
        path=split_path(rule.error_path),
        pattern=re.compile(rule.match_pattern),
        reason=rule.map_to,
        priority=rule.priority,
        description=rule.description,
    )


@dataclass(frozen=True, slots=True)
class SymbolTable:
    """Maps the exact value found at a path (an error type or code) to a reason."""

    path: tuple[str, ...]
    reasons: Mapping[str, ErrorReason]

    def lookup(self, doc: object) -> ErrorReason | None:
        """The reason of the first value at the path that the table knows, or None."""
        for value in values_at(doc, self.path):
            reason = self.reasons.get(value)
            if reason is not None:
                return reason
        return None


def fallback_for_status(status: int) -> ErrorReason:
    """The reason for a status nothing else knows: 5xx server_error, 4xx bad_request."""
    if 500 <= status <= 599:
        return ErrorReason.SERVER_ERROR
    if 400 <= status <= 499:
        return ErrorReason.BAD_REQUEST
    return ErrorReason.UNKNOWN


@dataclass(frozen=True, slots=True)
class BuiltinDefaults:
    """What a provider type knows about its own errors, tried after the user's rules.

    Order: regex `rules` for the status, then each `symbols` table, then the
    `status_reasons` default, then `fallback_for_status`.
    """

    rules: CompiledRules
    symbols: tuple[SymbolTable, ...]
    status_reasons: Mapping[int, ErrorReason]

    def classify(self, status: int, parsed: object | None) -> ErrorReason:
        """Classify a response whose body parsed to `parsed` (None: no usable JSON)."""
        if parsed is not None:
            reason = self.rules.match(status, parsed)
            if reason is not None:
                return reason
            for table in self.symbols:
                reason = table.lookup(parsed)
                if reason is not None:
                    return reason
        return self.status_reasons.get(status) or fallback_for_status(status)
