"""Memory helpers: lists released a slice at a time; the collector held off during a bulk load."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import pytest

from llmgateway.core.memory import RELEASE_SLICE, _libc, bulk_load, release, untrack

# A thread frees a 16 MiB block (glibc then raises its thresholds), then 24 blocks of 1 MiB;
# prints how much more anonymous memory the process keeps afterwards, in MiB.
_THREAD_CHURN = """
import sys, threading
from llmgateway.core.memory import bound_allocator, release_free_memory
if sys.argv[1] == "bound":
    assert bound_allocator()

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) // 1024

def churn():
    big = bytearray(16 << 20)
    del big
    blocks = [bytearray(1 << 20) for _ in range(24)]
    del blocks

before = anon()
thread = threading.Thread(target=churn)
thread.start()
thread.join()
release_free_memory()
print(anon() - before)
"""


def test_release_empties_the_list_and_frees_its_items() -> None:
    """Every item is let go, however many slices it takes; the list object stays usable."""

    class Item:
        freed = 0

        def __del__(self) -> None:
            Item.freed += 1

    items = [Item() for _ in range(2 * RELEASE_SLICE + 5)]
    release(items)
    assert items == []
    assert Item.freed == 2 * RELEASE_SLICE + 5


def test_bulk_load_turns_the_collector_back_on_after_the_last_body() -> None:
    """Nested bodies: the collector stays off until the outer one ends."""
    assert gc.isenabled()
    with bulk_load():
        with bulk_load():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.unfreeze()


def test_untrack_takes_a_value_out_of_the_collector_and_it_is_still_freed() -> None:
    """An untracked value is skipped by collections and freed by reference counting."""

    class Value:
        __slots__ = ("number", "__weakref__")

        def __init__(self) -> None:
            self.number = 1

    value = Value()
    assert gc.is_tracked(value)
    untrack(value)
    assert not gc.is_tracked(value)
    gone = weakref.ref(value)
    del value
    assert gone() is None


def _kept_after_churn(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _THREAD_CHURN, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(_libc() is None, reason="glibc's allocator only")
def test_a_bound_allocator_gives_back_what_a_thread_freed() -> None:
    """Blocks a thread made and freed go back to the system; left to glibc, 24 MiB stay."""
    assert _kept_after_churn("default") >= 16
    assert _kept_after_churn("bound") <= 4
