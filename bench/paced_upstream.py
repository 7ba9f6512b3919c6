"""A paced SSE upstream: 20 chunks written `PACE_MS` apart, to see relaying as chunks arrive.

`python bench/paced_upstream.py PORT PACE_MS` serves POST
`/paced/v1/chat/completions` (401 never: any key is fine). nginx cannot pace a
small body, so this tiny server does; it serves only the sequential
stream-client runs, where it is far from any CPU limit.
"""

import asyncio
import sys

import uvloop
from aiohttp import web
from nginx_upstream import sse_body

EVENTS = [event + "\n\n" for event in sse_body().split("\n\n") if event]
PORT, PACE = int(sys.argv[1]), float(sys.argv[2]) / 1000


async def paced(request: web.Request) -> web.StreamResponse:
    """Write each SSE event as its own chunk, `PACE` seconds apart."""
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in EVENTS:
        await response.write(event.encode())
        await asyncio.sleep(PACE)
    await response.write_eof()
    return response


app = web.Application()
app.router.add_post("/paced/v1/chat/completions", paced)
web.run_app(
    app, host="127.0.0.1", port=PORT, access_log=None, print=None, loop=uvloop.new_event_loop()
)
