"""The key admin API: the `/-/api/` sub-application, one module per resource.

`build_api_app()` assembles the route tables of `keys`, `jobs`, `route` and
`reload` (every resource module listed in `ROUTE_TABLES`) behind the
`api_errors` middleware. It is mounted inside the `/-/` sub-application, so
the admin guard covers every path here; handlers read the application's
objects through `request.config_dict`. Any other path is a JSON 404.
"""

from __future__ import annotations

from aiohttp import web

from llmgateway.web.api import jobs, keys, reload, route
from llmgateway.web.api.http import api_errors
from llmgateway.web.api.validation import ApiError

ROUTE_TABLES = (keys.routes, jobs.routes, route.routes, reload.routes)
"""The route table of every resource of the API."""


async def _not_found(request: web.Request) -> web.Response:
    raise ApiError(404, "not_found", f"no API endpoint at {request.method} {request.path}")


def build_api_app() -> web.Application:
    """The `/-/api/` sub-application."""
    api = web.Application(middlewares=[api_errors])
    for table in ROUTE_TABLES:
        api.add_routes(table)
    api.router.add_route("*", "/{tail:.*}", _not_found)
    return api
