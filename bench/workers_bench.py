"""Throughput of `llmgateway serve --workers 1` vs `--workers 2` on one host.

The gateway (SQLite default store, keeper disabled, logging `warning`, no
access log: the config bench/setup_files.py writes) forwards non-streamed
chat completions to the nginx stand-in. nginx and wrk are pinned to the load
core (`--load-cpu`, default 0); the gateway is not pinned, so two workers can
use both cores while sharing one of them with the load generator.

With `--workers 1` the gateway is one process; with `--workers 2` it is a
supervisor and two worker processes (its children, sharing the port with
SO_REUSEPORT). The gateway's CPU time per request is the sum of utime + stime
(/proc/<pid>/stat) over the supervisor and every worker, read before and after
each wrk run; it should not rise with two workers.

Run from the repository root:

    .venv/bin/python bench/workers_bench.py [--duration 10] [--warmup 2]
        [--connections 64,16] [--workers 1,2] [--rounds 1] [--load-cpu 0]

The table is printed and written to bench/results/<date>_<time>-workers.md
with the machine details.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from load import Target, WrkResult, run_wrk
from nginx_upstream import NginxUpstream
from processes import (
    BENCH_DIR,
    REPO_DIR,
    Server,
    busy_seconds,
    cpu_seconds,
    ensure_tools,
    free_port,
    wait_for_ready,
)
from report import machine_details
from setup_files import VALID_KEY, Keys, write_gateway_files

PATH = "/v1/chat/completions"
INSTANCE = "bench-json"
LISTEN_STATE = "0A"
"""TCP_LISTEN in /proc/net/tcp's `st` column."""


class UnpinnedServer(Server):
    """A Server started as is, without `taskset` (the kernel schedules it on every core)."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        """Prepare (not start) `argv`, output to `log_path`."""
        super().__init__(name, argv, 0, log_path)
        self._argv = list(argv)


@dataclass(frozen=True, slots=True)
class Row:
    """One measured run: wrk's result and the gateway's CPU seconds summed over its processes."""

    round: int
    workers: int
    processes: int
    wrk: WrkResult
    gateway_cpu: float
    busy_cpu: float

    @property
    def cpu_us_per_request(self) -> float:
        """Gateway CPU (supervisor + workers) per request, in microseconds."""
        return self.gateway_cpu / self.wrk.requests * 1e6 if self.wrk.requests else 0.0

    @property
    def gateway_pct(self) -> float:
        """Gateway CPU as a share of one core over the run."""
        return self.gateway_cpu / self.wrk.seconds * 100 if self.wrk.seconds else 0.0

    @property
    def wrk_pct(self) -> float:
        """wrk's own CPU as a share of one core over the run."""
        return self.wrk.wrk_cpu / self.wrk.seconds * 100 if self.wrk.seconds else 0.0

    @property
    def nginx_pct(self) -> float:
        """nginx's CPU as a share of one core over the run."""
        return self.wrk.nginx_cpu / self.wrk.seconds * 100 if self.wrk.seconds else 0.0

    @property
    def other_pct(self) -> float:
        """CPU of every other process on the machine meanwhile (noise), share of one core."""
        rest = self.busy_cpu - self.gateway_cpu - self.wrk.nginx_cpu - self.wrk.wrk_cpu
        return max(0.0, rest) / self.wrk.seconds * 100 if self.wrk.seconds else 0.0


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (children, their children, ...), from /proc."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = [int(c) for c in task.read_text().split()]
            except OSError:  # the task ended between the listing and the read
                continue
            found += children
            pending += children
    return found


def gateway_cpu(pids: list[int]) -> float:
    """utime + stime summed over `pids` (a process that already ended counts 0)."""
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


def listening_pids(pids: list[int], port: int) -> set[int]:
    """Those of `pids` that hold a socket listening on 127.0.0.1:`port`."""
    inodes: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == LISTEN_STATE:
            inodes.add(fields[9])
    holding: set[int] = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        if any(link.removeprefix("socket:[").removesuffix("]") in inodes for link in links):
            holding.add(pid)
    return holding


class WorkersBench:
    """Starts nginx, then for each round and worker count a gateway; measures; stops all."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Take the settings from the parsed command line."""
        self.duration: float = args.duration
        self.warmup: float = args.warmup
        self.connections: list[int] = [int(c) for c in args.connections.split(",")]
        self.workers: list[int] = [int(w) for w in args.workers.split(",")]
        self.rounds: int = args.rounds
        self.load_cpu: int = args.load_cpu
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
        self.nginx = NginxUpstream(free_port(), [], cpu=self.load_cpu)
        self.gateway: Server | None = None
        self.gateway_pids: list[int] = []
        self.rows: list[Row] = []
        self.load_at_start = ""

    # -- processes -------------------------------------------------------------------------

    def _start_gateway(self, workers: int, run: int) -> tuple[int, str]:
        """Start `serve --workers N`; return its port and the bench-json token."""
        folder = self.workdir / f"gateway-{run}-w{workers}"
        folder.mkdir()
        port = free_port()
        # One key per instance: the request path is measured, not a 10,000-key reload.
        keys = Keys(valid=[VALID_KEY], invalid=[], pool_order=[VALID_KEY])
        base = self.nginx.base_url
        files = write_gateway_files(folder, port, base, base, keys)
        argv = [sys.executable, "-m", "llmgateway", "serve", "--config", str(files.config)]
        argv += ["--workers", str(workers)]
        server = UnpinnedServer(f"gateway-w{workers}", argv, folder / "gateway.log")
        env = {**os.environ, "PYTHONPATH": f"{REPO_DIR}{os.pathsep}{BENCH_DIR}"}
        server.start(env=env, cwd=folder)
        self.gateway = server
        self.gateway_pids = [server.pid]
        try:
            wait_for_ready(f"http://127.0.0.1:{port}/-/ready", server.process, timeout=120.0)
            self._wait_for_workers(server, workers, port)
        except RuntimeError as exc:
            raise RuntimeError(f"{server.name} did not start: {exc}\n{server.log_tail()}") from exc
        return port, files.tokens[INSTANCE]

    def _wait_for_workers(self, server: Server, workers: int, port: int) -> None:
        """Block until every process that serves (1, or N children) listens on the port."""
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"exited with {server.process.returncode}")
            children = descendants(server.pid)
            serving = children if workers > 1 else [server.pid]
            if len(serving) >= workers and len(listening_pids(serving, port)) == workers:
                self.gateway_pids = [server.pid, *children]
                return
            time.sleep(0.1)
        raise RuntimeError(f"{workers} listening worker(s) not seen after 60 s")

    def _stop_gateway(self) -> None:
        """SIGINT the gateway (the supervisor forwards it), then SIGKILL any leftover worker."""
        if self.gateway is None:
            return
        self.gateway.stop()
        self.gateway = None
        deadline = time.monotonic() + 10.0
        for pid in self.gateway_pids:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.gateway_pids = []

    # -- measuring -------------------------------------------------------------------------

    def _wrk(self, target: Target, conns: int, duration: float) -> tuple[WrkResult, float, float]:
        """One wrk run with the gateway's summed CPU and the machine's busy CPU around it."""
        pids = list(self.gateway_pids)
        before, busy_before = gateway_cpu(pids), busy_seconds()
        result = run_wrk(
            target, stream=False, connections=conns, duration=duration,
            nginx_pid=self.nginx.pid, cpu=self.load_cpu,
        )  # fmt: skip
        return result, gateway_cpu(pids) - before, busy_seconds() - busy_before

    def run(self) -> Path:
        """Measure every round and worker count; write and return the results file."""
        ensure_tools()
        self.load_at_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        if float(self.load_at_start.split()[0]) > 0.5:
            print(f"bench: WARNING load average {self.load_at_start}: cores are shared", flush=True)
        self.nginx.start()
        for run in range(1, self.rounds + 1):
            for workers in self.workers:
                port, token = self._start_gateway(workers, run)
                print(
                    f"bench: round {run}, --workers {workers}: pids {self.gateway_pids}",
                    flush=True,
                )
                target = Target("gateway", f"http://127.0.0.1:{port}{PATH}", token, None)
                try:
                    self._wrk(target, max(self.connections), self.warmup)
                    for conns in self.connections:
                        result, cpu, busy = self._wrk(target, conns, self.duration)
                        row = Row(run, workers, len(self.gateway_pids), result, cpu, busy)
                        self.rows.append(row)
                        print("  " + _line(row), flush=True)
                finally:
                    self._stop_gateway()
        return self._write()

    def _write(self) -> Path:
        now = datetime.now()
        text = self.render(machine_details(), now)
        out = BENCH_DIR / "results" / f"{now:%Y-%m-%d_%H%M}-workers.md"
        out.parent.mkdir(exist_ok=True)
        with out.open("a") as file:
            file.write(text)
        print("\n" + text, flush=True)
        print(f"bench: written {out.relative_to(REPO_DIR)}", flush=True)
        return out

    def render(self, machine: dict[str, str], now: datetime) -> str:
        """The results as a Markdown section: machine, settings, table."""
        out = [f"# llmgateway bench — workers 1 vs 2 — {now:%Y-%m-%d %H:%M}", "", "## Machine", ""]
        out += [f"- {k}: {v}" for k, v in machine.items()]
        out += ["", "## Settings", ""]
        out += [
            f"- command: `{' '.join(['.venv/bin/python bench/workers_bench.py', *sys.argv[1:]])}`",
            "- gateway: `llmgateway serve --workers N`, not pinned (any core); SQLite store, "
            "keeper.enabled false, logging warning, access_log false, one key",
            f"- load: wrk (1 thread) and nginx pinned to CPU {self.load_cpu}",
            f"- non-streamed JSON, {self.warmup:g} s warm-up at {max(self.connections)} "
            f"connections per gateway start, then {self.duration:g} s per run",
            "- CPU µs/req: utime + stime (/proc/<pid>/stat) summed over the gateway's processes "
            "(the one process, or supervisor + workers) over the run, divided by requests",
            f"- load average at start: {self.load_at_start}",
        ]
        out += ["", "## Throughput: --workers 1 vs 2 (JSON)", ""]
        out += [
            "| round | workers | processes | conns | req/s | p50 ms | p99 ms | errors "
            "| CPU µs/req (gateway) | gateway CPU % | wrk CPU % | nginx CPU % | other % |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            w = r.wrk
            out.append(
                f"| {r.round} | {r.workers} | {r.processes} | {w.connections} | {w.rps:,.0f} | "
                f"{w.p50_us / 1000:.2f} | {w.p99_us / 1000:.2f} | {w.errors} | "
                f"{r.cpu_us_per_request:.0f} | {r.gateway_pct:.0f} | {r.wrk_pct:.0f} | "
                f"{r.nginx_pct:.0f} | {r.other_pct:.0f} |"
            )
        return "\n".join(out) + "\n"

    def close(self) -> None:
        """Stop every process this run started and remove the temporary files."""
        self._stop_gateway()
        self.nginx.stop()
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _line(row: Row) -> str:
    w = row.wrk
    return (
        f"workers {row.workers} c={w.connections:<3} {w.rps:8,.0f} req/s"
        f"  p50 {w.p50_us / 1000:6.2f} ms  p99 {w.p99_us / 1000:6.2f} ms  err {w.errors:<4}"
        f"  gw cpu/req {row.cpu_us_per_request:5.0f} µs  gw {row.gateway_pct:3.0f}%"
        f"  wrk {row.wrk_pct:3.0f}%  nginx {row.nginx_pct:3.0f}%  other {row.other_pct:3.0f}%"
    )


def main() -> int:
    """Parse the command line, run the bench, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per start")
    parser.add_argument("--connections", default="64,16", help="wrk connection counts")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every worker count")
    parser.add_argument("--load-cpu", type=int, default=0, help="core for wrk and nginx")
    bench = WorkersBench(parser.parse_args())
    try:
        bench.run()
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
