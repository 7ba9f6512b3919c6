"""The key store: one interface (`Store`), two engines chosen by `database.url`.

`open_store(config)` builds the engine, not yet opened: the caller awaits
`store.open()` (connect + migrate) and, at the end, `store.close()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from llmgateway.config.schemas import DatabaseConfig
from llmgateway.core.errors import ConfigError
from llmgateway.store.key_crypto import codec_for
from llmgateway.store.protocol import KeySyncReport, Store
from llmgateway.store.sqlite import MEMORY, SqliteStore

if TYPE_CHECKING:  # imported at run time only when a PostgreSQL store is opened
    from llmgateway.store.postgres import PostgresStore

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


def open_store(
    config: DatabaseConfig, cwd: Path | None = None, *, verify_codec: bool = True
) -> SqliteStore | PostgresStore:
    """The store engine for `config.url` (not opened yet).

    `sqlite:///...` gives a SqliteStore, `postgresql://...` or `postgres://...`
    a PostgresStore with a pool of `pool_min_size`..`pool_max_size`
    connections. Keys are encrypted at rest when `config.encryption_key` is
    set; opening the store checks that this matches the stored keys (raising
    KeyEncryptionMismatch) unless `verify_codec` is False (the commands that
    re-encrypt the keys). Raises ConfigError for another scheme or a malformed key.
    """
    scheme = urlsplit(config.url).scheme.lower()
    try:
        codec = codec_for(config.encryption_key)
    except ValueError as exc:
        raise ConfigError(f"database.encryption_key {exc}") from None
    if scheme == "sqlite":
        return SqliteStore(sqlite_path(config.url, cwd), codec=codec, verify_codec=verify_codec)
    if scheme in _POSTGRES_SCHEMES:
        # Imported here: asyncpg is needed only by a PostgreSQL store.
        from llmgateway.store.postgres import PostgresStore

        return PostgresStore(
            config.url,
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            codec=codec,
            verify_codec=verify_codec,
        )
    raise ConfigError(
        f"database.url: unsupported scheme {scheme or '(none)'!r}; "
        "use sqlite:///path or postgresql://user:password@host:port/database"
    )
