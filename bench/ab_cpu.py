"""Before/after CPU per request of two source trees of llmgateway, measured alternately.

Run from the repository root:

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/ab_cpu.py --before /tmp/before [--rounds 6] [--seconds 5]

One nginx upstream serves both; the gateway of each tree (the same interpreter
and packages, `PYTHONPATH` pointing at the tree) is started in turn, warmed up,
and loaded with wrk at 16 connections on the JSON and SSE instances for
`--seconds`; its CPU µs per request (utime + stime from /proc) is recorded.
Rounds alternate the trees, so a machine that gets busier or quieter during
the run moves both alike; the lowest and the median of each tree are shown
(the lowest is the least disturbed by other load).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from load import Target, run_wrk
from nginx_upstream import NginxUpstream
from processes import Server, ensure_tools, free_port, gateway, wait_for_ready
from setup_files import make_keys, write_gateway_files

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PATH = "/v1/chat/completions"
MODES = (("json", "bench-json"), ("sse", "bench-sse"))


def measure(tree: Path, nginx: NginxUpstream, seconds: float, workdir: Path) -> dict[str, float]:
    """Start `tree`'s gateway, load it per mode, stop it; CPU µs per request per mode."""
    keys = make_keys()
    port = free_port()
    files = write_gateway_files(workdir, port, nginx.base_url, nginx.base_url, keys)
    # Older trees call the keeper's section `worker:`; newer ones still read it.
    text = files.config.read_text().replace('"keeper":', '"worker":')
    files.config.write_text(text)
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{BENCH_DIR}"}
    server: Server = gateway(files.config, 1, workdir / "gateway.log")
    server.start(env=env, cwd=workdir)
    try:
        wait_for_ready(f"http://127.0.0.1:{port}/-/ready", server.process, timeout=120.0)
        url = f"http://127.0.0.1:{port}{PATH}"
        result: dict[str, float] = {}
        for mode, instance in MODES:
            target = Target("gateway", url, files.tokens[instance], server.pid)
            stream = mode == "sse"
            run_wrk(target, stream=stream, connections=16, duration=1, nginx_pid=nginx.pid, cpu=0)
            measured = run_wrk(
                target, stream=stream, connections=16, duration=seconds, nginx_pid=nginx.pid, cpu=0
            )
            result[mode] = measured.cpu_us_per_request or 0.0
        return result
    finally:
        server.stop()


def main() -> int:
    """Alternate the two trees `--rounds` times and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the other source tree")
    parser.add_argument("--after", type=Path, default=REPO_DIR, help="default: this tree")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    ensure_tools()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    figures: dict[str, dict[str, list[float]]] = {t: {m: [] for m, _ in MODES} for t in trees}
    root = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    nginx = NginxUpstream(free_port(), make_keys().invalid, cpu=0)
    try:
        nginx.start()
        for round_no in range(args.rounds):
            order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
            for name in order:
                workdir = root / f"{name}-{round_no}"
                workdir.mkdir()
                for mode, value in measure(trees[name], nginx, args.seconds, workdir).items():
                    figures[name][mode].append(value)
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        nginx.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("| mode | tree | lowest CPU µs/req | median | rounds |")
    print("|---|---|---:|---:|---:|")
    for mode, _ in MODES:
        for name in trees:
            values = figures[name][mode]
            print(
                f"| {mode} | {name} | {min(values):.0f} | {statistics.median(values):.0f} "
                f"| {len(values)} |"
            )
        change = min(figures["after"][mode]) / min(figures["before"][mode]) - 1
        print(f"| {mode} | after vs before (lowest) | {change:+.1%} | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
