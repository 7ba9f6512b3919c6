"""`/-/api/jobs/{id}`: a background job's progress and results."""

from __future__ import annotations

from aiohttp import web

from llmgateway.web.api.http import answer
from llmgateway.web.api.validation import parse_id
from llmgateway.web.keys import KEY_ADMIN

routes = web.RouteTableDef()


@routes.get("/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    """`GET /-/api/jobs/{id}`: state, done of total, results by outcome."""
    job_id = parse_id(request.match_info["id"], "job")
    return answer(await request.config_dict[KEY_ADMIN].job(job_id))
