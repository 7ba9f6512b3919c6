"""A list bound to one statement parameter as JSON text, encoded off the event loop.

Both engines read a list of keys, ids or rows from one bound JSON text
(`json_each`, `jsonb_array_elements`). Encoding 100,000 rows takes tens of
milliseconds, and so does a driver's encoding of as many array elements:
done where the statement is built, either would hold the event loop. A
`JsonArray` is bound instead. On SQLite the `sqlite3` module turns it into
text through the adapter registered here when it binds the statement's
parameters, on the connection's own thread (aiosqlite's); the PostgreSQL
connection encodes a large one on a thread before handing the text to
asyncpg (`as_text`), which sends it as it is.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Final, final

import orjson


@final
class JsonArray:
    """`values`, to be bound as one JSON array (not copied: never change them afterwards)."""

    __slots__ = ("values",)

    def __init__(self, values: Sequence[object]) -> None:
        self.values = values

    def __repr__(self) -> str:
        return f"JsonArray(<{len(self.values)} values>)"


ON_THREAD: Final = 2000
"""Values from which `as_text_off_loop` encodes on a thread (fewer: a thread hop costs more)."""


def as_text(array: JsonArray) -> str:
    """The JSON text of `array`."""
    return orjson.dumps(array.values).decode()


async def as_text_off_loop(array: JsonArray) -> str:
    """The JSON text of `array`, encoded on a thread when it is large."""
    if len(array.values) < ON_THREAD:
        return as_text(array)
    return await asyncio.to_thread(as_text, array)


sqlite3.register_adapter(JsonArray, as_text)
