"""Key filters as SQL, run on a real SQLite database built from the shipped migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from llmgateway.store import model_statuses
from llmgateway.store.json_array import JsonArray
from llmgateway.store.key_admin import INLINE_SOURCE, KeyFilter, Selection
from llmgateway.store.key_codec import PLAIN
from llmgateway.store.key_filter import (
    MATCH_ALL,
    Params,
    filter_where,
    selection_where,
)
from llmgateway.store.migrations import Engine, engine_migrations

KEYS = {
    1: ("openai", "sk-openai-first-key-000001", "keys/openai/a.txt"),
    2: ("openai", "sk-openai-second-key-00002", None),
    3: ("openai", "short-key", INLINE_SOURCE),
    4: ("claude", "sk-ant-claude-key-0000004", None),
}
STATUSES = [
    (1, "gpt", "valid"),
    (1, "mini", "invalid_key"),
    (2, "gpt", "invalid_key"),
    (2, "mini", "invalid_key"),
    (3, "gpt", "disabled"),
    (3, "mini", "disabled"),
    (4, "sonnet", "valid"),
]


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    """An in-memory database with every shipped table and a few keys of two instances."""
    db = sqlite3.connect(":memory:", autocommit=True)
    for migration in engine_migrations(Engine.SQLITE):
        db.executescript(migration.sql)
    db.executemany(
        "INSERT INTO providers (name, provider_type) VALUES (?, 'openai_like')",
        [("openai",), ("claude",)],
    )
    db.executemany(
        "INSERT INTO api_keys (id, instance, key_value, fingerprint, key_mask, source_file, "
        "from_api, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
        [
            (i, inst, key, *PLAIN.stored_row(key)[::2], src, src is None)
            for i, (inst, key, src) in KEYS.items()
        ],
    )
    db.executemany(
        "INSERT INTO key_model_status (key_id, model, status) VALUES (?, ?, ?)", STATUSES
    )
    db.execute(model_statuses.refresh_sql(Engine.SQLITE, "1 = 1"))
    try:
        yield db
    finally:
        db.close()


def _matches(db: sqlite3.Connection, sel: Selection) -> list[int]:
    params = Params(Engine.SQLITE)
    where = selection_where(sel, params, PLAIN)
    rows = db.execute(f"SELECT k.id FROM api_keys AS k WHERE {where} ORDER BY k.id", params.values)
    return [int(r[0]) for r in rows]


@pytest.mark.parametrize(
    ("flt", "ids"),
    [
        (KeyFilter(), [1, 2, 3, 4]),
        (KeyFilter(instance="openai"), [1, 2, 3]),
        (KeyFilter(instance="nobody"), []),
        (KeyFilter(status="invalid_key"), [1, 2]),
        (KeyFilter(model="mini", status="invalid_key"), [1, 2]),
        (KeyFilter(model="gpt", status="invalid_key"), [2]),
        (KeyFilter(model="sonnet"), [4]),
        (KeyFilter(status="disabled", instance="openai"), [3]),
        (KeyFilter(source="file"), [1, 3]),
        (KeyFilter(source="api"), [2, 4]),
        (KeyFilter(instance="openai", source="api", status="invalid_key"), [2]),
    ],
)
def test_each_field_narrows_the_keys(
    conn: sqlite3.Connection, flt: KeyFilter, ids: list[int]
) -> None:
    """Every field set must hold; status matches when any (or the named) model has it."""
    assert _matches(conn, flt) == ids


def test_q_finds_a_key_by_its_mask(conn: sqlite3.Connection) -> None:
    """The mask as shown finds the key (and `***` every short one)."""
    assert _matches(conn, KeyFilter(q="sk-o...0001")) == [1]
    assert _matches(conn, KeyFilter(q="***")) == [3]


def test_q_finds_a_key_given_verbatim(conn: sqlite3.Connection) -> None:
    """A whole key finds itself, even a short one whose mask says nothing."""
    assert _matches(conn, KeyFilter(q=" short-key ")) == [3]
    assert _matches(conn, KeyFilter(q="sk-ant-claude-key-0000004")) == [4]


def test_q_finds_a_key_by_a_fingerprint_prefix(conn: sqlite3.Connection) -> None:
    """The 12 hex shown, or a shorter prefix, in any case."""
    shown = PLAIN.fingerprint(KEYS[2][1])[:12]
    assert _matches(conn, KeyFilter(q=shown.upper())) == [2]
    assert _matches(conn, KeyFilter(q=shown[:6], instance="openai")) == [2]


def test_q_matching_nothing_selects_nothing(conn: sqlite3.Connection) -> None:
    """A key that is not stored, a mask of none."""
    assert _matches(conn, KeyFilter(q="sk-not-stored-anywhere-000")) == []
    assert _matches(conn, KeyFilter(q="zzzz...zzzz")) == []


def test_blank_q_matches_everything(conn: sqlite3.Connection) -> None:
    """An empty search box filters nothing."""
    params = Params(Engine.SQLITE)
    assert filter_where(KeyFilter(q="  "), params, PLAIN) == MATCH_ALL
    assert params.values == []


def test_ids_select_those_keys_with_one_bound_value(conn: sqlite3.Connection) -> None:
    """Unknown ids are ignored; 100,000 ids bind one value (no "too many SQL variables")."""
    assert _matches(conn, (4, 2, 99)) == [2, 4]
    many = tuple(range(1, 100_001))
    params = Params(Engine.SQLITE)
    selection_where(many, params, PLAIN)
    assert len(params.values) == 1
    assert _matches(conn, many) == [1, 2, 3, 4]


def test_unknown_source_is_refused() -> None:
    """Only file and api are sources."""
    with pytest.raises(ValueError, match="file or api"):
        filter_where(KeyFilter(source="dashboard"), Params(Engine.SQLITE), PLAIN)


def test_postgres_placeholders_are_numbered() -> None:
    """The same filter binds `$n` placeholders and the ids as one JSON array on PostgreSQL."""
    params = Params(Engine.POSTGRES)
    where = filter_where(KeyFilter(instance="openai", status="valid"), params, PLAIN)
    assert "$1" in where and "$2" in where and "?" not in where
    assert params.values == ["openai", model_statuses.pattern(None, "valid")]
    ids = Params(Engine.POSTGRES)
    assert selection_where((3, 1), ids, PLAIN) == (
        "k.id IN (SELECT v::bigint FROM jsonb_array_elements_text($1::jsonb) AS v)"
    )
    (bound,) = ids.values
    assert isinstance(bound, JsonArray) and list(bound.values) == [3, 1]


def test_a_key_carries_each_model_with_its_status(conn: sqlite3.Connection) -> None:
    """model_statuses holds every (model, status) row of the key, models in order."""
    rows = dict(conn.execute("SELECT id, model_statuses FROM api_keys").fetchall())
    assert model_statuses.decode(rows[1]) == {"gpt": "valid", "mini": "invalid_key"}
    assert rows[1] == model_statuses.encode([("mini", "invalid_key"), ("gpt", "valid")])
    assert model_statuses.decode(rows[3]) == {"gpt": "disabled", "mini": "disabled"}


def test_a_status_with_like_wildcards_is_taken_literally(conn: sqlite3.Connection) -> None:
    """`_` in a status name is no wildcard: `invalid_key` does not match `invalidXkey`."""
    text = model_statuses.encode([("sonnet", "invalidXkey")])
    conn.execute("UPDATE api_keys SET model_statuses = ? WHERE id = 4", (text,))
    assert _matches(conn, KeyFilter(status="invalid_key")) == [1, 2]
