"""A list bound to one SQLite parameter as JSON text, encoded on the connection's thread.

SQLite reads a list of keys, ids or rows from one bound JSON text
(`json_each`). Encoding 100,000 rows takes tens of milliseconds: done where
the statement is built, it would hold the event loop. A `JsonArray` is bound
instead, and the `sqlite3` module turns it into text through the adapter
registered here when it binds the statement's parameters, which happens on
the connection's own thread (aiosqlite's).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import final

import orjson


@final
class JsonArray:
    """`values`, to be bound as one JSON array (not copied: never change them afterwards)."""

    __slots__ = ("values",)

    def __init__(self, values: Sequence[object]) -> None:
        self.values = values

    def __repr__(self) -> str:
        return f"JsonArray(<{len(self.values)} values>)"


def _as_text(array: JsonArray) -> str:
    return orjson.dumps(array.values).decode()


sqlite3.register_adapter(JsonArray, _as_text)
