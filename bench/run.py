"""llmgateway's benchmark: direct-to-nginx vs the bare proxy vs the gateway, in one run.

Run from the repository root: `.venv/bin/python bench/run.py` (`make bench`).
Environment knobs (see bench/README.md):

  BENCH_DURATION     seconds per wrk run (default 10; 2 for a smoke run)
  BENCH_CONNECTIONS  wrk concurrency levels (default "1,16,64")
  BENCH_STREAMS      sequential streams per stream-client run (default 300)
  BENCH_LONG         requests in the memory run (default 200000; the issue's figure is 1000000)
  BENCH_WARMUP       warm-up seconds per target and mode (default 1)
  BENCH_PACE_MS      gap between chunks of the paced upstream (default 2)
  BENCH_LOAD_CPU / BENCH_SERVER_CPU   cores for wrk+nginx and for the server (default 0 / 1)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path

from load import StreamResult, Target, WrkResult, run_streams, run_wrk
from nginx_upstream import NginxUpstream
from processes import (
    BENCH_DIR,
    REPO_DIR,
    Server,
    bare_proxy,
    ensure_tools,
    free_port,
    gateway,
    rss_kib,
    wait_for_port,
    wait_for_ready,
)
from report import Check, Report, machine_details, render
from setup_files import VALID_KEY, make_keys, write_gateway_files

PATH = "/v1/chat/completions"
MEMORY_FIRST = 10_000
MEMORY_SEGMENT = 10.0


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class Bench:
    """One run: starts every process, measures, stops them, writes the report."""

    def __init__(self) -> None:
        """Read the settings from the environment."""
        self.duration = _env_float("BENCH_DURATION", 10)
        self.connections = [
            int(c) for c in os.environ.get("BENCH_CONNECTIONS", "1,16,64").split(",")
        ]
        self.streams = int(_env_float("BENCH_STREAMS", 300))
        self.long = int(_env_float("BENCH_LONG", 200_000))
        self.warmup = _env_float("BENCH_WARMUP", 1)
        self.pace_ms = _env_float("BENCH_PACE_MS", 2)
        self.load_cpu = int(_env_float("BENCH_LOAD_CPU", 0))
        self.server_cpu = int(_env_float("BENCH_SERVER_CPU", 1))
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-run-"))
        self.keys = make_keys()
        self.nginx = NginxUpstream(free_port(), self.keys.invalid, cpu=self.load_cpu)
        self.servers: list[Server] = []
        self._memory_started = 0.0
        self.report = Report(
            settings={
                "wrk duration s": f"{self.duration:g}",
                "connections": ",".join(map(str, self.connections)),
                "streams per client run": str(self.streams),
                "memory run requests": f"{self.long:,}",
                "cores": f"wrk + nginx + clients on CPU {self.load_cpu}, server on CPU {self.server_cpu}",
            }
        )

    # -- processes -------------------------------------------------------------------------

    def _start(self, server: Server, port: int, ready_url: str | None = None) -> Server:
        env = {**os.environ, "PYTHONPATH": f"{REPO_DIR}{os.pathsep}{BENCH_DIR}"}
        server.start(env=env, cwd=self.workdir)
        self.servers.append(server)
        try:
            if ready_url:
                wait_for_ready(ready_url, server.process, timeout=120.0)
            else:
                wait_for_port(port, server.process, timeout=30.0)
        except RuntimeError as exc:
            raise RuntimeError(f"{server.name} did not start: {exc}\n{server.log_tail()}") from exc
        return server

    def _start_gateway(self, name: str, paced_url: str) -> tuple[Server, int, dict[str, str]]:
        port = free_port()
        folder = self.workdir / name
        folder.mkdir()
        files = write_gateway_files(folder, port, self.nginx.base_url, paced_url, self.keys)
        server = gateway(files.config, self.server_cpu, folder / "gateway.log")
        self._start(server, port, ready_url=f"http://127.0.0.1:{port}/-/ready")
        return server, port, files.tokens

    def _stop(self, server: Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    # -- measuring -------------------------------------------------------------------------

    def _wrk(self, target: Target, stream: bool, conns: int, duration: float) -> WrkResult:
        return run_wrk(
            target, stream=stream, connections=conns, duration=duration,
            nginx_pid=self.nginx.pid, cpu=self.load_cpu,
        )  # fmt: skip

    def _print(self, result: WrkResult) -> None:
        cpu = result.cpu_us_per_request
        print(
            f"  {result.mode:4} c={result.connections:<3} {result.target:8} {result.rps:9,.0f} req/s"
            f"  p50 {result.p50_us / 1000:6.2f} ms  p99 {result.p99_us / 1000:6.2f} ms"
            f"  err {result.errors:<5} cpu/req {'-' if cpu is None else f'{cpu:.0f} µs':>8}"
            f"  load core {result.load_core_pct:.0f}%",
            flush=True,
        )

    def run(self) -> Path:
        """Measure everything; return the path of the written report."""
        ensure_tools()
        load = Path("/proc/loadavg").read_text().split()[:3]
        self.report.settings["load average at start"] = " ".join(load)
        if float(load[0]) > 0.5:
            print(f"bench: WARNING load average {load[0]}: other work shares the cores", flush=True)
        self.nginx.start()
        paced_port = free_port()
        paced = Server("paced", [sys.executable, str(BENCH_DIR / "paced_upstream.py"),
                                 str(paced_port), f"{self.pace_ms:g}"],
                       self.load_cpu, self.workdir / "paced.log")  # fmt: skip
        self._start(paced, paced_port)
        paced_url = f"http://127.0.0.1:{paced_port}"
        bare_port = free_port()
        bare = self._start(
            bare_proxy(self.nginx.base_url, bare_port, self.server_cpu, self.workdir / "bare.log"),
            bare_port,
        )
        bare_paced_port = free_port()
        self._start(
            bare_proxy(paced_url, bare_paced_port, self.server_cpu, self.workdir / "bare2.log"),
            bare_paced_port,
        )
        nginx, bare_url = self.nginx.base_url, f"http://127.0.0.1:{bare_port}"
        targets: dict[str, dict[str, Target]] = {
            "json": {
                "direct": Target("direct", nginx + PATH, VALID_KEY, None),
                "bare": Target("bare", bare_url + PATH, VALID_KEY, bare.pid),
            },
            "sse": {
                "direct": Target("direct", nginx + "/sse" + PATH, VALID_KEY, None),
                "bare": Target("bare", bare_url + "/sse" + PATH, VALID_KEY, bare.pid),
            },
        }
        gw: Server | None = None
        tokens: dict[str, str] = {}
        gw_url = ""
        try:
            gw, gw_port, tokens = self._start_gateway("gateway", paced_url)
            gw_url = f"http://127.0.0.1:{gw_port}"
            targets["json"]["gateway"] = Target(
                "gateway", gw_url + PATH, tokens["bench-json"], gw.pid
            )
            targets["sse"]["gateway"] = Target(
                "gateway", gw_url + PATH, tokens["bench-sse"], gw.pid
            )
        except RuntimeError as exc:
            self.report.problems.append(f"gateway: {exc}")
            print(f"bench: GATEWAY FAILED TO START, measuring without it:\n{exc}", flush=True)

        print("bench: warm-up", flush=True)
        for mode, by_target in targets.items():
            for target in by_target.values():
                warm = partial(self._wrk, target, mode == "sse", 16, self.warmup)
                self._guard(warm, f"warm-up {target.label}")

        print("bench: throughput and latency", flush=True)
        for mode, by_target in targets.items():
            for conns in self.connections:
                for target in by_target.values():
                    self._measure(self.report.matrix, target, mode == "sse", conns, self.duration)

        print("bench: streams one at a time", flush=True)
        stream_targets = [
            ("nginx", Target("direct", "", VALID_KEY, None), nginx + "/sse" + PATH),
            ("nginx", Target("bare", "", VALID_KEY, bare.pid), bare_url + "/sse" + PATH),
            ("paced", Target("direct", "", VALID_KEY, None), paced_url + "/paced" + PATH),
            ("paced", Target("bare", "", VALID_KEY, None),
             f"http://127.0.0.1:{bare_paced_port}/paced{PATH}"),
        ]  # fmt: skip
        if gw is not None:
            stream_targets.insert(
                2, ("nginx", Target("gateway", "", tokens["bench-sse"], None), gw_url + PATH)
            )
            stream_targets.append(
                ("paced", Target("gateway", "", tokens["bench-paced"], None), gw_url + PATH)
            )
        for upstream, target, url in stream_targets:
            count = self.streams if upstream == "nginx" else max(10, self.streams // 10)
            self._guard(
                partial(self._streams, target, url, count, upstream), f"streams {target.label}"
            )

        if gw is not None:
            print("bench: key pool, 1 key vs 10,000 keys (30% invalid)", flush=True)
            one = Target("gw 1 key", gw_url + PATH, tokens["bench-json"], gw.pid)
            pool = Target("gw pool", gw_url + PATH, tokens["bench-pool"], gw.pid)
            for target in (one, pool):
                self._measure(self.report.pool, target, False, 16, self.duration)
            self._stop(gw)
            self._guard(lambda: self._memory(paced_url), "memory")
        self._checks()
        return self._write()

    def _guard(self, step: Callable[[], object], what: str) -> None:
        try:
            step()
        except RuntimeError as exc:
            self.report.problems.append(f"{what}: {exc}")
            print(f"bench: {what} FAILED: {exc}", flush=True)

    def _measure(
        self, into: list[WrkResult], target: Target, stream: bool, conns: int, duration: float
    ) -> None:
        def step() -> None:
            result = self._wrk(target, stream, conns, duration)
            into.append(result)
            self._print(result)

        self._guard(step, f"{target.label} {'sse' if stream else 'json'} c={conns}")

    def _streams(self, target: Target, url: str, count: int, upstream: str) -> None:
        result: StreamResult = run_streams(target, url, count, self.load_cpu, upstream)
        self.report.streams.append(result)
        print(
            f"  {upstream:5} {target.label:8} first chunk p50 {result.first_p50_us / 1000:.2f} ms"
            f" p99 {result.first_p99_us / 1000:.2f} ms  full p50 {result.end_p50_us / 1000:.2f} ms"
            f"  reads/stream {result.reads_mean:.1f}  non-200 {result.non_200}",
            flush=True,
        )

    def _memory(self, paced_url: str) -> None:
        print(
            f"bench: memory, fresh gateway, {MEMORY_FIRST:,} then {self.long:,} requests",
            flush=True,
        )
        gw, port, tokens = self._start_gateway("gateway-memory", paced_url)
        self._memory_started = time.monotonic()
        target = Target("gw pool", f"http://127.0.0.1:{port}{PATH}", tokens["bench-pool"], gw.pid)
        self.report.memory.append(("start", 0, rss_kib(gw.pid), 0.0))
        served = 0
        for goal in (MEMORY_FIRST, self.long):
            cpu = 0.0
            start = served
            while served < goal:
                # wrk runs for a duration, not a count: short segments until the goal is passed.
                rate = (
                    served / max(1.0, time.monotonic() - self._memory_started) if served else 3000
                )
                seconds = min(MEMORY_SEGMENT, max(1.0, (goal - served) / max(rate, 100)))
                result = self._wrk(target, False, 16, seconds)
                served += result.requests
                cpu += result.server_cpu or 0.0
                self._print(result)
            if served > start:
                per_request = cpu / (served - start) * 1e6
                self.report.memory.append(
                    (f"{goal:,} requests", served, rss_kib(gw.pid), per_request)
                )
        self._stop(gw)

    # -- verdicts --------------------------------------------------------------------------

    def _find(self, rows: list[WrkResult], target: str, mode: str, conns: int) -> WrkResult | None:
        return next(
            (r for r in rows if (r.target, r.mode, r.connections) == (target, mode, conns)), None
        )

    def _checks(self) -> None:
        checks = self.report.checks
        m = self.report.matrix
        gw16, bare16 = self._find(m, "gateway", "json", 16), self._find(m, "bare", "json", 16)
        gw1, direct1 = self._find(m, "gateway", "json", 1), self._find(m, "direct", "json", 1)
        if gw16:
            checks.append(
                Check("json, 16 conns: ≥ 3,000 req/s", f"{gw16.rps:,.0f} req/s", gw16.rps >= 3000)
            )
        if gw16 and bare16:
            share = gw16.rps / bare16.rps * 100
            checks.append(
                Check("json, 16 conns: ≥ 70% of bare proxy", f"{share:.0f}%", share >= 70)
            )
        if gw1 and direct1:
            p50 = (gw1.p50_us - direct1.p50_us) / 1000
            p99 = (gw1.p99_us - direct1.p99_us) / 1000
            checks.append(Check("json, 1 conn: p50 added ≤ 0.5 ms", f"{p50:+.2f} ms", p50 <= 0.5))
            checks.append(Check("json, 1 conn: p99 added ≤ 2 ms", f"{p99:+.2f} ms", p99 <= 2.0))
        s = {(x.upstream, x.target): x for x in self.report.streams}
        if ("nginx", "gateway") in s and ("nginx", "direct") in s:
            added = (s["nginx", "gateway"].first_p50_us - s["nginx", "direct"].first_p50_us) / 1000
            checks.append(
                Check("stream: first chunk added ≤ 1 ms (p50)", f"{added:+.2f} ms", added <= 1.0)
            )
        if ("paced", "gateway") in s and ("paced", "direct") in s:
            gw_reads, direct_reads = (
                s["paced", "gateway"].reads_mean,
                s["paced", "direct"].reads_mean,
            )
            checks.append(Check(
                "stream: chunks relayed as they arrive (paced reads/stream vs direct)",
                f"{gw_reads:.1f} vs {direct_reads:.1f}", gw_reads >= 0.9 * direct_reads,
            ))  # fmt: skip
        one, pool = self._find(self.report.pool, "gw 1 key", "json", 16), self._find(
            self.report.pool, "gw pool", "json", 16
        )
        if one and pool:
            cost = (1 - pool.rps / one.rps) * 100
            checks.append(
                Check(
                    "10,000 keys, 30% invalid: ≤ 10% throughput cost", f"{cost:+.1f}%", cost <= 10
                )
            )
        if len(self.report.memory) >= 3:
            first, last = self.report.memory[1], self.report.memory[-1]
            growth = (last[2] / first[2] - 1) * 100
            checks.append(Check(
                f"RSS after {last[1]:,} within 10% of after {first[1]:,}",
                f"{first[2] / 1024:.1f} → {last[2] / 1024:.1f} MiB ({growth:+.1f}%)", growth <= 10,
            ))  # fmt: skip

    def _write(self) -> Path:
        now = datetime.now()
        text = render(self.report, machine_details(), now.strftime("%Y-%m-%d %H:%M"))
        out = BENCH_DIR / "results" / f"{now:%Y-%m-%d_%H%M}.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text)
        print("\n" + text, flush=True)
        print(f"bench: written {out.relative_to(REPO_DIR)}", flush=True)
        return out

    def close(self) -> None:
        """Stop every process this run started and remove the temporary files."""
        for server in reversed(self.servers):
            server.stop()
        self.nginx.stop()
        time.sleep(0.1)
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)


def main() -> int:
    """Run the bench; non-zero exit only when the harness itself broke."""
    bench = Bench()
    try:
        bench.run()
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
