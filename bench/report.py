"""The bench's report: machine details, result tables, and the issue's targets checked.

Everything is rendered once as Markdown, printed, and written to
bench/results/<date>_<time>.md.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from load import StreamResult, WrkResult
from processes import REPO_DIR


@dataclass(frozen=True, slots=True)
class Check:
    """One performance target: the figure measured and whether it holds."""

    name: str
    value: str
    passed: bool | None
    """None when the figure could not be measured."""


@dataclass(slots=True)
class Report:
    """Everything one bench run measured."""

    settings: dict[str, str]
    matrix: list[WrkResult] = field(default_factory=list)
    streams: list[StreamResult] = field(default_factory=list)
    pool: list[WrkResult] = field(default_factory=list)
    memory: list[tuple[str, int, int, float]] = field(default_factory=list)
    """(label, requests served so far, RSS KiB, CPU µs per request over the segment)."""
    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def machine_details() -> dict[str, str]:
    """nproc, CPU model, kernel, Python, aiohttp, nginx and wrk versions, git commit."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        "unknown",
    )
    mem = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/meminfo").read_text().splitlines()
         if ln.startswith("MemTotal")),
        "unknown",
    )  # fmt: skip
    return {
        "nproc": str(len(__import__("os").sched_getaffinity(0))),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "nginx": _command(["nginx", "-v"]),
        "wrk": _command(["wrk", "-v"]).splitlines()[0] if _command(["wrk", "-v"]) else "",
        "commit": _command(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"]),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _command(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return ""
    return (done.stdout + done.stderr).strip()


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _wrk_table(rows: list[WrkResult]) -> list[str]:
    lines = [
        "| mode | conns | target | req/s | p50 ms | p99 ms | errors | CPU µs/req | RSS MiB | load core % | other % |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rss = None if r.rss_kib is None else r.rss_kib / 1024
        lines.append(
            f"| {r.mode} | {r.connections} | {r.target} | {r.rps:,.0f} | {_ms(r.p50_us)} | "
            f"{_ms(r.p99_us)} | {r.errors} | {_opt(r.cpu_us_per_request, '.0f')} | "
            f"{_opt(rss, '.1f')} | {r.load_core_pct:.0f} | {r.other_pct:.0f} |"
        )
    return lines


def _stream_table(rows: list[StreamResult]) -> list[str]:
    lines = [
        "| upstream | target | streams | first chunk p50 ms | p99 ms | full stream p50 ms | p99 ms "
        "| reads/stream | events/stream | non-200 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in rows:
        lines.append(
            f"| {s.upstream} | {s.target} | {s.count} | {_ms(s.first_p50_us)} | "
            f"{_ms(s.first_p99_us)} | {_ms(s.end_p50_us)} | {_ms(s.end_p99_us)} | "
            f"{s.reads_mean:.1f} | {s.events_mean:.1f} | {s.non_200} |"
        )
    return lines


def render(report: Report, machine: dict[str, str], title: str) -> str:
    """The whole report as Markdown."""
    out = [f"# llmgateway bench — {title}", "", "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in machine.items()]
    out += ["", "## Settings", ""]
    out += [f"- {k}: {v}" for k, v in report.settings.items()]
    if report.checks:
        out += ["", "## Targets", "", "| target | measured | holds |", "|---|---|---|"]
        for c in report.checks:
            mark = "n/a" if c.passed is None else ("yes" if c.passed else "**NO**")
            out.append(f"| {c.name} | {c.value} | {mark} |")
    out += ["", "## Throughput and latency (wrk, one thread, POST)", ""]
    out += _wrk_table(report.matrix)
    if report.streams:
        out += ["", "## Streams one at a time (bench/stream_client.py)", ""]
        out += _stream_table(report.streams)
    if report.pool:
        out += ["", "## Key pool: 1 key vs 10,000 keys with 30% invalid (gateway)", ""]
        out += _wrk_table(report.pool)
    if report.memory:
        out += ["", "## Memory (fresh gateway, bench-pool instance, 16 connections)", ""]
        out += ["| after | requests | RSS MiB | CPU µs/req in segment |", "|---|---:|---:|---:|"]
        for label, count, rss, cpu in report.memory:
            out.append(f"| {label} | {count:,} | {rss / 1024:.1f} | {cpu:.0f} |")
    if report.problems:
        out += ["", "## Problems", ""]
        out += [f"- {p}" for p in report.problems]
    return "\n".join(out) + "\n"
