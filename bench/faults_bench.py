"""Processes under faults, timed: how fast changes reach every worker, how fast processes go.

For each engine (SQLite file, fresh PostgreSQL database) it starts
`llmgateway serve --workers 2` (keeper on, key files re-read every second)
in front of a tiny local upstream, and measures, `--count` times each:

- key removed / key added: from the key sync that took the file change in
  (the syncing worker's `keys synced` log line) until both workers'
  `/-/status` show it (polled every 10 ms on fresh connections);
- supervisor SIGKILLed: until both workers are gone, and until the port can
  be bound again;
- SIGTERM at a random moment of the first 3 s (start-up included): until the
  supervisor exited, with its exit code.

    .venv/bin/python bench/faults_bench.py [--count 10] [--engines sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TOKEN = "bench-faults-token-0123456789"
MODEL = "gpt-4o-mini"
BOUND = 60.0
"""Seconds any one measurement may take before the bench gives up (something is broken)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and not _gone(int(entry.name)):
                found.append(int(entry.name))
    return found


@asynccontextmanager
async def _upstream() -> AsyncIterator[str]:
    """Answers every chat completion (and probe) with 200."""

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Rig:
    """One engine's configuration, key file and gateway process."""

    def __init__(self, folder: Path, upstream: str, database_url: str) -> None:
        self.folder = folder
        self.port = _free_port()
        self.keys_file = folder / "keys" / "main" / "keys.txt"
        self.keys_file.parent.mkdir(parents=True)
        self.config = folder / "providers.yaml"
        self.config.write_text(
            f"""
server: {{host: 127.0.0.1, port: {self.port}, workers: 2, shutdown_timeout: 5s}}
database: {{url: "{database_url}", pool_max_size: 3}}
worker: {{enabled: true, keys_sync_interval: 1s, check_interval: 1s}}
logging: {{level: info}}
providers:
  main:
    provider_type: openai_like
    api_base_url: "{upstream}"
    keys_path: "{self.keys_file.parent}"
    default_model: {MODEL}
    models: {{{MODEL}: {{}}}}
    access_control: {{gateway_access_token: {TOKEN}}}
""",
            encoding="utf-8",
        )
        self.keys = [_key() for _ in range(20)]
        self.write_keys()
        self.process: asyncio.subprocess.Process | None = None
        self.log = folder / "serve.log"

    def write_keys(self) -> None:
        aside = self.keys_file.with_name(".keys.new")
        aside.write_text("".join(f"{k}\n" for k in self.keys), encoding="utf-8")
        aside.replace(self.keys_file)

    async def start(self) -> asyncio.subprocess.Process:
        with self.log.open("ab") as sink:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "llmgateway",
                "serve",
                "--config",
                str(self.config),
                cwd=str(self.folder),
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self.process

    async def healthy(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{self.port}/-/ready") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.process.wait()

    async def status(self) -> tuple[int, set[str]]:
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"http://127.0.0.1:{self.port}/-/status?keys=1") as response,
        ):
            document: dict[str, Any] = await response.json()
        keys = {k["key"] for k in document["providers"]["main"]["keys"]}
        return document["process"]["pid"], keys

    def synced_at(self, after: float) -> float | None:
        """The time of the first `keys synced` line logged after epoch `after`."""
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if "keys synced" in line:
                stamp = datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
                if stamp.timestamp() >= after:
                    return stamp.timestamp()
        return None


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110 (another process's state: no event to await)
        await asyncio.sleep(0.005)


def _key() -> str:
    """A key whose mask (first and last four characters) no other key shares."""
    tag = uuid.uuid4().hex
    return f"{tag[:4]}-bench-faults-0123456789-{tag[4:8]}"


def _mask(key: str) -> str:
    return key[:4] + "..." + key[-4:]


async def _propagation(rig: Rig, remove: bool) -> float:
    """Seconds from the sync that took a key-file change in until both workers show it."""
    if remove:
        key = rig.keys.pop(0)
    else:
        key = _key()
        rig.keys.append(key)

    def done(shown: set[str]) -> bool:
        return (_mask(key) in shown) != remove

    written = time.time()
    rig.write_keys()
    seen: dict[int, float] = {}
    while len(seen) < 2:
        pid, shown = await rig.status()
        if done(shown):
            seen.setdefault(pid, time.time())
        await asyncio.sleep(0.01)
    synced = None
    while synced is None:
        synced = rig.synced_at(written - 0.01)
        await asyncio.sleep(0.05)
    return max(seen.values()) - synced


async def _supervisor_killed(rig: Rig) -> tuple[float, float]:
    process = await rig.start()
    async with asyncio.timeout(BOUND):
        await rig.healthy()
    workers = _children(process.pid)
    killed = time.monotonic()
    process.kill()
    await process.wait()
    await _until(lambda: all(_gone(w) for w in workers))
    exited = time.monotonic() - killed
    await _until(lambda: _port_free(rig.port))
    return exited, time.monotonic() - killed


async def _sigterm_at_random(rig: Rig, rng: random.Random) -> tuple[float, float, int]:
    process = await rig.start()
    delay = rng.uniform(0.0, 3.0)
    await asyncio.sleep(delay)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = await process.wait()
    return delay, time.monotonic() - sent, code


def _summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: n={len(values)} median={statistics.median(values):.3f} s "
        f"max={max(values):.3f} s"
    )


async def bench_engine(engine: str, count: int, upstream: str, rng: random.Random) -> None:
    with tempfile.TemporaryDirectory(prefix=f"bench-faults-{engine}-") as temp:
        folder = Path(temp)
        database = ""
        if engine == "sqlite":
            url = f"sqlite:///{folder / 'data' / 'gw.db'}"
        else:
            database = f"bench_faults_{uuid.uuid4().hex[:10]}"
            admin = await asyncpg.connect(PG_ADMIN)
            await admin.execute(f'CREATE DATABASE "{database}"')
            await admin.close()
            url = f"postgresql://postgres@127.0.0.1:5432/{database}"
        rig = Rig(folder, upstream, url)
        try:
            await rig.start()
            async with asyncio.timeout(BOUND):
                await rig.healthy()
            removed, added = [], []
            for _ in range(count):
                async with asyncio.timeout(BOUND):
                    removed.append(await _propagation(rig, remove=True))
                async with asyncio.timeout(BOUND):
                    added.append(await _propagation(rig, remove=False))
            await rig.stop()
            print(f"[{engine}] {_summary('key removed, sync -> both workers', removed)}")
            print(f"[{engine}] {_summary('key added, sync -> both workers', added)}")
            kills = [await _supervisor_killed(rig) for _ in range(count)]
            print(
                f"[{engine}] {_summary('supervisor SIGKILL -> workers gone', [k[0] for k in kills])}"
            )
            print(
                f"[{engine}] {_summary('supervisor SIGKILL -> port free', [k[1] for k in kills])}"
            )
            terms = [await _sigterm_at_random(rig, rng) for _ in range(count)]
            codes = sorted({t[2] for t in terms})
            print(
                f"[{engine}] {_summary('SIGTERM at 0-3 s -> exit', [t[1] for t in terms])} "
                f"exit codes {codes}"
            )
        finally:
            if rig.process is not None and rig.process.returncode is None:
                rig.process.kill()
                await rig.process.wait()
            if database:
                admin = await asyncpg.connect(PG_ADMIN)
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    async with _upstream() as upstream:
        for engine in args.engines.split(","):
            await bench_engine(engine, args.count, upstream, rng)


if __name__ == "__main__":
    asyncio.run(main())
