"""`/-/api/keys`: list, read, add, delete, disable, enable and recheck keys."""

from __future__ import annotations

from aiohttp import web

from llmgateway.web.api.http import answer, read_json
from llmgateway.web.api.validation import parse_id
from llmgateway.web.keys import KEY_ADMIN

routes = web.RouteTableDef()


@routes.get("/keys")
async def list_keys(request: web.Request) -> web.Response:
    """`GET /-/api/keys`: a page of the keys the query's filter matches."""
    return answer(await request.config_dict[KEY_ADMIN].list_keys(request.query))


@routes.post("/keys")
async def add_keys(request: web.Request) -> web.Response:
    """`POST /-/api/keys`: import keys (a list or a text of one key a line)."""
    body = await read_json(request)
    return answer(await request.config_dict[KEY_ADMIN].add_keys(body))


@routes.get("/keys/{id}")
async def get_key(request: web.Request) -> web.Response:
    """`GET /-/api/keys/{id}`: one key with its history."""
    key_id = parse_id(request.match_info["id"])
    return answer(await request.config_dict[KEY_ADMIN].get_key(key_id))


@routes.post("/keys/delete")
async def delete_keys(request: web.Request) -> web.Response:
    """`POST /-/api/keys/delete`: delete keys by ids or filter."""
    body = await read_json(request)
    return answer(await request.config_dict[KEY_ADMIN].delete(body))


@routes.post("/keys/disable")
async def disable_keys(request: web.Request) -> web.Response:
    """`POST /-/api/keys/disable`: take keys out of the pool by hand."""
    body = await read_json(request)
    return answer(await request.config_dict[KEY_ADMIN].set_disabled(body, True))


@routes.post("/keys/enable")
async def enable_keys(request: web.Request) -> web.Response:
    """`POST /-/api/keys/enable`: put disabled keys back, untested."""
    body = await read_json(request)
    return answer(await request.config_dict[KEY_ADMIN].set_disabled(body, False))


@routes.post("/keys/recheck")
async def recheck_keys(request: web.Request) -> web.Response:
    """`POST /-/api/keys/recheck`: 202 and the job probing the selected keys."""
    body = await read_json(request)
    return answer(await request.config_dict[KEY_ADMIN].recheck(body), 202)
