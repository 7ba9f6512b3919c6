"""Load generation: wrk runs (with CPU readings around them) and the stream client.

wrk is pinned to the load core and driven by bench/post.lua through
environment variables; its `done` hook prints `BENCHJSON {...}`. Around each
run the CPU time of the server under test and of nginx is read from /proc;
wrk's own CPU comes from wait4's rusage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from processes import BENCH_DIR, busy_seconds, cpu_seconds, rss_kib

LUA = BENCH_DIR / "post.lua"


@dataclass(frozen=True, slots=True)
class Target:
    """Where wrk sends requests and with which credential."""

    label: str
    url: str
    auth: str
    pid: int | None
    """The process whose CPU and RSS are measured (None: direct to nginx)."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: counts, latency (µs), and CPU seconds of each party."""

    target: str
    mode: str
    connections: int
    requests: int
    seconds: float
    errors: int
    p50_us: int
    p99_us: int
    server_cpu: float | None
    nginx_cpu: float
    wrk_cpu: float
    rss_kib: int | None
    other_cpu: float
    """CPU seconds the rest of the machine used meanwhile (other processes: noise)."""

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float | None:
        """CPU time of the server under test per request, in microseconds."""
        if self.server_cpu is None or not self.requests:
            return None
        return self.server_cpu / self.requests * 1e6

    @property
    def load_core_pct(self) -> float:
        """wrk + nginx CPU as a share of one core over the run (the load core's use)."""
        return (self.wrk_cpu + self.nginx_cpu) / self.seconds * 100 if self.seconds else 0.0

    @property
    def other_pct(self) -> float:
        """CPU used by other processes during the run, as a share of one core."""
        return self.other_cpu / self.seconds * 100 if self.seconds else 0.0


def run_wrk(
    target: Target,
    *,
    stream: bool,
    connections: int,
    duration: float,
    nginx_pid: int,
    cpu: int,
) -> WrkResult:
    """Run wrk once against `target` and read CPU before and after."""
    env = {
        **os.environ,
        "BENCH_AUTH": target.auth,
        "BENCH_STREAM": "1" if stream else "0",
    }
    argv = [
        "taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s",
        "--timeout", "10s", "-s", str(LUA), target.url,
    ]  # fmt: skip
    server_before = cpu_seconds(target.pid) if target.pid else None
    nginx_before = cpu_seconds(nginx_pid)
    busy_before = busy_seconds()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    nginx_cpu = cpu_seconds(nginx_pid) - nginx_before
    busy = busy_seconds() - busy_before
    server_cpu = (
        cpu_seconds(target.pid) - server_before
        if target.pid and server_before is not None
        else None
    )
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCHJSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{text}")
    data = json.loads(line.removeprefix("BENCHJSON "))
    errors = sum(
        data[k]
        for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return WrkResult(
        target=target.label,
        mode="sse" if stream else "json",
        connections=connections,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_us=data["p50_us"],
        p99_us=data["p99_us"],
        server_cpu=server_cpu,
        nginx_cpu=nginx_cpu,
        wrk_cpu=usage.ru_utime + usage.ru_stime,
        rss_kib=rss_kib(target.pid) if target.pid else None,
        other_cpu=max(
            0.0, busy - (server_cpu or 0.0) - nginx_cpu - usage.ru_utime - usage.ru_stime
        ),
    )


@dataclass(frozen=True, slots=True)
class StreamResult:
    """Sequential streams: time to first chunk and to the end (µs), reads per stream."""

    target: str
    upstream: str
    count: int
    non_200: int
    first_p50_us: float
    first_p99_us: float
    end_p50_us: float
    end_p99_us: float
    reads_mean: float
    events_mean: float


def run_streams(target: Target, url: str, count: int, cpu: int, upstream: str) -> StreamResult:
    """Run bench/stream_client.py pinned to `cpu` against `url`."""
    argv = [
        "taskset", "-c", str(cpu), sys.executable, str(BENCH_DIR / "stream_client.py"),
        url, target.auth, str(count),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"stream client failed:\n{done.stderr}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    if "first_p50_us" not in data:
        raise RuntimeError(f"every stream to {url} failed: {data}")
    return StreamResult(
        target=target.label,
        upstream=upstream,
        count=count,
        non_200=data["non_200"],
        first_p50_us=data["first_p50_us"],
        first_p99_us=data["first_p99_us"],
        end_p50_us=data["end_p50_us"],
        end_p99_us=data["end_p99_us"],
        reads_mean=data["reads_mean"],
        events_mean=data["events_mean"],
    )
