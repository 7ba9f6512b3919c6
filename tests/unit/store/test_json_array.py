"""A list bound as one JSON parameter: the same JSON whether encoded whole or in chunks."""

from __future__ import annotations

import sqlite3

import orjson
import pytest

from llmgateway.store.json_array import (
    CHUNK,
    JsonArray,
    as_bytes,
    as_text,
    as_text_off_loop,
    copy_pieces,
)


@pytest.mark.parametrize("count", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7])
def test_chunked_encoding_is_the_whole_list(count: int) -> None:
    """Lists longer than a chunk are encoded piece by piece into the same JSON array."""
    values = [[i, f"sk-{i:06d}", None, "ü"] for i in range(count)]
    assert orjson.loads(as_text(JsonArray(values))) == values


async def test_a_large_list_is_encoded_on_a_thread_to_the_same_text() -> None:
    values = list(range(3 * CHUNK))
    assert await as_text_off_loop(JsonArray(values)) == as_text(JsonArray(values))


def test_sqlite_binds_it_as_json_text() -> None:
    """The sqlite3 module turns a bound JsonArray into UTF-8, read as text with json_each."""
    conn = sqlite3.connect(":memory:")
    sql = "SELECT value FROM json_each(CAST(? AS TEXT))"
    rows = conn.execute(sql, (JsonArray(["a", "ü"]),)).fetchall()
    assert rows == [("a",), ("ü",)]
    conn.close()


@pytest.mark.parametrize("count", [3, 2 * CHUNK + 3])
async def test_an_encoded_array_keeps_its_json_only(count: int) -> None:
    """`encoded` makes the JSON at once; it binds as that text and holds no values."""
    values = [[i, f"sk-{i:06d}"] for i in range(count)]
    array = JsonArray.encoded(values)
    assert array.values == () and len(array) == len(values)
    assert array.pieces is not None and len(array.pieces) == (1 if count <= CHUNK else 5)
    assert as_bytes(array).decode() == as_text(JsonArray(values))
    assert await as_text_off_loop(array) == as_text(JsonArray(values))
    conn = sqlite3.connect(":memory:")
    sql = "SELECT count(*) FROM json_each(CAST(? AS TEXT))"
    (count_read,) = conn.execute(sql, (array,)).fetchone()
    assert count_read == len(values)
    conn.close()


@pytest.mark.parametrize("encoded", [False, True])
def test_copy_pieces_are_one_row_of_the_token_and_the_text(encoded: bool) -> None:
    """COPY's text format: `token<TAB>json<NEWLINE>`, every backslash doubled, in pieces."""
    values = [[i, f"keys/a\\b-{i}.txt", 'say "hi"'] for i in range(2 * CHUNK + 3)]
    array = JsonArray.encoded(values) if encoded else JsonArray(values)
    pieces = copy_pieces(array, "u1")
    assert len(pieces) > 3
    data = b"".join(pieces).decode()
    assert data.startswith("u1\t") and data.endswith("\n") and data.count("\n") == 1
    assert data[3:-1].replace("\\\\", "\\") == as_text(JsonArray(values))
