"""`in_slices`: every item once, in order, and the event loop's turn between two slices."""

from __future__ import annotations

import asyncio

from llmgateway.core.turns import SLICE, in_slices


async def test_slices_cover_every_item_in_order() -> None:
    items = list(range(2 * SLICE + 3))
    slices = [list(chunk) async for chunk in in_slices(items)]
    assert [len(chunk) for chunk in slices] == [SLICE, SLICE, 3]
    assert [item for chunk in slices for item in chunk] == items
    assert [chunk async for chunk in in_slices([], 2)] == []


async def test_other_tasks_run_between_two_slices_not_before_the_first() -> None:
    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(ticking())
    seen = [ticks async for _ in in_slices(range(5), 2)]
    ticker.cancel()
    assert seen[0] == 0  # the first slice comes at once
    assert seen[0] < seen[1] < seen[2]
