"""Background threads run at a lower priority than the event loop's thread."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import pytest

from llmgateway.core.threads import (
    BACKGROUND_NICE,
    background_executor,
    lower_this_thread,
    on_thread_when,
)
from llmgateway.process.server import _loop_factory
from llmgateway.store.sqlite import SqliteStore

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="nice is per thread on Linux")


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def expected_background_nice() -> int:
    return min(nice_of_this_thread() + BACKGROUND_NICE, 19)


def test_lowering_a_thread_leaves_the_others_alone() -> None:
    before = nice_of_this_thread()
    expected = expected_background_nice()
    seen: list[tuple[bool, int]] = []

    def lowered() -> None:
        seen.append((lower_this_thread(), nice_of_this_thread()))

    thread = threading.Thread(target=lowered)
    thread.start()
    thread.join()
    assert seen == [(True, expected)]
    assert nice_of_this_thread() == before


def test_the_background_executor_runs_its_jobs_lowered() -> None:
    before = nice_of_this_thread()
    with background_executor() as executor:
        assert executor.submit(nice_of_this_thread).result() == expected_background_nice()
    assert nice_of_this_thread() == before


def test_the_server_loop_sends_to_thread_work_to_the_background_executor() -> None:
    expected = expected_background_nice()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        assert runner.run(asyncio.to_thread(nice_of_this_thread)) == expected


async def test_the_sqlite_connection_thread_runs_lowered(tmp_path: Path) -> None:
    before = nice_of_this_thread()
    expected = expected_background_nice()
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    try:
        assert store._conn is not None
        raw = store._conn.raw
        await raw.create_function("nice_here", 0, nice_of_this_thread)
        cursor = await raw.execute("SELECT nice_here()")
        assert await cursor.fetchall() == [(expected,)]
    finally:
        await store.close()
    assert nice_of_this_thread() == before


@pytest.mark.parametrize("many", [False, True])
async def test_work_goes_to_a_thread_only_when_there_is_much(many: bool) -> None:
    here = threading.get_ident()

    def work(value: int, *, add: int) -> tuple[int, bool]:
        return value + add, threading.get_ident() != here

    assert await on_thread_when(many, work, 40, add=2) == (42, many)
