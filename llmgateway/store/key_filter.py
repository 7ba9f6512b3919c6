"""A key selection as SQL: one WHERE clause over `api_keys AS k`, the same on both engines.

A filter never becomes one bound variable per key: ids travel as one JSON
array (read with `json_each` on SQLite, `jsonb_array_elements` on
PostgreSQL), so a selection of 100,000 keys binds one value, far below
SQLite's limit of 32,766 variables, and is encoded off the event loop. Placeholders are numbered (`?1` on SQLite, `$1` on
PostgreSQL), so clauses compose in any order.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import final

from llmgateway.store import model_statuses
from llmgateway.store.json_array import UPLOAD_MIN, JsonArray, Upload
from llmgateway.store.key_admin import KeyFilter, KeySource, Selection
from llmgateway.store.key_codec import KeyCodec, fingerprint_prefix
from llmgateway.store.migrations import Engine
from llmgateway.store.rows import as_utc

MATCH_ALL = "1 = 1"
"""The condition of an empty filter."""


@final
class Params:
    """The bound values of one statement, with their placeholders in the engine's style."""

    __slots__ = ("engine", "values")

    def __init__(self, engine: Engine, *values: object) -> None:
        self.engine = engine
        self.values: list[object] = list(values)

    def __call__(self, value: object) -> str:
        """Bind `value`; its placeholder (`?n` or `$n`)."""
        self.values.append(value)
        mark = "?" if self.engine is Engine.SQLITE else "$"
        return f"{mark}{len(self.values)}"

    def typed(self, value: object, pg_type: str) -> str:
        """Bind `value` with its PostgreSQL type spelled out (where the server cannot infer it)."""
        mark = self(value)
        return mark if self.engine is Engine.SQLITE else f"{mark}::{pg_type}"

    def time(self, value: datetime | None) -> str:
        """Bind a time as the engine stores it (SQLite: epoch seconds; PostgreSQL: timestamptz)."""
        if self.engine is Engine.SQLITE:
            return self(None if value is None else as_utc(value).timestamp())
        return self.typed(None if value is None else as_utc(value), "timestamptz")

    def id_in(self, column: str, ids: Sequence[int]) -> str:
        """The condition `column` is one of `ids` (one bound value whatever their number)."""
        return self.one_of(column, ids, "bigint")

    def one_of(
        self, column: str, values: Sequence[object] | JsonArray, pg_type: str = "text"
    ) -> str:
        """The condition `column` is one of `values`, bound as one JSON text or array."""
        if self.engine is Engine.SQLITE:
            return f"{column} IN (SELECT value FROM json_each(CAST({self(_json(values))} AS TEXT)))"
        return (
            f"{column} IN (SELECT v::{pg_type} "
            f"FROM jsonb_array_elements_text({_jsonb(self, values)}) AS v)"
        )

    def none_of(
        self, column: str, values: Sequence[object] | JsonArray, pg_type: str = "text"
    ) -> str:
        """The condition `column` is none of `values` (an anti-join, whatever their number).

        SQLite builds the list's index once (`NOT IN`); PostgreSQL hashes it
        (`NOT EXISTS`), where a `NOT IN` over a large list may compare each row
        with every value.
        """
        if self.engine is Engine.SQLITE:
            return f"{column} NOT IN (SELECT value FROM json_each(CAST({self(_json(values))} AS TEXT)))"
        return (
            f"NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text({_jsonb(self, values)}) "
            f"AS n(v) WHERE n.v::{pg_type} = {column})"
        )

    def rows(
        self,
        alias: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[object]] | JsonArray,
    ) -> str:
        """A FROM item `alias` of `rows`, its `(name, PostgreSQL type)` columns bound as one value each.

        Both engines read one JSON array of arrays (SQLite with `json_each`,
        PostgreSQL with `jsonb_array_elements`): a million rows bind one value,
        encoded off the event loop (see `llmgateway.store.json_array`).
        """
        if self.engine is Engine.SQLITE:
            picks = ", ".join(f"value ->> {i} AS {name}" for i, (name, _) in enumerate(columns))
            return f"(SELECT {picks} FROM json_each(CAST({self(_json(rows))} AS TEXT))) AS {alias}"
        picks = ", ".join(
            f"(e ->> {i})::{pg_type} AS {name}" for i, (name, pg_type) in enumerate(columns)
        )
        return f"(SELECT {picks} FROM jsonb_array_elements({_jsonb(self, rows)}) AS e) AS {alias}"

    def with_rows(
        self,
        alias: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[object]] | JsonArray,
    ) -> str:
        """A `WITH` clause naming `rows` `alias`, built once before the statement reads it.

        For a statement that joins a table to the rows (an `UPDATE ... FROM`):
        a plain FROM item of `rows` is flattened by SQLite into a `json_each`
        scan for every row of the table, n x m; materialized, the planner
        walks the rows once and looks each up in the table's index.
        """
        return f"WITH {alias} AS MATERIALIZED (SELECT * FROM {self.rows(alias, columns, rows)}) "


def _jsonb(params: Params, values: Sequence[object] | JsonArray) -> str:
    """PostgreSQL: the jsonb of `values`, bound as its text, or uploaded when it is large.

    A list of `UPLOAD_MIN` values or more is sent by COPY just before the
    statement (see `json_array.Upload`): the statement reads it back by its token,
    in a scalar subquery PostgreSQL evaluates once.
    """
    array = _json(values)
    if len(array) < UPLOAD_MIN:
        return f"{params(array)}::jsonb"
    return f"(SELECT u.doc FROM pg_temp.llmgw_upload AS u WHERE u.token = {params(Upload(array))})"


def _json(values: Sequence[object] | JsonArray) -> JsonArray:
    return values if isinstance(values, JsonArray) else JsonArray(values)


def filter_where(flt: KeyFilter, params: Params, codec: KeyCodec, alias: str = "k") -> str:
    """The condition on `api_keys AS alias` that holds for the keys `flt` matches.

    Raises ValueError for a `source` other than `file` or `api`.
    """
    conditions: list[str] = []
    if flt.instance is not None:
        conditions.append(f"{alias}.instance = {params(flt.instance)}")
    if flt.model is not None or flt.status is not None:
        mark = params(model_statuses.pattern(flt.model, flt.status))
        conditions.append(f"{alias}.model_statuses LIKE {mark} ESCAPE '\\'")
    if flt.source is not None:
        conditions.append(_source_condition(flt.source, alias))
    if flt.q is not None and flt.q.strip():
        conditions.append(_search_condition(flt.q.strip(), params, codec, alias))
    return " AND ".join(conditions) or MATCH_ALL


def selection_where(sel: Selection, params: Params, codec: KeyCodec, alias: str = "k") -> str:
    """The condition on `api_keys AS alias` for a selection: ids, or a filter's matches."""
    if isinstance(sel, KeyFilter):
        return filter_where(sel, params, codec, alias)
    return params.id_in(f"{alias}.id", sel)


def _source_condition(source: str, alias: str) -> str:
    try:
        wanted = KeySource(source)
    except ValueError:
        raise ValueError(f"unknown key source {source!r}: file or api") from None
    operator = "IS NOT NULL" if wanted is KeySource.FILE else "IS NULL"
    return f"{alias}.source_file {operator}"


def _search_condition(q: str, params: Params, codec: KeyCodec, alias: str) -> str:
    """`q` as a mask, a whole key, or (when it is hex) a fingerprint prefix."""
    options = [
        f"{alias}.key_mask = {params(q)}",
        f"{alias}.fingerprint = {params(codec.fingerprint(q))}",
    ]
    prefix = fingerprint_prefix(q)
    if prefix is not None:
        # A range, so the fingerprint index serves it ("g" sorts after every hex digit).
        low, high = params(prefix), params(prefix + "g")
        options.append(f"({alias}.fingerprint >= {low} AND {alias}.fingerprint < {high})")
    return f"({' OR '.join(options)})"
