"""A list bound to one statement parameter as JSON text, encoded off the event loop.

Both engines read a list of keys, ids or rows from one bound JSON text
(`json_each`, `jsonb_array_elements`). Encoding 100,000 rows takes tens of
milliseconds, and so does a driver's encoding of as many array elements:
done where the statement is built, either would hold the event loop. A
`JsonArray` is bound instead. On SQLite the `sqlite3` module turns it into
UTF-8 bytes through the adapter registered here when it binds the
statement's parameters, on the connection's own thread (aiosqlite's); the
statement reads them with `CAST(? AS TEXT)`. The PostgreSQL connection
encodes a small one on a thread before handing the text to asyncpg
(`as_text`), and sends a large one by COPY, a piece at a time (`copy_pieces`).

The JSON is kept as pieces of bytes, never as one string: joining 13 MB of
`str` pieces (a key sync's 100,000 rows) is one C call that holds the GIL for
10 ms and more, while `bytes.join` lets go of the GIL for its large copies.
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

    `encoded` makes one whose JSON is already made (on a thread): it keeps
    the JSON only, so the values can be released where they were made.
    """

    __slots__ = ("_length", "pieces", "values")

    def __init__(self, values: Sequence[object]) -> None:
        self.values = values
        self.pieces: tuple[bytes, ...] | None = None
        """The JSON, when made already (`encoded`): pieces that joined make the array's text."""
        self._length = len(values)

    @classmethod
    def encoded(cls, values: Sequence[object]) -> JsonArray:
        """An array of `values` with its JSON made now (blocking: for a thread); keeps no values."""
        array = cls(values)
        array.pieces = _encode(values)
        array.values = ()
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


def _encode(values: Sequence[object]) -> tuple[bytes, ...]:
    """The JSON of `values`: one piece, or `_pieces` when they are more than `CHUNK`."""
    if len(values) <= CHUNK:
        return (orjson.dumps(values),)
    return tuple(_pieces(values))


def as_bytes(array: JsonArray) -> bytes:
    """The JSON text of `array` as UTF-8 (encoded `CHUNK` values at a time if not made yet).

    The pieces are joined by `bytes.join`, which lets go of the GIL while it
    copies a large text; one piece is returned as it is.
    """
    pieces = array.pieces if array.pieces is not None else _encode(array.values)
    return b"".join(pieces)


def as_text(array: JsonArray) -> str:
    """The JSON text of `array` (for PostgreSQL's bound parameters: small arrays)."""
    return as_bytes(array).decode()


async def as_text_off_loop(array: JsonArray) -> str:
    """The JSON text of `array`, encoded on a thread when it is large."""
    return await on_thread_when(array.pieces is None and len(array) >= ON_THREAD, as_text, array)


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
    for piece in array.pieces if array.pieces is not None else _pieces(array.values):
        for start in range(0, len(piece), COPY_PIECE):
            pieces.append(piece[start : start + COPY_PIECE].replace(b"\\", b"\\\\"))
    pieces.append(b"\n")
    return pieces


sqlite3.register_adapter(JsonArray, as_bytes)
