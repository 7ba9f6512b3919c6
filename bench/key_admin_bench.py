"""Key admin benchmark: the store's key admin operations at 100,000 keys x 2 models, both engines.

Usage: .venv/bin/python bench/key_admin_bench.py [--keys 100000] [--engine sqlite|postgres|both]
       [--runs 40]

Measured, in order, on a fresh database per engine:
1. import: `add_keys` of `--keys` new keys for 2 models (the `POST /-/api/keys` path), the
   time, and the event loop's p99 scheduling delay in the importing process meanwhile (what a
   request served by that process would wait at most, the store's share of the added latency);
2. list: `list_keys` with each filter (first page of 100, and a page deep in the listing),
   p50/p95 over `--runs` calls, total and facets included;
3. disable by a filter matching half the keys, then delete by a filter matching the other
   half (time; one statement set each, no per-key variables).
Statuses are seeded so that half the keys are `valid` on both models and the other half
`invalid_key` on one of them. PostgreSQL runs on a throw-away database on 127.0.0.1:5432.
The added latency of a steady request stream through a running gateway needs the key admin
HTTP API (`POST /-/api/keys`); the report says when this tree has none.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from store_bench import postgres_store, sqlite_store

from llmgateway.core.constants import ProviderType, Status
from llmgateway.core.masking import mask_key
from llmgateway.store.key_admin import KeyFilter
from llmgateway.store.key_codec import PLAIN
from llmgateway.store.protocol import Store

INSTANCE = "bench"
OTHER = "bench-other"
MODELS = ["model-0", "model-1"]
TARGETS = {"list p95": 0.300, "import": 30.0, "bulk": 10.0}


class LoopLag:
    """Samples the event loop's scheduling delay every `period` seconds while it runs."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.delays: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.period)
            self.delays.append(max(0.0, loop.time() - start - self.period))

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def p99(self) -> float:
        """The 99th percentile delay in seconds (0 without samples)."""
        return percentile(self.delays, 0.99)


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile of `values` (nearest rank), 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def timed(label: str, action: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    """Run `action`; print and return how long it took."""
    start = time.perf_counter()
    result = await action()
    took = time.perf_counter() - start
    print(f"  {label:<58} {took:8.3f} s")
    return result, took


async def seed_statuses(store: Store, ids: list[int], now: datetime) -> None:
    """Even keys valid on both models; odd keys invalid_key on model-1 (untested on model-0)."""
    even = set(ids[0::2])
    batch = []
    for record in await store.load_records(INSTANCE):
        if record.key_id in even:
            batch.append(replace(record, status=Status.VALID, last_checked_at=now))
        elif record.model == "model-1":
            batch.append(replace(record, status=Status.INVALID_KEY, last_checked_at=now))
    for start in range(0, len(batch), 5000):
        await store.record(batch[start : start + 5000])


def filters(keys: list[str]) -> dict[str, KeyFilter]:
    """One listing filter per field (and none, and all together)."""
    key = keys[len(keys) // 3]
    return {
        "none": KeyFilter(),
        "instance": KeyFilter(instance=INSTANCE),
        "model": KeyFilter(model="model-1"),
        "status": KeyFilter(status="invalid_key"),
        "status (rare)": KeyFilter(status="no_quota"),
        "model + status": KeyFilter(model="model-0", status="valid"),
        "source": KeyFilter(source="api"),
        "q: mask": KeyFilter(q=mask_key(key)),
        "q: fingerprint": KeyFilter(q=PLAIN.fingerprint(key)[:12]),
        "q: whole key": KeyFilter(q=key),
        "all fields": KeyFilter(INSTANCE, "model-1", "invalid_key", "api", None),
    }


async def bench_lists(store: Store, keys: list[str], runs: int) -> dict[str, float]:
    """p95 per filter (first page and a deep page alternately); prints p50/p95 and totals."""
    deep = (await store.list_keys(KeyFilter(), after=None, limit=1000)).items[-1].id * 50
    worst: dict[str, float] = {}
    for name, flt in filters(keys).items():
        took: list[float] = []
        total = 0
        for i in range(runs):
            start = time.perf_counter()
            page = await store.list_keys(flt, after=deep if i % 2 else None, limit=100)
            took.append(time.perf_counter() - start)
            total = page.total
        p95 = percentile(took, 0.95)
        worst[name] = p95
        print(
            f"  list {name:<16} matches {total:>7,}  p50 {statistics.median(took) * 1000:7.1f} ms"
            f"  p95 {p95 * 1000:7.1f} ms"
        )
    return worst


async def bench(store: Store, count: int, runs: int) -> dict[str, float]:
    """Every measured operation on one engine; returns the figures checked against targets."""
    now = datetime.now(UTC)
    keys = [f"sk-bench-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}" for _ in range(count)]
    await store.sync_providers(
        [(INSTANCE, ProviderType.OPENAI_LIKE), (OTHER, ProviderType.OPENAI_LIKE)]
    )
    await store.sync_keys(OTHER, [f"sk-other-{i:0>24}" for i in range(1000)], MODELS, now)
    with LoopLag() as lag:
        report, import_s = await timed(
            f"import: add_keys {count:,} keys x {len(MODELS)} models",
            lambda: store.add_keys(INSTANCE, keys, MODELS, now),
        )
    assert len(report.added) == count, report
    print(f"  import: event loop p99 delay meanwhile {lag.p99() * 1000:26.1f} ms")
    await seed_statuses(store, report.added, now)
    lists = await bench_lists(store, keys, runs)
    half = count // 2
    changed, disable_s = await timed(
        f"disable by filter (status=valid: {half:,} keys, {half * 2:,} rows)",
        lambda: store.set_disabled(KeyFilter(instance=INSTANCE, status="valid"), True, now),
    )
    assert len(changed) == half * len(MODELS), len(changed)
    deleted, delete_s = await timed(
        f"delete by filter (status=invalid_key: {half:,} keys)",
        lambda: store.delete_keys(KeyFilter(instance=INSTANCE, status="invalid_key")),
    )
    assert len(deleted.deleted) == half, len(deleted.deleted)
    return {
        "list p95": max(lists.values()),
        "import": import_s,
        "import loop p99": lag.p99(),
        "disable": disable_s,
        "delete": delete_s,
    }


def verdicts(engine: str, figures: dict[str, float]) -> None:
    """Each figure against its target."""
    checks = [
        ("list p95 (worst filter)", figures["list p95"], TARGETS["list p95"]),
        ("import", figures["import"], TARGETS["import"]),
        ("disable 50k", figures["disable"], TARGETS["bulk"]),
        ("delete 50k", figures["delete"], TARGETS["bulk"]),
    ]
    for label, value, target in checks:
        verdict = "ok" if value <= target else "MISSED"
        print(f"  {engine:<8} {label:<24} {value:8.3f} s  target <= {target:g} s  {verdict}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
    results: dict[str, dict[str, float]] = {}
    for engine in engines:
        print(f"{engine}: {args.keys:,} keys x {len(MODELS)} models")
        opened = sqlite_store() if engine == "sqlite" else postgres_store()
        async with opened as store:
            results[engine] = await bench(store, args.keys, args.runs)
    print("targets:")
    for engine, figures in results.items():
        verdicts(engine, figures)
    if importlib.util.find_spec("llmgateway.web.api") is None:
        print(
            "note: no key admin HTTP API in this tree (llmgateway/web/api): the added p99 "
            "latency of requests through a running gateway during an import is not measured; "
            "the event loop delay above is the store's share of it"
        )


if __name__ == "__main__":
    asyncio.run(main())
