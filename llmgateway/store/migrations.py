"""Schema migrations: finding the numbered `llmgateway/store/sql/<engine>/NNNN_name.sql` files and planning them.

The engines (`sqlite.py`, `postgres.py`) apply the plan, one transaction per
file, and record each in `schema_migrations`; this module holds the parts both
share: where the files are, what they contain, and which ones are pending.

A migration may also name a data step that SQL cannot express, in a comment
line of its own: `-- step: <name>` (one of `DATA_STEPS`). The engine runs the
step after the file's SQL, in the same transaction, before recording the
version; a file may consist of comments and the step line only.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

from llmgateway.core.errors import SchemaTooNew, StoreError
from llmgateway.store.fingerprints import KEY_FINGERPRINTS
from llmgateway.store.scrub import SCRUB_KEY_MESSAGES

_FILE_NAME: Final = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_STEP: Final = re.compile(r"^--\s*step:\s*(?P<step>\S+)\s*$", re.MULTILINE)
_COMMENT: Final = re.compile(r"--[^\n]*")

DATA_STEPS: Final = frozenset({SCRUB_KEY_MESSAGES, KEY_FINGERPRINTS})
"""The data steps a migration file may name (each engine knows how to run them)."""


class Engine(StrEnum):
    """A database engine; its value is the folder name under `llmgateway/store/sql/`."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema migration file."""

    version: int
    name: str
    sql: str
    step: str | None = None
    """The data step run after the SQL, in the same transaction (None: SQL only)."""

    @property
    def has_statements(self) -> bool:
        """True when the file holds SQL beyond comments (some drivers refuse an empty query)."""
        return bool(_COMMENT.sub("", self.sql).strip(" \t\r\n;"))


def shipped_sql_dir(engine: Engine) -> Traversable:
    """The folder of `engine`'s migration files, inside the package (`llmgateway/store/sql/`)."""
    return resources.files(__package__ or "llmgateway.store") / "sql" / engine.value


def load_migrations(folder: Traversable) -> tuple[Migration, ...]:
    """Every `NNNN_name.sql` file of `folder`, ordered by version.

    Raises StoreError for a badly named file, a duplicated version or an
    unreadable file, so a packaging mistake is loud at start-up.
    """
    migrations: dict[int, Migration] = {}
    try:
        paths = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=_name)
        for path in paths:
            match = _FILE_NAME.match(path.name)
            if match is None:
                raise StoreError(f"migration file {path} is not named NNNN_name.sql")
            version = int(match["version"])
            if version in migrations:
                raise StoreError(f"two migration files have version {version} in {folder}")
            sql = path.read_text("utf-8")
            steps = [m["step"] for m in _STEP.finditer(sql)]
            unknown = [s for s in steps if s not in DATA_STEPS]
            if unknown or len(steps) > 1:
                raise StoreError(f"migration file {path} names an unknown or second data step")
            migrations[version] = Migration(
                version, match["name"], sql, steps[0] if steps else None
            )
    except OSError as exc:
        raise StoreError(f"cannot read migrations in {folder}: {exc}") from exc
    if not migrations:
        raise StoreError(f"no migration files in {folder}")
    return tuple(migrations[v] for v in sorted(migrations))


def engine_migrations(engine: Engine) -> tuple[Migration, ...]:
    """The migrations shipped for `engine`."""
    return load_migrations(shipped_sql_dir(engine))


def plan(migrations: Collection[Migration], applied: Collection[int]) -> tuple[Migration, ...]:
    """The migrations still to apply, in order.

    Raises SchemaTooNew when the database records a version above the newest
    file known to this llmgateway: it was migrated by a newer release, and
    running an older one against it could corrupt data.
    """
    newest = max((m.version for m in migrations), default=0)
    beyond = sorted(v for v in applied if v > newest)
    if beyond:
        raise SchemaTooNew(
            f"the database schema is at version {beyond[-1]} but this llmgateway knows "
            f"migrations up to {newest} only; upgrade llmgateway (or use another database)"
        )
    done = set(applied)
    return tuple(sorted((m for m in migrations if m.version not in done), key=_version))


def _version(migration: Migration) -> int:
    return migration.version


def _name(path: Traversable) -> str:
    return path.name
