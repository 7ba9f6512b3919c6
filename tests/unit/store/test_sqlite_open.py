"""Switching a new SQLite database to WAL while another process does the same."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from llmgateway.store import sqlite as sqlite_module


def _error(message: str, code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


class _Conn:
    """Answers `PRAGMA journal_mode` with the given errors first, then succeeds."""

    def __init__(self, *errors: sqlite3.OperationalError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def execute(self, sql: str) -> None:
        assert sql == "PRAGMA journal_mode = WAL"
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


async def test_a_locked_database_is_tried_again_until_it_switches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLite answers the loser of the race at once: it tries again rather than failing."""
    monkeypatch.setattr(sqlite_module, "WAL_RETRY", 0.001)
    conn = _Conn(
        _error("database is locked", sqlite3.SQLITE_BUSY),
        _error("database table is locked", sqlite3.SQLITE_LOCKED),
    )
    await sqlite_module._enter_wal(conn)  # type: ignore[arg-type]
    assert conn.calls == 3


async def test_another_error_or_a_lock_held_past_busy_timeout_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_module, "WAL_RETRY", 0.001)
    conn = _Conn(_error("disk I/O error", sqlite3.SQLITE_IOERR))
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        await sqlite_module._enter_wal(conn)  # type: ignore[arg-type]
    assert conn.calls == 1
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", 20)
    locked: Any = [_error("database is locked", sqlite3.SQLITE_BUSY) for _ in range(10_000)]
    conn = _Conn(*locked)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await sqlite_module._enter_wal(conn)  # type: ignore[arg-type]
    assert 1 < conn.calls < 10_000
