"""Operations of the scale bench measured inside the bench process (no gateway needed).

The write queue flushing 10,000 statuses: a `WriteQueue` over the real store
(SQLite or PostgreSQL), 10,000 changed records put at once, then flushed,
while a probe task measures how late the event loop wakes it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from scale_parts import INSTANCE

PROBE_INTERVAL = 0.001


class Lateness:
    """A task waking every millisecond that keeps the largest delay it saw."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            expected = time.perf_counter() + PROBE_INTERVAL
            await asyncio.sleep(PROBE_INTERVAL)
            self.worst = max(self.worst, time.perf_counter() - expected)

    def start(self) -> None:
        """Start probing."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> float:
        """Stop probing; the largest lateness in seconds."""
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.worst


async def flush_in_process(database_url: str, count: int = 10_000) -> dict[str, Any]:
    """Put `count` changed statuses into a write queue and flush them: seconds and worst lag."""
    from llmgateway.config.schemas import DatabaseConfig
    from llmgateway.core.constants import Status
    from llmgateway.store import open_store
    from llmgateway.store.write_queue import WriteQueue

    store = open_store(DatabaseConfig(url=database_url, pool_min_size=1, pool_max_size=4))
    await store.open()
    try:
        records = (await store.load_records(INSTANCE))[:count]
        now = datetime.now(UTC)
        changed = [replace(r, status=Status.VALID, last_checked_at=now) for r in records]
        queue = WriteQueue(store)
        probe = Lateness()
        probe.start()
        begin = time.perf_counter()
        for record in changed:
            queue.put(record)
        await queue.flush()
        seconds = time.perf_counter() - begin
        worst = await probe.stop()
        await queue.close(5.0)
        print(
            f"  write queue flush {len(changed):,}: {seconds:.3f} s, worst lag {worst * 1000:.1f} ms"
        )
        return {"records": len(changed), "s": seconds, "worst_lag_ms": worst * 1000}
    finally:
        await store.close()
