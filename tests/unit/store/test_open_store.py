"""Choosing the store engine from database.url."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgateway.config.schemas import DatabaseConfig
from llmgateway.core.errors import ConfigError
from llmgateway.store import SqliteStore, open_store, sqlite_path
from llmgateway.store.postgres import PostgresStore, describe_dsn


def test_relative_sqlite_path_resolves_against_cwd(tmp_path: Path) -> None:
    """sqlite:///data/x.db names data/x.db under the working directory."""
    store = open_store(DatabaseConfig(url="sqlite:///data/x.db"), cwd=tmp_path)
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "data" / "x.db"
    assert store.shared_between_hosts is False  # one host's processes at most


def test_absolute_sqlite_path_is_kept(tmp_path: Path) -> None:
    """sqlite:////abs/x.db names /abs/x.db."""
    assert sqlite_path("sqlite:////srv/gw/x.db", tmp_path) == Path("/srv/gw/x.db")


def test_sqlite_memory() -> None:
    """sqlite:///:memory: is an in-memory database."""
    assert sqlite_path("sqlite:///:memory:") == ":memory:"


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:///data/", "sqlite://host/x.db"])
def test_sqlite_url_without_a_file_is_a_config_error(url: str) -> None:
    """A SQLite URL that names no file is refused with the URL in the message."""
    with pytest.raises(ConfigError):
        open_store(DatabaseConfig(url=url))


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_urls_give_a_pool_of_the_configured_size(scheme: str) -> None:
    """postgresql:// and postgres:// both give a PostgresStore with the configured sizes."""
    config = DatabaseConfig(url=f"{scheme}://u:p@db:5432/gw", pool_min_size=2, pool_max_size=7)
    store = open_store(config)
    assert isinstance(store, PostgresStore)
    assert (store.min_size, store.max_size) == (2, 7)
    assert store.shared_between_hosts is True


def test_unknown_scheme_is_a_config_error() -> None:
    """mysql:// is refused, naming the scheme."""
    with pytest.raises(ConfigError, match="mysql"):
        open_store(DatabaseConfig(url="mysql://db/gw"))


def test_dsn_description_hides_the_password() -> None:
    """Messages about a PostgreSQL DSN never carry its password."""
    described = describe_dsn("postgresql://llmgw:s3cret@db.example:5432/llmgateway")
    assert "s3cret" not in described
    assert described == "postgresql://llmgw@db.example:5432/llmgateway"
