"""Time streamed answers one at a time: time to first chunk and full-stream time.

`python bench/stream_client.py URL AUTH N` POSTs N streamed chat requests
sequentially (concurrency 1) and prints one JSON object: percentiles in
microseconds of the time to the first body chunk and to the end of the stream,
the mean number of reads (socket deliveries) per stream and of SSE events, and
the count of non-200 answers. With a paced upstream, reads per stream close to
the upstream's chunk count shows chunks are relayed as they arrive.
"""

import json
import sys
import time

import aiohttp
import uvloop

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello in one short sentence, please."}],
    "stream": True,
}


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile of `values`."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def one_stream(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> dict[str, float]:
    """Send one request; times in seconds from just before sending."""
    start = time.perf_counter()
    first = 0.0
    reads = 0
    events = 0
    async with session.post(url, json=BODY, headers=headers) as response:
        async for chunk in response.content.iter_any():
            if not reads:
                first = time.perf_counter() - start
            reads += 1
            events += chunk.count(b"\n\n")
        end = time.perf_counter() - start
        return {
            "first": first,
            "end": end,
            "reads": reads,
            "events": events,
            "status": response.status,
        }


async def main(url: str, auth: str, count: int) -> dict[str, float]:
    """Warm the connection, then time `count` sequential streams."""
    headers = {"Authorization": f"Bearer {auth}"}
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        for _ in range(min(20, count)):
            await one_stream(session, url, headers)
        runs = [await one_stream(session, url, headers) for _ in range(count)]
    ok = [r for r in runs if r["status"] == 200]
    if not ok:
        return {"n": count, "non_200": count}
    firsts = [r["first"] * 1e6 for r in ok]
    ends = [r["end"] * 1e6 for r in ok]
    return {
        "n": count,
        "non_200": count - len(ok),
        "first_p50_us": percentile(firsts, 50),
        "first_p99_us": percentile(firsts, 99),
        "end_p50_us": percentile(ends, 50),
        "end_p99_us": percentile(ends, 99),
        "reads_mean": sum(r["reads"] for r in ok) / len(ok),
        "events_mean": sum(r["events"] for r in ok) / len(ok),
    }


if __name__ == "__main__":
    result = uvloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    print(json.dumps(result))
