"""Parts of the scale bench: the upstream stand-in, files, seeding, the steady stream, readings.

`python bench/scale_parts.py PORT` runs the upstream: a tiny aiohttp server
(uvloop) answering every POST after 5 ms with OpenAI's fixed chat completion
(the gateway's proxied requests and the probes alike), and its peak of
requests in flight at `GET /-/peak`. `python bench/scale_parts.py sync URL FILE` is
another process's key sync: the instance's stored keys become those of FILE.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

INSTANCE = "scale"
MODELS = ("gpt-4o-mini", "gpt-4o")
TOKEN = "gw-scale-token-0123456789abcdef"
ONE = "one"
"""A second instance with a single key: the CPU per request of a 1-key pool, same process."""
ONE_TOKEN = "gw-one-token-0123456789abcdef00"
REQUEST_BODY = json.dumps(
    {"model": MODELS[0], "messages": [{"role": "user", "content": "hi"}]}
).encode()
LAG_METRIC = "llmgateway_event_loop_lag_seconds"
OWN_LAG_METRIC = "llmgateway_event_loop_own_lag_seconds"
"""Of each lag, the part the loop's thread did not spend waiting for a CPU (Linux)."""
PROBE_DELAY = 0.005
"""Seconds the upstream takes to answer anything (a close provider's round trip)."""
PEAK_PATH = "/-/peak"
"""The upstream's own endpoint: its peak of requests in flight (reset on each read)."""


def make_keys(count: int, start: int = 0) -> list[str]:
    """`count` distinct, deterministic keys (numbered from `start`)."""
    return [
        f"sk-scale-{i:07d}-{(i * 2654435761) % 2**32:08x}abcdef"
        for i in range(start, start + count)
    ]


def write_key_file(workdir: Path, keys: Sequence[str], instance: str = INSTANCE) -> Path:
    """Write an instance's one key file; returns its folder."""
    folder = workdir / "keys" / instance
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keys.txt").write_text("\n".join(keys) + "\n")
    return folder


def staged_key_file(
    workdir: Path, keys: Sequence[str], instance: str = INSTANCE
) -> Callable[[], None]:
    """Write an instance's next key file beside its folder; the callable moves it in place.

    The move is one rename, as a deploy would do it: writing 4 MB of keys
    during a window would stall the bench's own loop, which times the stream.
    """
    staged = workdir / f"{instance}.next-keys"
    staged.write_text("\n".join(keys) + "\n")
    target = workdir / "keys" / instance / "keys.txt"
    return lambda: os.replace(staged, target)


def write_config(
    workdir: Path, port: int, upstream: str, database_url: str, *, keeper: bool
) -> Path:
    """The gateway's config: `openai_like` instances with two models on `upstream`.

    `scale` holds the N keys; `one` a single key (for the CPU comparison).
    """
    keeper_section: dict[str, object] = {"enabled": keeper}
    if keeper:
        keeper_section.update(keys_sync_interval="10s", check_interval="1s")
    config = {
        "server": {"host": "127.0.0.1", "port": port, "admin_token": ""},
        "database": {"url": database_url},
        "keeper": keeper_section,
        "logging": {"level": "warning", "format": "console", "access_log": False},
        "providers": {
            name: {
                "provider_type": "openai_like",
                "api_base_url": upstream,
                "keys_path": f"{workdir / 'keys' / name}/",
                "default_model": MODELS[0],
                "models": {model: {} for model in MODELS},
                "access_control": {"gateway_access_token": token},
            }
            for name, token in ((INSTANCE, TOKEN), (ONE, ONE_TOKEN))
        },
    }
    path = workdir / ("providers-keeper.yaml" if keeper else "providers.yaml")
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    return path


async def seed_statuses(database_url: str) -> int:
    """Give every stored row a checked status through the store API; returns the rows.

    96% valid, 2% invalid_key, 1% no_quota, 1% rate_limited (cooling for an
    hour); every next check a day away, so the keeper finds nothing due.
    """
    from llmgateway.config.schemas import DatabaseConfig
    from llmgateway.core.constants import ErrorReason, Status
    from llmgateway.store import open_store

    store = open_store(DatabaseConfig(url=database_url, pool_min_size=1, pool_max_size=4))
    await store.open()
    try:
        records = await store.load_records(INSTANCE)
        now = datetime.now(UTC)
        checked = now - timedelta(hours=1)
        later = now + timedelta(days=1)
        out = []
        for index, record in enumerate(records):
            bucket = index % 100
            status, reason, code, cool = Status.VALID, None, 200, None
            if bucket < 2:
                status, reason, code = Status.INVALID_KEY, ErrorReason.INVALID_KEY, 401
            elif bucket == 2:
                status, reason, code = Status.NO_QUOTA, ErrorReason.NO_QUOTA, 429
            elif bucket == 3:
                status, reason, code = Status.RATE_LIMITED, ErrorReason.RATE_LIMITED, 429
                cool = now + timedelta(hours=1)
            out.append(
                replace(
                    record,
                    status=status,
                    reason=reason,
                    status_code=code,
                    last_checked_at=checked,
                    next_check_at=later,
                    cooldown_until=cool,
                    message="" if reason is None else f"{status.value} seen by the bench",
                )
            )
        for start in range(0, len(out), 5000):
            await store.record(out[start : start + 5000])
        return len(out)
    finally:
        await store.close()


async def external_sync(
    database_url: str, keys: Sequence[str], cpus: str | None = None
) -> tuple[int, int]:
    """Another process's key sync through the store API: the stored keys become `keys`.

    It runs in a process of its own (`scale_parts.py sync URL FILE`), as another
    gateway's would: in the bench's process its work would delay the stream's client.
    `cpus` (as taskset takes them) keeps it off the gateway's CPUs, as another
    gateway's host or core would be.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as file:
        file.write("\n".join(keys) + "\n")
    pin = ["taskset", "-c", cpus] if cpus else []
    try:
        child = await asyncio.create_subprocess_exec(
            *pin, sys.executable, __file__, "sync", database_url, file.name, stdout=subprocess.PIPE
        )
        out, _ = await child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"the external key sync failed (exit {child.returncode})")
        added, removed = json.loads(out)
        return int(added), int(removed)
    finally:
        os.unlink(file.name)


async def _sync_from_file(database_url: str, keys: list[str]) -> tuple[int, int]:
    from llmgateway.config.schemas import DatabaseConfig
    from llmgateway.store import open_store

    store = open_store(DatabaseConfig(url=database_url, pool_min_size=1, pool_max_size=4))
    await store.open()
    try:
        report = await store.sync_keys(INSTANCE, keys, MODELS, datetime.now(UTC))
        return report.added, report.removed
    finally:
        await store.close()


@dataclass(slots=True)
class Stream:
    """An open-loop stream of proxied requests: one sent every 1/`rate` s, whatever came back.

    Latency counts from the moment a request was due, so a stalled gateway
    shows in full (no coordinated omission).
    """

    url: str
    rate: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Send until `stop` is set, then wait for the requests in flight."""
        period = 1.0 / self.rate
        start = time.perf_counter()
        sent = 0
        tasks: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            due = start + sent * period
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._one(session, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        if tasks:
            await asyncio.gather(*tasks)

    async def _one(self, session: aiohttp.ClientSession, due: float) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        try:
            async with session.post(self.url, data=REQUEST_BODY, headers=headers) as answer:
                await answer.read()
                if answer.status != 200:
                    self.errors += 1
        except aiohttp.ClientError:
            self.errors += 1
        self.latencies.append(time.perf_counter() - due)


def percentile(values: Sequence[float], share: float) -> float:
    """The `share` (0..1) percentile of `values` (nearest rank); 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(round(share * len(ordered) + 0.5) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


async def under_stream(
    session: aiohttp.ClientSession,
    gateway: str,
    rate: float,
    operation: Callable[[], Awaitable[object]] | None,
    *,
    idle: float = 3.0,
    lead: float = 0.5,
) -> tuple[Stream, list[float]]:
    """Run `operation` (or nothing for `idle` s) while a steady stream goes through.

    Returns the stream and the operation's durations. The stream starts
    `lead` seconds before and ends `lead` seconds after the operation.
    """
    stream = Stream(f"{gateway}/v1/chat/completions", rate)
    stop = asyncio.Event()
    runner = asyncio.create_task(stream.run(session, stop))
    await asyncio.sleep(lead)
    durations: list[float] = []
    if operation is None:
        await asyncio.sleep(idle)
    else:
        start = time.perf_counter()
        await operation()
        durations.append(time.perf_counter() - start)
    await asyncio.sleep(lead)
    stop.set()
    await runner
    return stream, durations


def lag_buckets(text: str, metric: str = LAG_METRIC) -> dict[float, float]:
    """The cumulative buckets of an event-loop lag histogram in a /metrics body ({} if absent)."""
    buckets: dict[float, float] = {}
    prefix = f"{metric}_bucket{{"
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, value = line.rsplit(" ", 1)
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(value)
    return buckets


def max_lag_bound(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The smallest bucket bound covering every lag observed between two readings."""
    if not after:
        return None
    total = after[float("inf")] - before.get(float("inf"), 0.0)
    for bound in sorted(after):
        if after[bound] - before.get(bound, 0.0) >= total:
            return bound
    return float("inf")


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, int, int, int]:
    """Run `argv`: (wall seconds, exit code, max RSS in KiB, bytes printed)."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert process.stdout is not None
    printed = 0
    while chunk := process.stdout.read(1 << 16):
        printed += len(chunk)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, process.returncode, usage.ru_maxrss, printed


def hwm_kib(pid: int) -> int:
    """Peak resident set size of `pid` in KiB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def serve_upstream(port: int) -> None:
    """Serve the fixed chat completion on 127.0.0.1:`port` until killed."""
    import uvloop
    from aiohttp import web
    from nginx_upstream import completion_body

    body = completion_body().encode()
    flight = {"now": 0, "peak": 0}

    async def answer(request: web.Request) -> web.Response:
        flight["now"] += 1
        flight["peak"] = max(flight["peak"], flight["now"])
        try:
            await request.read()
            await asyncio.sleep(PROBE_DELAY)  # an upstream's round trip: probes overlap
            return web.Response(body=body, content_type="application/json")
        finally:
            flight["now"] -= 1

    async def peak(request: web.Request) -> web.Response:
        """The most requests in flight at once since the last call (which resets it)."""
        seen, flight["peak"] = flight["peak"], flight["now"]
        return web.json_response({"peak": seen})

    app = web.Application()
    app.router.add_get(PEAK_PATH, peak)
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


async def walk_pages(base: str) -> dict[str, Any]:
    """Every page of `base`'s `/-/status?keys=1`: pages, rows, seconds, slowest page (ms)."""
    begin = time.perf_counter()
    cursor: str | None = None
    pages = rows = 0
    slowest = 0.0
    async with aiohttp.ClientSession() as session:
        while True:
            path = "/-/status?keys=1&limit=1000" + (f"&cursor={cursor}" if cursor else "")
            sent = time.perf_counter()
            async with session.get(base + path) as answer:
                body = await answer.read()
            slowest = max(slowest, time.perf_counter() - sent)
            document = json.loads(body)
            pages += 1
            rows += sum(len(p.get("keys", [])) for p in document["providers"].values())
            cursor = document.get("next_cursor")
            if not cursor:
                break
    return {
        "pages": pages,
        "rows": rows,
        "seconds": time.perf_counter() - begin,
        "slowest_page_ms": slowest * 1000,
    }


async def walk_elsewhere(base: str, cpus: str | None = None) -> dict[str, Any]:
    """`walk_pages` in a process of its own, on `cpus` (taskset's list) when given.

    An operator's script walks the pages from another process; walked from
    the bench's own loop, decoding each page (a 200 KB document) would hold
    back the steady stream that loop also times.
    """
    pin = ["taskset", "-c", cpus] if cpus else []
    child = await asyncio.create_subprocess_exec(
        *pin, sys.executable, __file__, "walk", base, stdout=subprocess.PIPE
    )
    out, _ = await child.communicate()
    if child.returncode:
        raise RuntimeError(f"page walk exited with {child.returncode}")
    result: dict[str, Any] = json.loads(out)
    return result


if __name__ == "__main__":
    if sys.argv[1] == "walk":
        print(json.dumps(asyncio.run(walk_pages(sys.argv[2]))))
    elif sys.argv[1] == "sync":
        keys = Path(sys.argv[3]).read_text().split()
        print(json.dumps(asyncio.run(_sync_from_file(sys.argv[2], keys))))
    else:
        serve_upstream(int(sys.argv[1]))
