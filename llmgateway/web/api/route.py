"""`/-/api/route`: which key would serve (instance, model) next, and why the others are skipped."""

from __future__ import annotations

from aiohttp import web

from llmgateway.web.api.http import answer
from llmgateway.web.keys import KEY_ADMIN

routes = web.RouteTableDef()


@routes.get("/route")
async def inspect_route(request: web.Request) -> web.Response:
    """`GET /-/api/route?instance=…&model=…`."""
    return answer(request.config_dict[KEY_ADMIN].route(request.query))
