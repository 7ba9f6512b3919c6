"""The key admin API: the `/-/api/` sub-application, one module per resource.

It is mounted inside the `/-/` sub-application, so the admin guard covers
every path here; handlers read the application's objects through
`request.config_dict`.
"""

from __future__ import annotations

from aiohttp import web

from llmgateway.web.api import reload


def build_api_app() -> web.Application:
    """The `/-/api/` sub-application with every resource's routes."""
    app = web.Application()
    app.router.add_routes(reload.routes)
    return app
