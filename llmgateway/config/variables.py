"""`${VAR}` / `${VAR:-default}` references in the strings of the configuration file.

`substitute` resolves one string; `resolve_tree` turns the round-trip YAML
tree into plain dicts and lists with every string resolved, recording each
written path's line number and every problem (unset variables, malformed
references). A read-only resolution leaves a client token whose variable is
unset empty instead of reporting it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Final

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from llmgateway.config.validator import Path as TreePath
from llmgateway.config.validator import Problem

_REFERENCE: Final = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<has_default>:-(?P<default>[^}]*))?\}|\$\{"
)


def substitute(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """`text` with `${VAR}` / `${VAR:-default}` resolved from `env`; `$$` is a literal `$`.

    Returns the result and the problems (unset variables, malformed references).
    `${VAR:-default}` uses the default when VAR is unset or empty.
    """
    result, malformed, unset = _substitute(text, env)
    return result, [*malformed, *(_UNSET.format(name=name) for name in unset)]


_MALFORMED: Final = "has a malformed '${' reference (write ${NAME} or ${NAME:-default})"
_UNSET: Final = "uses ${{{name}}} but environment variable {name} is not set"


def _substitute(text: str, env: Mapping[str, str]) -> tuple[str, list[str], list[str]]:
    """`substitute`, with the malformed-reference problems and the unset names apart."""
    malformed: list[str] = []
    unset: list[str] = []

    def replace(m: re.Match[str]) -> str:
        if m.group() == "$$":
            return "$"
        name = m.group("name")
        if name is None:
            malformed.append(_MALFORMED)
            return m.group()
        value = env.get(name)
        if m.group("has_default") is not None:
            return value if value else (m.group("default") or "")
        if value is None:
            unset.append(name)
            return ""
        return value

    return _REFERENCE.sub(replace, text), malformed, unset


@dataclasses.dataclass(frozen=True, slots=True)
class Resolution:
    """What `_resolve` reads (the environment) and fills (line numbers, problems, unusable tokens).

    `unusable` is None for a full load; for a read-only load it collects the
    client tokens left empty by an unset variable instead of reporting them.
    """

    env: Mapping[str, str]
    lines: dict[TreePath, int]
    problems: list[Problem]
    unusable: set[TreePath] | None


_CLIENT_TOKEN: Final = ("access_control", "gateway_access_token")
"""Where a client token sits inside a provider instance."""


def _is_client_token(path: TreePath) -> bool:
    """True for the path of an instance's client token."""
    return len(path) == 4 and path[0] == "providers" and path[2:] == _CLIENT_TOKEN


def resolve_tree(node: Any, path: TreePath, into: Resolution) -> Any:
    """Plain dicts/lists of `node` with every string substituted, recording line numbers."""
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            sub = (*path, str(key))
            position = node.lc.key(key)
            if position is not None:
                into.lines[sub] = position[0] + 1
            out[key] = resolve_tree(value, sub, into)
        return out
    if isinstance(node, CommentedSeq):
        items: list[Any] = []
        for index, value in enumerate(node):
            sub = (*path, index)
            position = node.lc.item(index)
            if position is not None:
                into.lines[sub] = position[0] + 1
            items.append(resolve_tree(value, sub, into))
        return items
    if isinstance(node, str):
        text, malformed, unset = _substitute(str(node), into.env)
        if unset and not malformed and into.unusable is not None and _is_client_token(path):
            into.unusable.add(path)  # read-only: no client token needed, none kept
            return ""
        found = [*malformed, *(_UNSET.format(name=name) for name in unset)]
        line = _nearest(into.lines, path)
        into.problems.extend(Problem(path, msg, "", line) for msg in found)
        return text
    return node


def _nearest(lines: Mapping[TreePath, int], path: TreePath) -> int | None:
    for end in range(len(path), 0, -1):
        if (line := lines.get(path[:end])) is not None:
            return line
    return None
