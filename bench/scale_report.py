"""The scale bench's report: markdown tables per engine and N, the raw figures as JSON, and a comparison.

`python bench/scale_report.py BEFORE.json AFTER.json` prints the before/after table of two runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

from processes import REPO_DIR


def _commit() -> str:
    result = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return result.stdout.strip() or "?"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"


def _each(figures: dict[str, Any]) -> str:
    """ " (median of 3: a, b, c s)" for the warm starts ("" in reports made before there were 3)."""
    each = figures.get("ready_warm_each_s")
    if not each or len(each) < 2:
        return ""
    return f" (median of {len(each)}: {', '.join(f'{t:.2f}' for t in each)} s)"


def _lag(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "> 10 s" if value == float("inf") else f"<= {value * 1000:g} ms"


def _wait(row: dict[str, Any]) -> str:
    """The loop thread's longest wait for its CPU in a window ("-" in reports made before it)."""
    waited = row.get("cpu_wait_max_ms")
    if waited is None:
        return "-"
    within = row.get("cpu_wait_50ms_ms")
    return f"{waited:.1f} ms" + ("" if within is None else f" ({within:.1f} ms in 50 ms)")


def _medians(cpu: dict[str, Any]) -> str:
    """The medians of the rounds, for reports that carry them (older ones do not)."""
    median = cpu.get("median")
    if not median:
        return ""
    return (
        f"; medians {median['n_keys']:.0f} and {median['one_key']:.0f} µs "
        f"({(cpu['median_ratio'] - 1) * 100:+.1f}%)"
    )


def _section(figures: dict[str, Any]) -> list[str]:
    if "windows" not in figures:
        cpu = figures.get("cpu")
        per_request = (
            f"; CPU µs/request {figures['keys']:,} keys {cpu['n_keys']:.0f}, 1 key "
            f"{cpu['one_key']:.0f} ({(cpu['ratio'] - 1) * 100:+.1f}%, lowest round){_medians(cpu)}; "
            f"samples {cpu['samples']}"
            if cpu
            else ""
        )
        return [
            f"## {figures['engine']}, {figures['keys']:,} keys: ready, RSS, CPU per request",
            "",
            f"ready cold {figures['ready_cold_s']:.2f} s, warm {figures['ready_warm_s']:.2f} s"
            f"{_each(figures)}, RSS {figures['rss_ready_mib']:.0f} MiB{per_request}",
            "",
        ]
    lines = [
        f"## {figures['engine']}, {figures['keys']:,} keys x 2 models ({figures['rows']:,} rows)",
        "",
        "| figure | value |",
        "|---|---|",
        f"| ready, cold (empty store, start-up sync inserts every key) | {figures['ready_cold_s']:.2f} s |",
        f"| ready, warm restart (store holds the keys) | {figures['ready_warm_s']:.2f} s"
        f"{_each(figures)} |",
        f"| ready, keeper on | {figures.get('ready_keeper_s', 0):.2f} s |",
        f"| RSS after cold start | {figures['rss_cold_mib']:.0f} MiB |",
        f"| RSS after warm start | {figures['rss_ready_mib']:.0f} MiB |",
        f"| RSS after the operations (peak) | {figures['rss_after_mib']:.0f} MiB "
        f"({figures['rss_peak_mib']:.0f} MiB) |",
    ]
    for label in ("status summary", "status keys page", "metrics"):
        got = figures[label]
        lines.append(f"| GET {label}: median of 5 | {got['ms']:.1f} ms, {got['bytes']:,} bytes |")
    pages = figures["status all pages"]
    lines.append(
        f"| every page of /-/status?keys=1 | {pages['pages']} pages, {pages['rows']:,} rows, "
        f"{pages['seconds']:.2f} s (slowest page {pages['slowest_page_ms']:.1f} ms) |"
    )
    for label, got in figures.items():
        if label.startswith("cli status"):
            lines.append(
                f"| `llmgateway {label[4:]}` | {got['s']:.2f} s, max RSS {got['rss_kib'] / 1024:.0f} "
                f"MiB, {got['bytes']:,} bytes, exit {got['rc']} |"
            )
    flush = figures["write queue flush 10,000"]
    lines.append(
        f"| write queue flushing {flush['records']:,} statuses (in-process) | {flush['s']:.2f} s, "
        f"worst loop lag {flush['worst_lag_ms']:.1f} ms |"
    )
    lines.append(f"| key admin API (`/-/api/keys`) | {figures['key admin API']} |")
    imported = figures.get("import answer")
    if imported:
        lines.append(
            f"| import through `POST /-/api/keys` | {imported['added']:,} added, "
            f"{imported['duplicates']:,} duplicates |"
        )
    recheck = figures.get("recheck")
    if recheck:
        lines.append(
            f"| recheck job over {recheck['keys']:,} keys ({recheck['probes']:,} probes) | "
            f"{recheck['state']} in {recheck['seconds']:.1f} s, "
            f"{recheck['probes_per_s']:.0f} probes/s, upstream peak "
            f"{recheck['upstream_peak_in_flight']} in flight |"
        )
    cpu = figures.get("cpu")
    if cpu:
        lines.append(
            f"| CPU per request (wrk, 16 connections, lowest round) | {figures['keys']:,} keys "
            f"{cpu['n_keys']:.0f} µs, 1 key {cpu['one_key']:.0f} µs: "
            f"{(cpu['ratio'] - 1) * 100:+.1f}%{_medians(cpu)} |"
        )
    lines += [
        "",
        "| operation under a steady stream | op (median) | requests | errors | p50 ms | p99 ms "
        "| max ms | p99 - idle p99 | loop lag (histogram) | own part of the lag (histogram) "
        "| longest wait for the CPU (most in 50 ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    idle = figures["windows"][0]["p99_ms"]
    for row in figures["windows"]:
        op = "-" if row["op_seconds"] is None else f"{row['op_seconds']:.3f} s"
        lines.append(
            f"| {row['operation']} | {op} | {row['requests']} | {row['errors']} | "
            f"{_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | {_ms(row['max_ms'])} | "
            f"{row['p99_ms'] - idle:+.1f} | {_lag(row['lag_max_le_s'])} | "
            f"{_lag(row.get('own_lag_max_le_s'))} | {_wait(row)} |"
        )
    lines.append("")
    return lines


def write_report(path: Path, results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Write the markdown report at `path` and the figures beside it (.json)."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    lines = [
        f"# Scale bench ({args.label or 'run'})",
        "",
        f"commit {_commit()}; Python {platform.python_version()}; {cpu}; "
        f"steady stream {args.rate:g} req/s (open loop); gateway (its threads included) on "
        f"CPU {getattr(args, 'gateway_cpus', '1')}, upstream (aiohttp) and the bench's own "
        "process on the others.",
        f"Load average (1 min) at the start of each engine x N: "
        f"{', '.join(str(f.get('load_before', '?')) for f in results)}; at the end: "
        f"{', '.join(str(f.get('load_after', '?')) for f in results)} "
        "(2 cores shared with other work: above ~1 the latencies are noisy). "
        "Reference loop (10 million additions in Python, on the gateway's CPUs): "
        f"{', '.join(_seconds(f.get('reference_loop_s')) for f in results)}.",
        "",
    ]
    for figures in results:
        lines += _section(figures)
    path.write_text("\n".join(lines))
    path.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))


def compare(before_path: Path, after_path: Path) -> str:
    """A before/after markdown table of two reports' figures (same engines and N)."""
    before = {(f["engine"], f["keys"]): f for f in json.loads(before_path.read_text())}
    lines = []
    for new in json.loads(after_path.read_text()):
        old = before.get((new["engine"], new["keys"]))
        if old is None or "windows" not in new:
            continue
        lines += [
            f"### {new['engine']}, {new['keys']:,} keys x 2 models",
            "",
            "| figure | before | after |",
            "|---|---|---|",
        ]
        for label, key in (
            ("ready warm (s)", "ready_warm_s"),
            ("ready cold (s)", "ready_cold_s"),
            ("RSS after warm start (MiB)", "rss_ready_mib"),
            ("RSS peak (MiB)", "rss_peak_mib"),
        ):
            lines.append(f"| {label} | {old[key]:.2f} | {new[key]:.2f} |")
        for label in ("status summary", "status keys page", "metrics"):
            lines.append(
                f"| GET {label} (ms, bytes) | {old[label]['ms']:.1f}, {old[label]['bytes']:,} "
                f"| {new[label]['ms']:.1f}, {new[label]['bytes']:,} |"
            )
        for label in ("cli status", "cli status --json", "cli status --keys"):
            lines.append(
                f"| `llmgateway {label[4:]}` (s, max RSS MiB) | {old[label]['s']:.2f}, "
                f"{old[label]['rss_kib'] / 1024:.0f} | {new[label]['s']:.2f}, "
                f"{new[label]['rss_kib'] / 1024:.0f} |"
            )
        old_windows = {w["operation"]: w for w in old["windows"]}
        idle_old, idle_new = old["windows"][0]["p99_ms"], new["windows"][0]["p99_ms"]
        for row in new["windows"]:
            was = old_windows.get(row["operation"])
            then = "-" if was is None else f"{was['p99_ms']:.1f} ({was['p99_ms'] - idle_old:+.1f})"
            lines.append(
                f"| p99 during: {row['operation']} (ms, vs alone) | {then} | "
                f"{row['p99_ms']:.1f} ({row['p99_ms'] - idle_new:+.1f}); lag {_lag(row['lag_max_le_s'])} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(compare(Path(sys.argv[1]), Path(sys.argv[2])))
