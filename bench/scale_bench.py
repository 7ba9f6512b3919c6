"""Scale bench: a gateway with N keys × 2 models, and whether any operation stalls its clients.

Usage: .venv/bin/python bench/scale_bench.py [--keys 10000,100000] [--engine sqlite|postgres]
       [--rate 100] [--label before]

For each engine and N it seeds a store (key file + the gateway's start-up sync
on an empty store: the cold start; then statuses through the store API),
restarts the gateway (warm start) and measures ready time, RSS, the latency of
`/-/status` (summary, one page of keys, every page), `/metrics` and
`llmgateway status` (summary, `--json`, `--keys`), then, for each operation, the
p99 of a steady stream of proxied requests (`--rate` per second, open loop)
while it runs, against the p99 with nothing running, and the largest
event-loop lag the gateway's own histogram saw. A second gateway run with the
keeper on covers the periodic key-file sync and a sync adding and removing
1,000 keys (followed by the keeper's round probing the 2,000 new rows); on
PostgreSQL the follower's reconciliation and another process's key sync are
covered too. The write queue flushing 10,000 statuses is measured in-process.
The report goes to bench/results/<date>_<time>-scale[-label].md (+ .json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import scale_parts as parts
from processes import (
    BENCH_DIR,
    REPO_DIR,
    Server,
    free_port,
    gateway,
    result_path,
    rss_kib,
    wait_for_ready,
)
from scale_ops import cpu_per_request, flush_in_process
from scratch import scratch

RECONCILE_PERIOD = 30.0
Op = Callable[[], Awaitable[object]]


class Run:
    """One engine × N: the processes, the figures gathered so far."""

    def __init__(
        self, engine: str, keys: int, rate: float, workdir: Path, db_url: str, cpus: str = "1"
    ) -> None:
        self.engine, self.n, self.rate, self.dir, self.db_url = engine, keys, rate, workdir, db_url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.figures: dict[str, Any] = {"engine": engine, "keys": keys, "rows": keys * 2}
        self.windows: list[dict[str, Any]] = []
        self.server: Server | None = None
        self.ready_at = 0.0
        self.upstream = ""
        self.cpus = cpus
        """The CPUs of the gateway process, its threads included (as taskset takes them)."""
        self.env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}

    def other_cpus(self) -> str | None:
        """The CPUs not given to the gateway (taskset's list), or None when it has them all."""
        others = self._other_cpu_set()
        return ",".join(map(str, sorted(others))) or None

    def _other_cpu_set(self) -> set[int]:
        mine: set[int] = set()
        for part in self.cpus.split(","):
            low, _, high = part.partition("-")
            mine.update(range(int(low), int(high or low) + 1))
        return set(os.sched_getaffinity(0)) - mine

    def keep_off_the_gateways_cpus(self) -> None:
        """Run this process (the stream, the operations' clients) on the CPUs not the gateway's.

        The bench's own work (timing the stream, sending an import of 100,000
        keys, reading answers) would otherwise take turns on the gateway's CPU,
        and the loop would wait for it as for any other process.
        """
        others = self._other_cpu_set()
        if others:
            os.sched_setaffinity(0, others)

    def start(self, config: Path, name: str) -> float:
        """Start the gateway; return seconds until /-/ready answered 200."""
        server = gateway(config, self.cpus, self.dir / f"{name}.log")
        begin = time.perf_counter()
        server.start(env=self.env, cwd=self.dir)
        try:
            wait_for_ready(f"{self.base}/-/ready", server.process, 600)
        except RuntimeError:
            print(server.log_tail(), file=sys.stderr)
            raise
        self.server = server
        self.ready_at = time.perf_counter()
        return self.ready_at - begin

    def stop(self) -> None:
        """Stop the gateway (graceful)."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def pid(self) -> int:
        """The gateway's pid."""
        assert self.server is not None
        return self.server.pid

    async def get(self, session: aiohttp.ClientSession, path: str) -> tuple[float, bytes, int]:
        """GET `path`: (seconds, body, status)."""
        begin = time.perf_counter()
        async with session.get(self.base + path) as answer:
            body = await answer.read()
            return time.perf_counter() - begin, body, answer.status

    async def lag(
        self, session: aiohttp.ClientSession
    ) -> tuple[dict[float, float], dict[float, float]]:
        """The gateway's event-loop lag buckets now, and those of the lags' own parts.

        Either is {} where the gateway does not have it (older commits; the own
        part where the loop's CPU wait cannot be read).
        """
        _, body, _ = await self.get(session, "/metrics")
        text = body.decode()
        return parts.lag_buckets(text), parts.lag_buckets(text, parts.OWN_LAG_METRIC)

    async def quiet_slot(self, needed: float) -> None:
        """On PostgreSQL, wait until `needed` s fit before the follower's next reconciliation."""
        if self.engine != "postgres":
            return
        phase = (time.perf_counter() - self.ready_at) % RECONCILE_PERIOD
        if 3.0 <= phase <= RECONCILE_PERIOD - needed - 3.0:
            return
        await asyncio.sleep((RECONCILE_PERIOD - phase) % RECONCILE_PERIOD + 3.0)

    async def window(
        self,
        session: aiohttp.ClientSession,
        label: str,
        op: Op | None,
        *,
        repeat: int = 1,
        idle: float = 5.0,
        lead: float = 0.5,
        needed: float = 12.0,
        slot: bool = True,
    ) -> dict[str, Any]:
        """Run `op` `repeat` times under the steady stream; record p50/p99/max and the lag."""
        if slot:
            await self.quiet_slot(needed)
        waits = await self.cpu_waits()
        before = await self.lag(session)
        await asyncio.sleep(0.3)
        durations: list[float] = []

        async def repeated() -> None:
            for index in range(repeat):
                if index:
                    await asyncio.sleep(0.3)
                begin = time.perf_counter()
                assert op is not None
                await op()
                durations.append(time.perf_counter() - begin)

        stream, _ = await parts.under_stream(
            session, self.base, self.rate, None if op is None else repeated, idle=idle, lead=lead
        )
        after = await self.lag(session)
        waited = json.loads((await waits.communicate(b""))[0])
        row = {
            "operation": label,
            "op_seconds": sorted(durations)[len(durations) // 2] if durations else None,
            "requests": len(stream.latencies),
            "errors": stream.errors,
            "p50_ms": parts.percentile(stream.latencies, 0.50) * 1000,
            "p99_ms": parts.percentile(stream.latencies, 0.99) * 1000,
            "max_ms": max(stream.latencies, default=0.0) * 1000,
            "lag_max_le_s": parts.max_lag_bound(before[0], after[0]),
            "own_lag_max_le_s": parts.max_lag_bound(before[1], after[1]),
            "cpu_wait_max_ms": waited["longest_ms"],
            "cpu_wait_50ms_ms": waited["within_50ms_ms"],
        }
        self.windows.append(row)
        print(
            f"  {label:<52} op {row['op_seconds'] or 0:7.3f} s  p99 {row['p99_ms']:8.1f} ms  "
            f"max {row['max_ms']:8.1f} ms  lag<= {row['lag_max_le_s']} "
            f"(own <= {row['own_lag_max_le_s']})  "
            f"CPU wait {row['cpu_wait_max_ms']:.1f} ms ({row['cpu_wait_50ms_ms']:.1f} in 50 ms)",
            flush=True,
        )
        return row

    async def cpu_waits(self) -> asyncio.subprocess.Process:
        """`cpu_wait.py` on the gateway's loop thread, on the other CPUs; stdin closed ends it.

        The longest time the loop's thread waited for its CPU while it could run
        tells a stall of another process's making (a lag as long) from the
        gateway's own (its thread running).
        """
        others = self.other_cpus()
        pin = ["taskset", "-c", others] if others else []
        argv = [*pin, sys.executable, str(BENCH_DIR / "cpu_wait.py"), str(self.pid)]
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )


async def timed_get(run: Run, session: aiohttp.ClientSession, path: str, label: str) -> None:
    """Median latency and size of 5 GETs of `path` (no stream)."""
    samples = []
    size = 0
    for _ in range(5):
        seconds, body, status = await run.get(session, path)
        samples.append(seconds)
        size = len(body)
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status}: {body[:200]!r}")
    run.figures[label] = {"ms": sorted(samples)[2] * 1000, "bytes": size}
    print(f"  {label:<30} {sorted(samples)[2] * 1000:9.1f} ms  {size:>12,} bytes", flush=True)


def cli(run: Run, config: Path, *flags: str) -> Op:
    """`llmgateway status [flags]` as an operation (in a thread): records time and max RSS.

    The command runs on the CPUs not given to the gateway, as an operator's
    shell would: on the gateway's CPU it would take turns with its event loop.
    """
    others = run.other_cpus()
    pin = ["taskset", "-c", others] if others else []
    argv = [*pin, sys.executable, "-m", "llmgateway", "status", "--config", str(config), *flags]
    label = "cli status " + " ".join(flags)

    async def op() -> None:
        seconds, code, rss, printed = await asyncio.to_thread(parts.run_measured, argv, run.env)
        run.figures[label.strip()] = {"s": seconds, "rss_kib": rss, "bytes": printed, "rc": code}

    return op


async def main_run(run: Run, session: aiohttp.ClientSession, config: Path) -> None:
    """The keeper-off run: status, metrics, CLI, and (PostgreSQL) follower work."""
    for label, path in (
        ("status summary", "/-/status"),
        ("status keys page", "/-/status?keys=1&limit=1000"),
        ("metrics", "/metrics"),
    ):
        await run.quiet_slot(12)
        await timed_get(run, session, path, label)
    run.figures["status all pages"] = await parts.walk_elsewhere(run.base, run.other_cpus())
    await run.window(session, "nothing (steady stream alone)", None, idle=5.0)
    await run.window(
        session, "GET /-/status (summary) x5", _get(run, session, "/-/status"), repeat=5
    )
    page = "/-/status?keys=1&limit=1000"
    await run.window(
        session, "GET /-/status?keys=1 (one page) x5", _get(run, session, page), repeat=5
    )
    await run.window(
        session,
        "every page of /-/status?keys=1",
        lambda: parts.walk_elsewhere(run.base, run.other_cpus()),
        needed=20,
    )
    await run.window(session, "GET /metrics x5", _get(run, session, "/metrics"), repeat=5)
    await run.window(session, "llmgateway status", cli(run, config))
    await run.window(session, "llmgateway status --json", cli(run, config, "--json"))
    await run.window(session, "llmgateway status --keys", cli(run, config, "--keys"), needed=20)
    _, _body, status = await run.get(session, "/-/api/keys")
    run.figures["key admin API"] = "present" if status != 404 else "absent (404): skipped"
    if status != 404:
        await admin_api_run(run, session, config)
    if run.engine == "postgres":
        keys = parts.make_keys(run.n)
        changed = keys[1000:] + parts.make_keys(1000, start=run.n)
        await run.window(
            session,
            "key sync +1,000/-1,000 by another process (followed)",
            lambda: parts.external_sync(run.db_url, changed, run.other_cpus()),
            lead=3.0,
        )
        phase = (time.perf_counter() - run.ready_at) % RECONCILE_PERIOD
        await asyncio.sleep(max(RECONCILE_PERIOD - phase - 2.0, 0.0))
        await run.window(
            session, "reconciliation (follower's full reload)", None, idle=6, slot=False
        )


IMPORTED = 100_000
"""Keys one import through the key admin API adds (new ones, beside the pool's)."""


async def admin_api_run(run: Run, session: aiohttp.ClientSession, config: Path) -> None:
    """An import of 100,000 new keys through `POST /-/api/keys`, then reloads, under the stream."""
    text = "\n".join(parts.make_keys(IMPORTED, start=10 * run.n))
    # Encoded before the window: 4 MB of JSON built meanwhile would stall the stream's client.
    body = json.dumps({"instance": parts.INSTANCE, "text": text}).encode()
    answers: list[dict[str, Any]] = []

    async def import_keys() -> None:
        headers = {"Content-Type": "application/json"}
        async with session.post(f"{run.base}/-/api/keys", data=body, headers=headers) as answer:
            answers.append(await answer.json())

    await run.window(
        session, f"import {IMPORTED:,} keys (POST /-/api/keys)", import_keys, slot=False
    )
    run.figures["import answer"] = {k: answers[-1].get(k) for k in ("added", "duplicates")}
    listing = f"/-/api/keys?instance={parts.INSTANCE}&limit=1000"
    await run.window(
        session, "GET /-/api/keys (a page of 1,000) x5", _get(run, session, listing), repeat=5
    )
    await recheck_run(run, session)

    async def reload() -> None:
        async with session.post(f"{run.base}/-/api/reload") as answer:
            await answer.read()

    await run.window(session, "reload, file unchanged (POST /-/api/reload) x3", reload, repeat=3)
    await changing_reloads(run, session, config)
    await disable_and_enable(run, session)


ADDED_MODEL = "gpt-4.1"
"""The model a reload adds to every key of the scale instance, and the next one removes."""


async def changing_reloads(run: Run, session: aiohttp.ClientSession, config: Path) -> None:
    """A reload adding a model to every key of the instance (a row each), then one removing it.

    The window's op time is the reload's, the API answering once the pool has
    followed (the new model's rows merged, the removed model's dropped).
    """
    original = await asyncio.to_thread(config.read_text)
    document = json.loads(original)  # the bench writes JSON, which is YAML
    models = document["providers"][parts.INSTANCE]["models"]

    async def reload_with(change: Callable[[], object]) -> None:
        change()
        await asyncio.to_thread(config.write_text, json.dumps(document, indent=2) + "\n")
        async with session.post(f"{run.base}/-/api/reload") as answer:
            result = await answer.json()
        assert result["applied"] and result["changed"] == [parts.INSTANCE], result

    try:
        await run.window(
            session,
            "reload adding a model to every key",
            lambda: reload_with(lambda: models.update({ADDED_MODEL: {}})),
            needed=25.0,
        )
        await run.window(
            session,
            "reload removing that model",
            lambda: reload_with(lambda: models.pop(ADDED_MODEL)),
            needed=25.0,
        )
    finally:
        await asyncio.to_thread(config.write_text, original)


async def disable_and_enable(run: Run, session: aiohttp.ClientSession) -> None:
    """The imported keys disabled by hand, then enabled again (file keys go on serving)."""
    imported = {"filter": {"instance": parts.INSTANCE, "source": "api"}}

    def by_hand(action: str) -> Op:
        async def op() -> None:
            async with session.post(f"{run.base}/-/api/keys/{action}", json=imported) as answer:
                result = await answer.json()
            assert answer.status == 200 and result["changed"] == IMPORTED, result

        return op

    for action in ("disable", "enable"):
        label = f"{action} the {IMPORTED:,} imported keys (POST /-/api/keys/{action})"
        await run.window(session, label, by_hand(action), needed=25.0)


RECHECKED = 10_000
"""Keys one recheck job probes (each on both models)."""


async def recheck_run(run: Run, session: aiohttp.ClientSession) -> None:
    """A recheck job over 10,000 keys under the stream: its pace, and the probes' concurrency.

    The job must progress at the keeper's concurrency limit
    (`max_concurrent_probes`, 10 by default): the upstream's peak of requests
    in flight shows it (the steady stream adds one or two).
    """
    ids: list[int] = []
    cursor: str | None = None
    while len(ids) < RECHECKED:
        query = f"instance={parts.INSTANCE}&limit=1000" + (f"&cursor={cursor}" if cursor else "")
        _, body, _ = await run.get(session, f"/-/api/keys?{query}")
        page = json.loads(body)
        ids += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = ids[:RECHECKED]
    figures: dict[str, Any] = {}

    async def recheck() -> None:
        async with session.get(f"{run.upstream}{parts.PEAK_PATH}"):
            pass  # the peak starts again from here
        begin = time.perf_counter()
        async with session.post(f"{run.base}/-/api/keys/recheck", json={"ids": ids}) as answer:
            job = (await answer.json())["job"]
        while True:
            async with session.get(f"{run.base}/-/api/jobs/{job}") as answer:
                state = await answer.json()
            if state["state"] != "running":
                break
            await asyncio.sleep(0.2)
        seconds = time.perf_counter() - begin
        async with session.get(f"{run.upstream}{parts.PEAK_PATH}") as answer:
            peak = (await answer.json())["peak"]
        figures.update(
            keys=len(ids),
            probes=state["total"],
            state=state["state"],
            seconds=seconds,
            probes_per_s=state["done"] / seconds,
            upstream_peak_in_flight=peak,
        )

    await run.window(session, f"recheck job over {len(ids):,} keys", recheck, slot=False)
    run.figures["recheck"] = figures
    print(f"  recheck: {figures}", flush=True)


def _get(run: Run, session: aiohttp.ClientSession, path: str) -> Op:
    async def op() -> None:
        await run.get(session, path)

    return op


async def keeper_flood_run(run: Run, session: aiohttp.ClientSession) -> None:
    """The keeper probing every key the import left untested, at its concurrency limit."""
    await asyncio.sleep(3.0)
    await run.window(
        session, "keeper on, probing the imported untested keys", None, idle=12.0, slot=False
    )


async def keeper_run(run: Run, session: aiohttp.ClientSession) -> None:
    """The keeper-on run, nothing due: the periodic key-file sync, then one changing 1,000 keys."""
    await asyncio.sleep(3.0)  # past the keeper's first sync at start
    await run.window(
        session, "keeper on, nothing due (periodic unchanged key sync)", None, idle=12.0
    )
    keys = parts.make_keys(run.n)
    move_in = parts.staged_key_file(run.dir, keys[1000:] + parts.make_keys(1000, start=run.n))

    async def edit() -> None:
        move_in()
        await asyncio.sleep(14.0)

    await run.window(
        session, "key-file sync +1,000/-1,000, then probing 2,000 new rows", edit, slot=False
    )


async def bench_one(
    engine: str,
    n: int,
    rate: float,
    cpu_rounds: int,
    cpu_only: bool = False,
    gateway_cpus: str = "1",
) -> dict[str, Any]:
    """Every measurement of one engine at `n` keys."""
    async with scratch(engine, n, "scale") as setup:
        workdir, db_url, upstream_url = setup.workdir, setup.db_url, setup.upstream_url
        run = Run(engine, n, rate, workdir, db_url, gateway_cpus)
        run.upstream = upstream_url
        run.keep_off_the_gateways_cpus()
        run.figures["load_before"] = os.getloadavg()[0]
        run.figures["reference_loop_s"] = reference_loop(run.cpus)
        try:
            config = parts.write_config(workdir, run.port, upstream_url, db_url, keeper=False)
            cold = run.start(config, "cold")
            run.figures["ready_cold_s"] = cold
            run.figures["rss_cold_mib"] = rss_kib(run.pid) / 1024
            run.stop()
            await parts.seed_statuses(db_url)
            # Three warm starts (the figure is their median, each is kept): one start on a
            # shared machine varies by half a second; the last one stays up for what follows.
            warms: list[float] = []
            for attempt in range(WARM_STARTS):
                if attempt:
                    run.stop()
                warms.append(run.start(config, "warm"))
            warm = statistics.median(warms)
            run.figures["ready_warm_s"] = warm
            run.figures["ready_warm_each_s"] = warms
            run.figures["rss_ready_mib"] = rss_kib(run.pid) / 1024
            print(
                f"  ready cold {cold:.2f} s, warm {warm:.2f} s, RSS {run.figures['rss_ready_mib']:.0f} MiB"
            )
            timeout = aiohttp.ClientTimeout(total=120)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                if not cpu_only:
                    await main_run(run, session, config)
                if cpu_rounds:
                    run.figures["cpu"] = await asyncio.to_thread(
                        cpu_per_request, run.base, run.pid, run.n, setup.upstream.pid, cpu_rounds
                    )
                run.figures["rss_after_mib"] = rss_kib(run.pid) / 1024
                run.figures["rss_peak_mib"] = parts.hwm_kib(run.pid) / 1024
                run.stop()
                if cpu_only:
                    return run.figures
                run.figures["write queue flush 10,000"] = await flush_in_process(db_url)
                keeper_config = parts.write_config(
                    workdir, run.port, upstream_url, db_url, keeper=True
                )
                run.figures["ready_keeper_s"] = run.start(keeper_config, "keeper")
                await keeper_flood_run(run, session)
                run.stop()
                await parts.seed_statuses(db_url)  # every key checked: the keeper finds nothing due
                run.start(keeper_config, "keeper-checked")
                await keeper_run(run, session)
            run.stop()
        finally:
            run.stop()
    run.figures["windows"] = run.windows
    run.figures["load_after"] = os.getloadavg()[0]
    return run.figures


def reference_loop(cpus: str) -> float:
    """Seconds a fixed pure-Python loop (10 million additions) takes on the gateway's CPUs.

    `cpus` as taskset takes them. It tells how fast the host runs Python now, beside the
    load average.

    The host's CPU comes and goes: within an hour, with the load average under 1, the same
    warm start on SQLite took 2.1-2.4 s and then 3.0-4.2 s (the gateway's imports alone 0.42 s,
    then 0.62-0.74 s; this loop then took 1.3-2.2 s). Ready times and latencies of two reports
    compare only with this beside them.
    """
    script = "import time\nt = time.perf_counter()\ns = 0\nfor i in range(10_000_000): s += i\n"
    script += "print(time.perf_counter() - t)"
    done = subprocess.run(
        ["taskset", "-c", cpus, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout)


WARM_STARTS = 3
"""Warm restarts timed per engine and N (the report gives their median and each)."""


def main() -> None:
    """Parse the arguments, run every engine × N, write the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--keys", default="10000,100000", help="comma-separated N (e.g. 300000)")
    parser.add_argument("--engine", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--rate", type=float, default=100.0, help="steady requests per second")
    parser.add_argument("--label", default="", help="suffix of the report's file name")
    parser.add_argument(
        "--cpu-rounds",
        type=int,
        default=3,
        help="wrk rounds per instance for CPU/request (0: none)",
    )
    parser.add_argument(
        "--cpu-only", action="store_true", help="only ready, RSS and CPU per request"
    )
    parser.add_argument(
        "--gateway-cpus",
        default="1",
        help='CPUs of the gateway process and its threads, as taskset takes them (default "1"; '
        '"0,1": not pinned, sharing both cores with the upstream and the client)',
    )
    args = parser.parse_args()
    results = []
    for engine in args.engine or ["sqlite", "postgres"]:
        for n in (int(k) for k in args.keys.split(",")):
            results.append(
                asyncio.run(
                    bench_one(
                        engine, n, args.rate, args.cpu_rounds, args.cpu_only, args.gateway_cpus
                    )
                )
            )
    from scale_report import write_report

    path = result_path("scale", args.label)
    write_report(path, results, args)
    print(f"report: {path}")


if __name__ == "__main__":
    main()
