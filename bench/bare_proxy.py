"""The reference proxy: aiohttp + uvloop, one ClientSession, no features at all.

`python bench/bare_proxy.py UPSTREAM_ORIGIN PORT` forwards method, path, query,
headers and body verbatim and streams the answer back chunk by chunk. It is the
floor of the gateway's stack: whatever the gateway adds is measured against it.
"""

import sys

import aiohttp
import uvloop
from aiohttp import web

HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}
UPSTREAM, PORT = sys.argv[1].rstrip("/"), int(sys.argv[2])


async def proxy(request: web.Request) -> web.StreamResponse:
    """Forward one request and relay the response as it arrives."""
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    session: aiohttp.ClientSession = request.app["session"]
    url = UPSTREAM + request.rel_url.raw_path_qs
    async with session.request(request.method, url, headers=headers, data=body) as upstream:
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP}
        response = web.StreamResponse(status=upstream.status, headers=out)
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
    """One ClientSession for the whole process (keep-alive connection pool)."""
    connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=60)
    app["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    yield
    await app["session"].close()


app = web.Application()
app.cleanup_ctx.append(session_ctx)
app.router.add_route("*", "/{tail:.*}", proxy)
web.run_app(
    app, host="127.0.0.1", port=PORT, access_log=None, print=None, loop=uvloop.new_event_loop()
)
