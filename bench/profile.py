"""Profile the gateway's hot path: py-spy samples it while wrk drives it.

Run through bench/profile.sh (which installs py-spy into /tmp/bench-tools).
`python bench/profile.py PY_SPY [json|sse] [SECONDS]` starts nginx and a
gateway exactly as bench/run.py does, drives the `bench-json` (or `bench-sse`)
instance with wrk at 16 connections, records with py-spy on the load core, and
prints the top functions by own time and by inclusive time. The collapsed
stacks are kept in bench/results/profile-<mode>.txt (flamegraph.pl input).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from load import Target, run_wrk
from nginx_upstream import NginxUpstream
from processes import BENCH_DIR, free_port, gateway, wait_for_ready
from setup_files import make_keys, write_gateway_files

PATH = "/v1/chat/completions"
TOP = 25


def summarize(collapsed: str, top: int = TOP) -> str:
    """Top functions by own samples and by inclusive samples, from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples"
    out = [f"{total} samples", "", f"top {top} by own time:"]
    out += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    out += ["", f"top {top} by inclusive time:"]
    out += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(out)


def main(py_spy: str, mode: str, seconds: float) -> int:
    """Start nginx and the gateway, record under load, print the summary."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    keys = make_keys()
    nginx = NginxUpstream(free_port(), keys.invalid, cpu=0)
    nginx.start()
    port = free_port()
    files = write_gateway_files(workdir, port, nginx.base_url, "http://127.0.0.1:9", keys)
    server = gateway(files.config, 1, workdir / "gateway.log")
    try:
        server.start(cwd=workdir)
        wait_for_ready(f"http://127.0.0.1:{port}/-/ready", server.process, timeout=120.0)
        # pool: the 10,000-key instance, fresh (no warm-up), so invalid keys are found under load.
        token = files.tokens[{"sse": "bench-sse", "pool": "bench-pool"}.get(mode, "bench-json")]
        target = Target("gateway", f"http://127.0.0.1:{port}{PATH}", token, server.pid)
        if mode != "pool":
            run_wrk(
                target, stream=mode == "sse", connections=16, duration=2, nginx_pid=nginx.pid, cpu=0
            )
        out = BENCH_DIR / "results" / f"profile-{mode}.txt"
        load = threading.Thread(
            target=run_wrk,
            args=(target,),
            kwargs={"stream": mode == "sse", "connections": 16, "duration": seconds + 2,
                    "nginx_pid": nginx.pid, "cpu": 0},
        )  # fmt: skip
        load.start()
        subprocess.run(
            ["taskset", "-c", "0", py_spy, "record", "--pid", str(server.pid), "--duration",
             str(int(seconds)), "--rate", "250", "--nonblocking", "--function", "--format", "raw",
             "--output", str(out)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        load.join()
        print(f"profile of the gateway ({mode}, 16 connections), stacks in {out}")
        print(summarize(out.read_text()))
    finally:
        server.stop()
        nginx.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "json",
                  float(sys.argv[3]) if len(sys.argv) > 3 else 10.0))  # fmt: skip
