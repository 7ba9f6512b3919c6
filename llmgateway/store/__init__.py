"""The key store: one interface (`Store`), two engines chosen by `database.url`.

`open_store(config)` builds the engine, not yet opened: the caller awaits
`store.open()` (connect + migrate) and, at the end, `store.close()`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from llmgateway.config.schemas import DatabaseConfig
from llmgateway.core.errors import ConfigError
from llmgateway.store.protocol import KeySyncReport, Store
from llmgateway.store.sqlite import MEMORY, SqliteStore

__all__ = [
    "KeySyncReport",
    "SqliteStore",
    "Store",
    "open_store",
    "sqlite_path",
]

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})


def sqlite_path(url: str, cwd: Path | None = None) -> Path | str:
    """The file named by a `sqlite:///` URL.

    `sqlite:///data/x.db` is relative to `cwd` (default: the working
    directory), `sqlite:////abs/x.db` absolute, `sqlite:///:memory:` a
    private in-memory database. Raises ConfigError for anything else.
    """
    if not url.startswith(_SQLITE_PREFIX):
        raise ConfigError(f"database.url {url!r}: a SQLite URL starts with {_SQLITE_PREFIX!r}")
    raw = unquote(url.removeprefix(_SQLITE_PREFIX).split("?", 1)[0])
    if raw == MEMORY:
        return MEMORY
    if not raw or raw.endswith("/"):
        raise ConfigError(f"database.url {url!r}: no database file named after {_SQLITE_PREFIX!r}")
    path = Path(raw)
    return path if path.is_absolute() else (cwd or Path.cwd()) / path


def open_store(config: DatabaseConfig, cwd: Path | None = None) -> Store:
    """The store engine for `config.url` (not opened yet).

    `sqlite:///...` gives a SqliteStore, `postgresql://...` or `postgres://...`
    a PostgresStore with a pool of `pool_min_size`..`pool_max_size`
    connections. Raises ConfigError for another scheme.
    """
    scheme = urlsplit(config.url).scheme.lower()
    if scheme == "sqlite":
        return SqliteStore(sqlite_path(config.url, cwd))
    if scheme in _POSTGRES_SCHEMES:
        # Imported here: asyncpg is needed only by a PostgreSQL store.
        from llmgateway.store.postgres import PostgresStore

        return PostgresStore(
            config.url, min_size=config.pool_min_size, max_size=config.pool_max_size
        )
    raise ConfigError(
        f"database.url: unsupported scheme {scheme or '(none)'!r}; "
        "use sqlite:///path or postgresql://user:password@host:port/database"
    )
