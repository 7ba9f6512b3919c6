"""A key's statuses in one column: `api_keys.model_statuses`, each model with its status.

Listings filter and count keys by model and status at 100,000 keys; reading
`key_model_status` for that (two rows per key, grouped per key) costs a
join and an aggregate per listing. So each key also carries its rows'
(model, status) pairs as one text, kept by every write of a status, and a
listing reads `api_keys` alone: a filter is a LIKE on the column, the facets
a GROUP BY over it.

The text is `RS model US status RS model US status RS` (ASCII record and
unit separators, which no model name or status holds), models in order; a
key without rows has `RS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from llmgateway.store.migrations import Engine

RS: Final = "\x1e"
"""Separates the (model, status) entries, and opens and closes the text."""

US: Final = "\x1f"
"""Separates a model from its status within an entry."""


def encode(pairs: Iterable[tuple[str, str]]) -> str:
    """The column's text for `(model, status)` pairs."""
    return RS + "".join(f"{model}{US}{status}{RS}" for model, status in sorted(pairs))


def decode(value: str | None) -> dict[str, str]:
    """The model -> status pairs of a column's text."""
    pairs: dict[str, str] = {}
    for entry in (value or "").split(RS):
        model, sep, status = entry.partition(US)
        if sep:
            pairs[model] = status
    return pairs


def pattern(model: str | None, status: str | None) -> str:
    """The LIKE pattern (escape character `\\`) of a text holding the model, the status, or both."""
    if model is not None and status is not None:
        return f"%{RS}{_escaped(model)}{US}{_escaped(status)}{RS}%"
    if model is not None:
        return f"%{RS}{_escaped(model)}{US}%"
    return f"%{US}{_escaped(status or '')}{RS}%"


def refresh_sql(engine: Engine, keys: str) -> str:
    """An UPDATE setting the column of the keys whose ids satisfy `keys` (a condition on `x.key_id`)."""
    if engine is Engine.SQLITE:
        # group_concat follows the order of the rows it is fed: a sorted subquery.
        joined = "group_concat(o.model || char(31) || o.status, char(30))"
        rows = f"(SELECT x.key_id, x.model, x.status FROM key_model_status AS x WHERE {keys} ORDER BY x.key_id, x.model) AS o"
        ends = "char(30)"
    else:
        joined = "string_agg(o.model || chr(31) || o.status, chr(30) ORDER BY o.model)"
        rows = f"(SELECT x.key_id, x.model, x.status FROM key_model_status AS x WHERE {keys}) AS o"
        ends = "chr(30)"
    return (
        f"UPDATE api_keys SET model_statuses = a.v FROM (SELECT o.key_id, "
        f"{ends} || {joined} || {ends} AS v FROM {rows} GROUP BY o.key_id) AS a "
        "WHERE api_keys.id = a.key_id"
    )


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
