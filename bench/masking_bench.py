"""What masking adds to one proxied request: the masking steps alone, and the gateway's whole CPU.

Run from the repository root: `.venv/bin/python bench/masking_bench.py [--live]`.

On the request path a successful answer is masked three ways: its headers are
searched for the attempt's key in every form (`KeyPattern.appears_in`, the
whole masker only when found), the key is masked raw in the body
(`KeyPattern.whole`) or in every stream chunk (the relay loop's check, then
`KeyPattern.split` only for a chunk that needs it).

1. **Steps** (always): each step is timed with and without masking, on the
   bench's own answers (nginx's JSON body; its 21-event SSE stream as nginx
   delivers it, in one read, and as the paced upstream does, one read per
   event) and an OpenAI-like set of 16 response headers, with a masker of
   10,002 keys, for the bench's own key and for a random one (a substring
   search costs more when the key shares long runs with the body, as the
   bench key's zeros do). Best of `--repeat` rounds, so other load inflates
   nothing.
2. **Live** (`--live`): nginx, the paced upstream and a gateway started as
   `bench/run.py` does; the gateway's CPU µs per request (utime + stime from
   /proc) for JSON and SSE at 16 connections (wrk) and for sequential paced
   streams. Each step's cost is then shown as a share of that request's CPU.
   Run it at two commits (same bench/) for before/after figures of the whole.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

from load import Target, run_wrk
from multidict import CIMultiDict, CIMultiDictProxy
from nginx_upstream import NginxUpstream, completion_body, sse_body
from processes import (
    BENCH_DIR,
    REPO_DIR,
    Server,
    cpu_seconds,
    ensure_tools,
    free_port,
    gateway,
    wait_for_port,
    wait_for_ready,
)
from setup_files import VALID_KEY, make_keys, write_gateway_files

from llmgateway.web.forwarding import downstream_headers

PATH = "/v1/chat/completions"

UPSTREAM_HEADERS = CIMultiDictProxy(
    CIMultiDict(
        [
            ("Server", "nginx/1.22.1"),
            ("Date", "Wed, 02 Dec 2026 04:44:54 GMT"),
            ("Content-Type", "application/json"),
            ("Content-Length", "331"),
            ("Connection", "keep-alive"),
            ("openai-organization", "user-abcdefghijklmnopqrstuvwx"),
            ("openai-processing-ms", "412"),
            ("openai-version", "2020-10-01"),
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-reset-requests", "6ms"),
            ("x-request-id", "req_5d7c3b0e9f1a4c2b8e6d0f3a1b2c4d5e"),
            ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
            ("cf-cache-status", "DYNAMIC"),
            ("set-cookie", "__cf_bm=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA-1733115894-1.0.1.1; path=/"),
            ("cf-ray", "8ebc1d2f3a4b5c6d-FRA"),
        ]
    )
)


def best_us(step: Callable[[], object], number: int, repeat: int) -> float:
    """Best time of one call of `step`, in µs."""
    return min(timeit.repeat(step, number=number, repeat=repeat)) / number * 1e6


RANDOM_KEY = "sk-proj-Xq7PzL2mN9vR4tW8yB3cF6hJ1kD5gS0aE2iU7oQ4"
"""A key as providers issue them (random characters), beside the bench's own key."""


def steps(key: str, keys: list[str], number: int, repeat: int) -> dict[str, tuple[float, float]]:
    """{step: (µs without masking, µs with masking)} for `key`, with a masker holding `keys`."""
    from llmgateway.core.masking import KeyPattern, Masker

    masker = Masker(keys)
    pattern = KeyPattern(key)  # made once per key and kept by the gateway
    raw, chars = pattern.raw, pattern.chars
    body = completion_body().encode()
    events = [event.encode() + b"\n\n" for event in sse_body().split("\n\n")[:-1]]
    whole_stream = [b"".join(events)]  # nginx sends the stream in one write: one read
    rid = "0123456789abcdef-1"

    def relay_before(chunks: list[bytes]) -> Callable[[], object]:
        def loop() -> object:  # the relay loop before masking: write, then look for "error"
            out = []
            for chunk in chunks:
                out.append(chunk)
                if b"error" in chunk:
                    out.append(b"")
            return out

        return loop

    def relay_after(chunks: list[bytes]) -> Callable[[], object]:
        def loop() -> object:  # the relay loop's own code (gateway.Gateway._relay)
            out = []
            held = b""
            for chunk in chunks:
                ready = chunk
                if held or chunk.find(raw) != -1 or chunk[-1] in chars:
                    ready, held = pattern.split(held + chunk)
                error = chunk.find(b"error") != -1
                if error:
                    ready = masker.mask_bytes(ready)
                out.append(ready)
            return out

        return loop

    return {
        "response headers (16)": (
            best_us(lambda: downstream_headers(UPSTREAM_HEADERS, rid), number, repeat),
            best_us(
                lambda: downstream_headers(
                    UPSTREAM_HEADERS, rid, masker.mask_text, screen=pattern.appears_in
                ),
                number,
                repeat,
            ),
        ),
        "JSON body (331 B)": (
            best_us(lambda: body, number, repeat),
            best_us(lambda: pattern.whole(body), number, repeat),
        ),
        "SSE, 1 read (nginx)": (
            best_us(relay_before(whole_stream), number, repeat),
            best_us(relay_after(whole_stream), number, repeat),
        ),
        f"SSE, {len(events)} reads (paced)": (
            best_us(relay_before(events), number, repeat),
            best_us(relay_after(events), number, repeat),
        ),
    }


def live(seconds: float, streams: int) -> dict[str, float]:
    """The gateway's CPU µs per request: JSON and SSE at 16 connections, paced streams."""
    ensure_tools()
    workdir = Path(tempfile.mkdtemp(prefix="bench-masking-"))
    keys = make_keys()
    nginx = NginxUpstream(free_port(), keys.invalid, cpu=0)
    servers: list[Server] = []
    env = {**os.environ, "PYTHONPATH": f"{REPO_DIR}{os.pathsep}{BENCH_DIR}"}
    try:
        nginx.start()
        paced_port = free_port()
        paced = Server(
            "paced",
            [sys.executable, str(BENCH_DIR / "paced_upstream.py"), str(paced_port), "2"],
            0,
            workdir / "paced.log",
        )
        paced.start(env=env, cwd=workdir)
        servers.append(paced)
        wait_for_port(paced_port, paced.process, timeout=30.0)
        port = free_port()
        files = write_gateway_files(
            workdir, port, nginx.base_url, f"http://127.0.0.1:{paced_port}", keys
        )
        gw = gateway(files.config, 1, workdir / "gateway.log")
        gw.start(env=env, cwd=workdir)
        servers.append(gw)
        wait_for_ready(f"http://127.0.0.1:{port}/-/ready", gw.process, timeout=120.0)
        url = f"http://127.0.0.1:{port}{PATH}"
        result: dict[str, float] = {}
        for mode, instance in (("json", "bench-json"), ("sse", "bench-sse")):
            target = Target("gateway", url, files.tokens[instance], gw.pid)
            run_wrk(
                target, stream=mode == "sse", connections=16, duration=1, nginx_pid=nginx.pid, cpu=0
            )
            measured = run_wrk(
                target,
                stream=mode == "sse",
                connections=16,
                duration=seconds,
                nginx_pid=nginx.pid,
                cpu=0,
            )
            result[mode] = measured.cpu_us_per_request or 0.0
        before = cpu_seconds(gw.pid)
        done = subprocess.run(
            [
                "taskset", "-c", "0", sys.executable, str(BENCH_DIR / "stream_client.py"),
                url, files.tokens["bench-paced"], str(streams),
            ],
            capture_output=True, text=True, timeout=600, check=True,
        )  # fmt: skip
        spent = cpu_seconds(gw.pid) - before
        data = json.loads(done.stdout.strip().splitlines()[-1])
        result["paced"] = spent / (streams + 1) * 1e6  # + 1: the client's warm-up stream
        result["paced reads/stream"] = float(data["reads_mean"])
        return result
    finally:
        for server in reversed(servers):
            server.stop()
        nginx.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    """Print the masking steps' cost per request (and, with --live, its share of the CPU)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per round")
    parser.add_argument("--repeat", type=int, default=7, help="rounds (the best one counts)")
    parser.add_argument("--live", action="store_true", help="also measure a running gateway")
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk seconds per live run")
    parser.add_argument("--streams", type=int, default=200, help="paced streams in the live run")
    args = parser.parse_args()
    cpu: dict[str, float] = {}
    if args.live:
        cpu = live(args.seconds, args.streams)
        print("gateway CPU µs/req: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    try:
        import llmgateway.core.masking  # noqa: F401
    except ImportError:
        print("(this llmgateway has no masking: no steps to time)")
        return 0
    pool = [VALID_KEY, RANDOM_KEY, *make_keys().pool_order]
    for label, key in (
        ("the bench's key (ends in 16 zeros, as the body's ids do)", VALID_KEY),
        ("a random key", RANDOM_KEY),
    ):
        results = steps(key, pool, args.number, args.repeat)
        print(f"\n{label}; masker holding {len(pool):,} keys")
        print(f"  {'step':24} {'before µs':>10} {'after µs':>10} {'masking µs':>11}")
        for step, (before, after) in results.items():
            print(f"  {step:24} {before:10.2f} {after:10.2f} {after - before:11.2f}")
        head = results["response headers (16)"]
        for kind, mode in (
            ("JSON body (331 B)", "json"),
            ("SSE, 1 read (nginx)", "sse"),
            (next(k for k in results if k.endswith("(paced)")), "paced"),
        ):
            cost = head[1] - head[0] + results[kind][1] - results[kind][0]
            share = f" = {cost / cpu[mode] * 100:.2f}% of {cpu[mode]:.0f} µs" if mode in cpu else ""
            print(f"  one request, headers + {kind}: {cost:.2f} µs{share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
