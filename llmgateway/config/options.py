"""How an option is declared: once, on the field of its schema dataclass.

    keys_sync_interval: float = option("60s", DURATION, "re-read keys files")

`option` parses the default with the leaf's parser for the dataclass default
and keeps the default as a user writes it, the leaf (parser and the text of
what is allowed) and the help text in the field's metadata. A field whose type
is another schema dataclass is a section (`section`); `mapping` and
`sequence` declare maps with user-chosen keys and lists. Everything else is
derived from these declarations by walking `dataclasses.fields`: the
validator's shape, the loader's default template, the comments of
`config create` and `config/example_full.yaml`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Any, Final

from llmgateway.config import fields as f

OPTION: Final = "llmgateway.option"
"""The key of a field's metadata holding its `Option`."""


class _Unset(Enum):
    UNSET = "unset"


UNSET: Final = _Unset.UNSET
"""No default: the option is required, or its default depends on the provider instance."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """A scalar: `parse` returns the typed value or raises ValueError saying what is wrong.

    `allowed` says what would be accepted (shown after a problem); a `secret`
    value is masked in problem messages.
    """

    parse: f.Parser
    allowed: str
    secret: bool = False


@dataclass(frozen=True, slots=True)
class MapOf:
    """A mapping of user-chosen keys (checked by `key`) to values of one shape."""

    value: Node
    key: Leaf | None = None


@dataclass(frozen=True, slots=True)
class ListOf:
    """A sequence of items of one shape."""

    item: Node


Node = Leaf | MapOf | ListOf | type
"""The shape of a value; a schema dataclass type is a section with a fixed set of keys."""


@dataclass(frozen=True, slots=True)
class Option:
    """One declared option: its shape, help text and default as a user writes it.

    `default` may contain `{name}`, the provider instance's name. `overrides`
    are the defaults of a section that differ from its class's own.
    """

    node: Node
    help: str
    default: Any = UNSET
    required: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)


STRING: Final = Leaf(f.string, "a string")
SECRET: Final = Leaf(f.string, "a string", secret=True)
BOOL: Final = Leaf(f.boolean, "true or false")
DURATION: Final = Leaf(f.duration(), f"a duration > 0: {f.DURATION_FORMS}")
DELAY: Final = Leaf(f.duration(allow_zero=True), f"a duration >= 0: {f.DURATION_FORMS}")
COUNT: Final = Leaf(f.integer(minimum=1), "an integer >= 1")
STATUS_CODE: Final = Leaf(f.integer(100, 599), "an HTTP status code (100-599)")


def one_of(values: tuple[str, ...]) -> Leaf:
    """A leaf accepting exactly one of `values`."""
    return Leaf(f.choice(list(values)), " | ".join(values))


def enum_of(kind: type[StrEnum]) -> Leaf:
    """A leaf accepting a value of `kind`, parsed to its member."""
    check = f.choice([member.value for member in kind])
    return Leaf(lambda value: kind(check(value)), " | ".join(m.value for m in kind))


def option(default: Any, leaf: Leaf, help: str) -> Any:
    """A field whose default is `default` parsed by `leaf` (the raw text is kept for documents)."""
    return field(default=leaf.parse(default), metadata={OPTION: Option(leaf, help, default)})


def declare(
    node: Node, help: str, *, default: Any = UNSET, required: bool = False
) -> dict[str, Option]:
    """Field metadata of an option whose dataclass default is not its documented default.

    For `field(metadata=declare(...))`: a required option, or one whose
    default is given per provider instance (by its type, or with `{name}`).
    """
    return {OPTION: Option(node, help, default, required)}


def section(kind: type, help: str = "", **overrides: Any) -> Any:
    """A nested section of type `kind`; `overrides` are defaults differing from `kind`'s own."""
    parsed = {name: _leaf(kind, name).parse(raw) for name, raw in overrides.items()}

    def build() -> Any:
        return kind(**parsed)

    meta = Option(kind, help, overrides=MappingProxyType(dict(overrides)))
    return field(default_factory=build, metadata={OPTION: meta})


def mapping(value: Node, help: str, *, key: Leaf | None = None) -> Any:
    """A mapping of user-chosen keys to `value`s, empty by default."""
    return field(default_factory=dict, metadata={OPTION: Option(MapOf(value, key), help, {})})


def sequence(item: Node, help: str) -> Any:
    """A list of `item`s (a tuple once loaded), empty by default."""
    return field(default=(), metadata={OPTION: Option(ListOf(item), help, [])})


_DECLARED: Final[dict[type, Mapping[str, Option]]] = {}


def options_of(kind: type) -> Mapping[str, Option]:
    """The declared options of a schema dataclass, in declaration order."""
    declared = _DECLARED.get(kind)
    if declared is None:
        declared = MappingProxyType(
            {
                item.name: item.metadata[OPTION]
                for item in dataclasses.fields(kind)
                if OPTION in item.metadata
            }
        )
        _DECLARED[kind] = declared
    return declared


def _leaf(kind: type, name: str) -> Leaf:
    node = options_of(kind)[name].node
    if not isinstance(node, Leaf):
        raise TypeError(f"{kind.__name__}.{name} is not a leaf option")
    return node


def template(kind: type, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A fresh tree of the defaults of `kind` as a user writes them (required ones left out)."""
    out: dict[str, Any] = {}
    for name, declared in options_of(kind).items():
        if isinstance(declared.node, type):
            out[name] = template(declared.node, declared.overrides)
        elif overrides is not None and name in overrides:
            out[name] = copy.deepcopy(overrides[name])
        elif declared.default is not UNSET:
            out[name] = copy.deepcopy(declared.default)
    return out
