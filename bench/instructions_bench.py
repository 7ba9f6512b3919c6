"""Instructions per proxied request with N keys and with 1 key, counted by callgrind.

Usage: .venv/bin/python bench/instructions_bench.py [--keys 100000] [--engine sqlite|postgres]
       [--requests 500] [--rounds 4] [--label ...]

CPU time per request on a shared machine moves by ±10% between runs with no code
change, more than the 3% the comparison needs to resolve. Instructions do not
move: the gateway runs under `valgrind --tool=callgrind` (instrumentation off
through start-up, on for the requests) with a fixed hash seed, and for each
round the counters are zeroed, `--requests` requests are proxied one after the
other over one connection, and the count is dumped and read.

Two comparisons, each in ABBA order across rounds:

- in one process: the instance holding N keys against the instance holding one
  key (the pool's size on the request path: the pick, the route);
- between processes: the N-key gateway against a gateway that holds only the
  one-key instance (adds what the size of the heap costs a request: garbage
  collection, caches).

Each is given twice: as counted, and net of the process's idle work. A
window as long as the round follows it, with no request; its instructions per
second times the round's length are taken off (under callgrind a round lasts
some 50 times longer than it would, so timers and polls weigh 50 times more).

The report goes to bench/results/<date>_<time>-instructions[-label].md (+ .json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import scale_parts as parts
from processes import REPO_DIR, free_port, gateway, result_path, wait_for_ready
from scratch import scratch

BODY = json.dumps(
    {
        "model": parts.MODELS[0],
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Say hello in one short sentence, please."},
        ],
        "temperature": 0.2,
        "max_tokens": 64,
        "stream": False,
    }
).encode()
WARM_UP = 200
COMPARISONS = {
    "same_process": "one process, two instances",
    "same_process_net": "one process, net of idle",
    "separate_processes": "two processes",
    "separate_processes_net": "two processes, net of idle",
}
READY_TIMEOUT = 1800.0


class Counted:
    """A gateway under callgrind, its counters read through `callgrind_control`."""

    def __init__(self, config: Path, workdir: Path, name: str, env: dict[str, str]) -> None:
        self.out = workdir / f"callgrind-{name}.out"
        wrapper = (
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={self.out}",
        )
        self.server = gateway(config, "1", workdir / f"{name}.log", wrapper)
        self.env = {**env, "PYTHONHASHSEED": "0"}
        self.workdir = workdir

    def start(self, base: str) -> float:
        """Start under callgrind; seconds until ready."""
        begin = time.perf_counter()
        self.server.start(env=self.env, cwd=self.workdir)
        try:
            wait_for_ready(f"{base}/-/ready", self.server.process, READY_TIMEOUT)
        except RuntimeError:
            print(self.server.log_tail(), file=sys.stderr)
            raise
        return time.perf_counter() - begin

    def control(self, *flags: str) -> None:
        """`callgrind_control FLAGS PID`."""
        subprocess.run(
            ["callgrind_control", *flags, str(self.server.pid)],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def dumped(self) -> int:
        """Dump the counters (zeroing them) and return the instructions since the last zero."""
        before = set(self.workdir.glob(f"{self.out.name}*"))
        self.control("--dump")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            new = set(self.workdir.glob(f"{self.out.name}*")) - before
            for path in new:
                for line in path.read_text().splitlines():
                    if line.startswith("totals:") or line.startswith("summary:"):
                        return int(line.split()[1])
            time.sleep(0.2)
        raise RuntimeError("callgrind wrote no dump")

    def stop(self) -> None:
        """Stop the gateway."""
        self.server.stop()


async def proxy(session: aiohttp.ClientSession, url: str, token: str, count: int) -> None:
    """`count` chat completions one after the other; each must answer 200."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for _ in range(count):
        async with session.post(url, data=BODY, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"{url} answered {response.status}")


async def one_round(
    counted: Counted, session: aiohttp.ClientSession, url: str, token: str, requests: int
) -> tuple[float, float]:
    """Instructions per request of one round: as counted, and net of the process's idle work.

    The process works while idle too (timers, the loop-lag monitor, the
    change-feed poll), and under callgrind a round lasts some 50 times longer
    than it would, so that work weighs 50 times more and varies with the
    round's length. An idle window as long as the round follows it; its rate
    times the round's length is taken off.
    """
    started = time.perf_counter()
    await asyncio.to_thread(counted.control, "--zero")
    await proxy(session, url, token, requests)
    total = await asyncio.to_thread(counted.dumped)
    window = time.perf_counter() - started
    started = time.perf_counter()
    await asyncio.to_thread(counted.control, "--zero")
    await asyncio.sleep(window)
    idle = await asyncio.to_thread(counted.dumped)
    idle_rate = idle / (time.perf_counter() - started)
    return total / requests, (total - idle_rate * window) / requests


async def settled(session: aiohttp.ClientSession, base: str) -> None:
    """Return once the process's first periodic reconciliation is over (PostgreSQL).

    A process sharing its store follows it, and reloads every record 30 s
    after it starts, then again after a pause of at least 50 times the
    pass's length. Under callgrind a pass at 100,000 keys lasts minutes and
    would land in a round; after it, the next is far beyond the bench. The
    first reconciliation is the resync as the change feed connects.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        async with session.get(f"{base}/-/status") as response:
            document = await response.json()
        view = document.get("process", {}).get("store_view")
        if view is None or view["reconciliations"] >= 2:
            return
        await asyncio.sleep(5)
    raise RuntimeError("the first periodic reconciliation did not end")


async def per_request(
    counted: Counted,
    session: aiohttp.ClientSession,
    base: str,
    tokens: dict[str, str],
    rounds: int,
    requests: int,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Instructions per request of each token's instance, `rounds` rounds in ABBA order.

    Two sets of samples: as counted, and net of idle work (see `one_round`).
    """
    url = f"{base}/v1/chat/completions"
    names = list(tokens)
    for name in names:
        await proxy(session, url, tokens[name], WARM_UP)
    await settled(session, base)
    counted.control("--instr=on")
    gross: dict[str, list[float]] = {name: [] for name in names}
    net: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            counted_, idle_free = await one_round(counted, session, url, tokens[name], requests)
            gross[name].append(counted_)
            net[name].append(idle_free)
            print(
                f"    {name}: {counted_:,.0f} instructions/request, {idle_free:,.0f} net of idle",
                flush=True,
            )
    counted.control("--instr=off")
    return gross, net


def one_key_config(config: Path) -> Path:
    """The same config holding only the one-key instance."""
    document = json.loads(config.read_text())
    del document["providers"][parts.INSTANCE]
    path = config.with_name("providers-one.yaml")
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


async def bench_one(engine: str, n: int, rounds: int, requests: int) -> dict[str, Any]:
    """Both comparisons for one engine at `n` keys."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    figures: dict[str, Any] = {"engine": engine, "keys": n, "requests": requests}
    async with scratch(engine, n, "instructions") as setup:
        workdir, env = setup.workdir, setup.env
        db_url, upstream_url = setup.db_url, setup.upstream_url
        config = parts.write_config(workdir, port, upstream_url, db_url, keeper=False)
        seeding = gateway(config, "1", workdir / "seed.log")  # the start-up sync fills the store
        seeding.start(env=env, cwd=workdir)
        wait_for_ready(f"{base}/-/ready", seeding.process, 600)
        seeding.stop()
        await parts.seed_statuses(db_url)
        timeout = aiohttp.ClientTimeout(total=600)
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            both = Counted(config, workdir, "both", env)
            figures["ready_under_callgrind_s"] = both.start(base)
            try:
                print("  one process: N-key instance, 1-key instance", flush=True)
                figures["same_process"], figures["same_process_net"] = await per_request(
                    both,
                    session,
                    base,
                    {"n_keys": parts.TOKEN, "one_key": parts.ONE_TOKEN},
                    rounds,
                    requests,
                )
            finally:
                both.stop()
            print("  two processes: N-key gateway, 1-key gateway", flush=True)
            separate: dict[str, list[float]] = {"n_keys": [], "one_key": []}
            separate_net: dict[str, list[float]] = {"n_keys": [], "one_key": []}
            for index in range(rounds):
                order = ["n_keys", "one_key"] if index % 2 == 0 else ["one_key", "n_keys"]
                for which in order:
                    counted = Counted(
                        config if which == "n_keys" else one_key_config(config),
                        workdir,
                        f"{which}-{index}",
                        env,
                    )
                    counted.start(base)
                    token = parts.TOKEN if which == "n_keys" else parts.ONE_TOKEN
                    try:  # a session of its own: no connection kept to the last process
                        async with aiohttp.ClientSession(
                            timeout=timeout, connector=aiohttp.TCPConnector(limit=1)
                        ) as own:
                            got, got_net = await per_request(
                                counted, own, base, {which: token}, 1, requests
                            )
                    finally:
                        counted.stop()
                    separate[which].extend(got[which])
                    separate_net[which].extend(got_net[which])
            figures["separate_processes"] = separate
            figures["separate_processes_net"] = separate_net
    for comparison in COMPARISONS:
        samples = figures[comparison]
        medians = {name: statistics.median(values) for name, values in samples.items()}
        figures[f"{comparison}_ratio"] = medians["n_keys"] / medians["one_key"]
        print(
            f"  {comparison}: {n:,} keys {medians['n_keys']:,.0f}, 1 key "
            f"{medians['one_key']:,.0f} instructions/request "
            f"({(figures[f'{comparison}_ratio'] - 1) * 100:+.2f}%)",
            flush=True,
        )
    return figures


def write_report(path: Path, results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The Markdown report and its JSON beside it."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_DIR
    ).stdout.strip()
    lines = [
        f"# Instructions per request ({args.label or 'instructions'})",
        "",
        f"commit {commit}; Python {sys.version.split()[0]}; callgrind "
        f"(`valgrind --tool=callgrind`), PYTHONHASHSEED=0; {args.requests} requests per round, "
        "one connection, after a warm-up of "
        f"{WARM_UP}; {args.rounds} rounds per side, ABBA.",
        "",
        "| engine | keys | comparison | N keys (median) | 1 key (median) | difference "
        "| samples N / 1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for figures in results:
        for comparison, label in COMPARISONS.items():
            samples = figures[comparison]
            lines.append(
                f"| {figures['engine']} | {figures['keys']:,} | {label} | "
                f"{statistics.median(samples['n_keys']):,.0f} | "
                f"{statistics.median(samples['one_key']):,.0f} | "
                f"{(figures[f'{comparison}_ratio'] - 1) * 100:+.2f}% | "
                f"{', '.join(f'{v:,.0f}' for v in samples['n_keys'])} / "
                f"{', '.join(f'{v:,.0f}' for v in samples['one_key'])} |"
            )
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    """Parse the arguments, count every engine, write the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--requests", type=int, default=500, help="requests per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per side")
    parser.add_argument("--label", default="", help="suffix of the report's file name")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("needs valgrind (apt-get install valgrind)")
    results = [
        asyncio.run(bench_one(engine, args.keys, args.rounds, args.requests))
        for engine in args.engine or ["sqlite", "postgres"]
    ]
    path = result_path("instructions", args.label)
    write_report(path, results, args)
    print(f"report: {path}")


if __name__ == "__main__":
    main()
