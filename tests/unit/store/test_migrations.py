"""Finding, reading and planning migration files."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgateway.core.errors import SchemaTooNew, StoreError
from llmgateway.store.migrations import (
    Engine,
    Migration,
    engine_migrations,
    load_migrations,
    plan,
    shipped_sql_dir,
)

PACKAGE_SQL = Path(__file__).resolve().parents[3] / "llmgateway" / "store" / "sql"


def test_shipped_migrations_are_found_for_both_engines() -> None:
    """Both engines' folders are read from inside the package and start at version 1."""
    for engine in Engine:
        assert Path(str(shipped_sql_dir(engine))) == PACKAGE_SQL / engine.value
        migrations = engine_migrations(engine)
        assert migrations[0].version == 1
        assert "key_model_status" in migrations[0].sql


def test_both_engines_ship_the_same_versions() -> None:
    """Every version exists for SQLite and PostgreSQL alike, under the same name."""
    sqlite = [(m.version, m.name) for m in engine_migrations(Engine.SQLITE)]
    postgres = [(m.version, m.name) for m in engine_migrations(Engine.POSTGRES)]
    assert sqlite == postgres


def test_files_are_ordered_by_version(tmp_path: Path) -> None:
    """Files load in version order whatever the directory order."""
    (tmp_path / "0010_later.sql").write_text("B;")
    (tmp_path / "0002_second.sql").write_text("A;")
    assert [(m.version, m.name) for m in load_migrations(tmp_path)] == [
        (2, "second"),
        (10, "later"),
    ]


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    """A .sql file not named NNNN_name.sql is a StoreError naming it."""
    (tmp_path / "initial.sql").write_text("A;")
    with pytest.raises(StoreError, match=r"initial\.sql"):
        load_migrations(tmp_path)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    """A folder without migrations is a StoreError."""
    with pytest.raises(StoreError):
        load_migrations(tmp_path)


MIGRATIONS = (Migration(1, "a", ""), Migration(2, "b", ""), Migration(3, "c", ""))


def test_plan_lists_unapplied_versions_in_order() -> None:
    """Only versions not recorded are planned, ascending."""
    assert [m.version for m in plan(MIGRATIONS, [1])] == [2, 3]
    assert plan(MIGRATIONS, [1, 2, 3]) == ()


def test_plan_refuses_a_newer_database() -> None:
    """A recorded version above the newest file raises SchemaTooNew with both numbers."""
    with pytest.raises(SchemaTooNew, match=r"version 7.*up to 3"):
        plan(MIGRATIONS, [1, 2, 3, 7])


def test_a_migration_may_name_a_data_step(tmp_path: Path) -> None:
    """`-- step: <name>` is read from the file; a file of comments only has no statements."""
    (tmp_path / "0001_initial.sql").write_text("CREATE TABLE t (x INTEGER);")
    (tmp_path / "0002_scrub.sql").write_text("-- why\n--\n-- step: scrub_key_messages\n")
    first, second = load_migrations(tmp_path)
    assert (first.step, first.has_statements) == (None, True)
    assert (second.step, second.has_statements) == ("scrub_key_messages", False)


def test_an_unknown_data_step_is_refused(tmp_path: Path) -> None:
    """A step this release does not know is a StoreError at start-up, not a silent skip."""
    (tmp_path / "0001_initial.sql").write_text("-- step: drop_everything\nSELECT 1;")
    with pytest.raises(StoreError, match="unknown or second data step"):
        load_migrations(tmp_path)


def test_the_scrub_migration_is_shipped_for_both_engines() -> None:
    """Version 5 of each engine is the data step that masks stored messages."""
    for engine in Engine:
        fifth = engine_migrations(engine)[4]
        assert (fifth.version, fifth.step, fifth.has_statements) == (
            5,
            "scrub_key_messages",
            False,
        )
