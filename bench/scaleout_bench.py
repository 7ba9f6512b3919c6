"""How long a key condemned in one process takes to leave another process's pool.

Process A and process B are each a real store (own asyncpg pool), write-behind
queue (the app's 0.2 s interval), live pool and follower (LISTEN connection),
on one fresh PostgreSQL database; they run in one Python process here, on one
event loop. A condemns a key (as a request's `invalid_key` would) at a random
moment; the time until B's pool announces the key `invalid_key` is recorded.

    .venv/bin/python bench/scaleout_bench.py [--count 1000] [--dsn postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import asyncpg

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.schemas import AppConfig, ModelConfig, ProviderConfig
from llmgateway.core.constants import ErrorReason, ProviderType, Status
from llmgateway.core.masking import Masker
from llmgateway.core.models import CheckResult
from llmgateway.keeper.follower import PoolFollower
from llmgateway.keeper.key_sync import KeySync
from llmgateway.pool.key_pool import KeyPool
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.write_queue import WriteQueue

MODEL = "m"


class Process:
    """One gateway process's store, queue, pool and follower."""

    def __init__(self, dsn: str, provider: ProviderConfig) -> None:
        self.store = PostgresStore(dsn, min_size=1, max_size=4)
        self.queue = WriteQueue(self.store)
        accessor = ConfigAccessor(AppConfig(providers={provider.name: provider}))
        self.pool = KeyPool(accessor, sink=self.queue.put)
        key_sync = KeySync(accessor, self.store, self.pool, Masker())
        self.follower = PoolFollower(self.store, self.pool, key_sync, [provider.name])
        self.task: asyncio.Task[None] | None = None
        self._running = AsyncExitStack()

    async def start(self) -> None:
        await self.store.open()
        self.pool.load(await self.store.load_records())
        self.task = asyncio.create_task(self.queue.run())
        await self._running.enter_async_context(self.follower.running())

    async def stop(self) -> None:
        await self._running.aclose()
        await self.queue.close()
        if self.task is not None:
            await self.task
        await self.store.close()


async def measure(dsn: str, count: int) -> list[float]:
    provider = ProviderConfig(
        name="p",
        provider_type=ProviderType.OPENAI_LIKE,
        api_base_url="http://127.0.0.1:9",
        default_model=MODEL,
        models={MODEL: ModelConfig()},
    )
    setup = PostgresStore(dsn)
    await setup.open()
    await setup.sync_providers([("p", ProviderType.OPENAI_LIKE)])
    keys = [f"sk-bench-{i:05d}-0123456789" for i in range(count)]
    await setup.sync_keys("p", keys, [MODEL], datetime.now(UTC))
    await setup.close()
    a, b = Process(dsn, provider), Process(dsn, provider)
    await a.start()
    await b.start()
    events = b.pool.subscribe()
    while not b.follower.feed.state.connected:  # noqa: ASYNC110 (a state, no event)
        await asyncio.sleep(0.01)
    latencies: list[float] = []
    try:
        for record in a.pool.records():
            # A random phase of the write queue's 0.2 s interval.
            await asyncio.sleep(random.uniform(0.0, 0.2))
            started = time.perf_counter()
            a.pool.report(record, CheckResult(ErrorReason.INVALID_KEY, 401, "bench"))
            while True:
                event = await asyncio.wait_for(events.get(), 5.0)
                if event.new is Status.INVALID_KEY:
                    break
            latencies.append(time.perf_counter() - started)
    finally:
        await a.stop()
        await b.stop()
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    name = f"llmgw_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = args.admin_dsn.rsplit("/", 1)[0] + f"/{name}"
        latencies = sorted(await measure(dsn, args.count))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    ms = [x * 1000 for x in latencies]
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"condemnations={len(ms)} p50={statistics.median(ms):.1f}ms p99={p99:.1f}ms "
        f"max={ms[-1]:.1f}ms mean={statistics.fmean(ms):.1f}ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
