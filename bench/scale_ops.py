"""Operations of the scale bench: the write queue in-process, and the CPU per request.

The write queue flushing 10,000 statuses: a `WriteQueue` over the real store
(SQLite or PostgreSQL), 10,000 changed records put at once, then flushed,
while a probe task measures how late the event loop wakes it. The CPU per
request: wrk against the N-key instance and the 1-key one, alternately.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import scale_parts as parts
from load import Target, run_wrk
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


def cpu_per_request(
    base: str, pid: int, keys: int, upstream_pid: int, rounds: int
) -> dict[str, Any]:
    """CPU µs per request of the N-key instance and of the 1-key one, same process, alternately.

    wrk at 16 connections for 5 s per round and instance (CPU 0), the two
    instances in ABBA order. The figure of each is its lowest round: on a
    shared machine noise only ever adds CPU time, and a cost the pool's size
    causes (a bigger heap to collect, a longer look-up) is in every 5 s round,
    so the lowest round keeps it while dropping the neighbours' interference.
    The medians are kept beside it, and the ratio is that of the lowest rounds.
    """
    url = f"{base}/v1/chat/completions"
    targets = {
        "n_keys": Target("scale", url, f"Bearer {parts.TOKEN}", pid),
        "one_key": Target("one", url, f"Bearer {parts.ONE_TOKEN}", pid),
    }
    for target in targets.values():  # warm-up
        run_wrk(target, stream=False, connections=16, duration=1, nginx_pid=upstream_pid, cpu=0)
    samples: dict[str, list[float]] = {name: [] for name in targets}
    for index in range(rounds):
        order = ["n_keys", "one_key"] if index % 2 == 0 else ["one_key", "n_keys"]
        for name in order:
            result = run_wrk(
                targets[name],
                stream=False,
                connections=16,
                duration=5,
                nginx_pid=upstream_pid,
                cpu=0,
            )
            samples[name].append(result.cpu_us_per_request or 0.0)
    lowest = {name: min(values) for name, values in samples.items()}
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = lowest["n_keys"] / lowest["one_key"] if lowest["one_key"] else 0.0
    median_ratio = medians["n_keys"] / medians["one_key"] if medians["one_key"] else 0.0
    print(
        f"  CPU µs/req (lowest round): {keys:,} keys {lowest['n_keys']:.0f}, "
        f"1 key {lowest['one_key']:.0f}; medians {medians['n_keys']:.0f}, {medians['one_key']:.0f}"
    )
    return {
        "samples": samples,
        **lowest,
        "ratio": ratio,
        "median": medians,
        "median_ratio": median_ratio,
    }
