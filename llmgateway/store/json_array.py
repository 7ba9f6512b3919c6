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

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Final, final

import orjson

from llmgateway.core.threads import on_thread_when


@final
class JsonArray:
    """`values`, to be bound as one JSON array (not copied: never change them afterwards).

    `encoded` makes one whose text is already made (on a thread): it keeps
    the text only, so the values can be released where they were made.
    """

    __slots__ = ("_length", "text", "values")

    def __init__(self, values: Sequence[object], text: str | None = None) -> None:
        self.values = values
        self.text = text
        """The JSON text, when made already (`encoded`)."""
        self._length = len(values)

    @classmethod
    def encoded(cls, values: Sequence[object]) -> JsonArray:
        """An array of `values` with its text made now (blocking: for a thread); keeps no values."""
        array = cls(values)
        text = as_text(array)
        array.values, array.text = (), text
        return array

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        return f"JsonArray(<{self._length} values>)"


ON_THREAD: Final = 2000
"""Values from which `as_text_off_loop` encodes on a thread (fewer: a thread hop costs more)."""


CHUNK: Final = 5000
"""Values encoded by one call of orjson (which holds the GIL throughout): between two
chunks the event loop's thread can take the GIL back, so a 100,000-row list encoded
on a thread never holds the loop more than a few milliseconds."""


def _pieces(values: Sequence[object]) -> Iterator[bytes]:
    """The JSON text of `values` in pieces of `CHUNK` values: `[`, each chunk's body, `]`."""
    yield b"["
    for start in range(0, len(values), CHUNK):
        body = orjson.dumps(values[start : start + CHUNK])[1:-1]
        yield b"," + body if start else body
    yield b"]"


def as_text(array: JsonArray) -> str:
    """The JSON text of `array` (encoded `CHUNK` values at a time)."""
    if array.text is not None:
        return array.text
    values = array.values
    if len(values) <= CHUNK:
        return orjson.dumps(values).decode()
    return "".join([piece.decode() for piece in _pieces(values)])  # one copy of the whole text


async def as_text_off_loop(array: JsonArray) -> str:
    """The JSON text of `array`, encoded on a thread when it is large."""
    return await on_thread_when(array.text is None and len(array) >= ON_THREAD, as_text, array)


UPLOAD_MIN: Final = 10_000
"""Values from which PostgreSQL gets a list by COPY rather than as a bound parameter.

asyncpg builds a statement's message on the event loop, copying each bound value
into it, and a 20 MB parameter (a key sync's 100,000 rows) several times over:
30 ms with the loop held. COPY sends it as it comes, a piece at a time."""

COPY_PIECE: Final = 1 << 18
"""Characters of JSON text in one piece of COPY data."""


@final
class Upload:
    """A large JSON array for PostgreSQL, bound as the token its COPY stored it under.

    The statement reads it back with `(SELECT doc FROM pg_temp.llmgw_upload
    WHERE token = $n)` (see `key_filter.Params`); the connection uploads it
    just before running the statement (`postgres._PgConn`).
    """

    __slots__ = ("array",)

    def __init__(self, array: JsonArray) -> None:
        self.array = array

    def __repr__(self) -> str:
        return f"Upload({self.array!r})"


def copy_pieces(array: JsonArray, token: str) -> list[bytes]:
    """COPY data (text format) of one row, `token` and the JSON text of `array` (blocking).

    In pieces of about `COPY_PIECE` characters, so that neither making them
    (on a thread) nor sending them holds the GIL or the event loop long. COPY's
    text format reads a backslash as an escape: each is doubled (orjson escapes
    every control character, so no tab or newline needs it).
    """
    pieces = [f"{token}\t".encode()]
    if array.text is not None:
        text = array.text
        for start in range(0, len(text), COPY_PIECE):
            pieces.append(text[start : start + COPY_PIECE].replace("\\", "\\\\").encode())
    else:
        pieces.extend(piece.replace(b"\\", b"\\\\") for piece in _pieces(array.values))
    pieces.append(b"\n")
    return pieces


sqlite3.register_adapter(JsonArray, as_text)
