"""`POST /-/api/reload`: load the configuration file again and swap it in, in every worker.

With `?dry_run=1` the file is only loaded, validated and compared. The answer
is always `{"applied", "added", "removed", "changed", "errors"}` (200): a
refused reload says `applied: false` with the errors, and nothing changed.
A request the endpoint cannot read (an unknown parameter, a `dry_run` that
is no yes or no) gets 400 `{"error": {"message", "code"}}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aiohttp import web

from llmgateway.web.keys import RELOADS

routes = web.RouteTableDef()

_FLAGS: Final = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
"""The accepted values of `dry_run`."""


class BadReloadRequest(ValueError):
    """The reload request cannot be read (its message says why)."""


def parse_reload_query(query: Mapping[str, str]) -> bool:
    """`dry_run` of the query (False when absent); raises BadReloadRequest for anything else."""
    unknown = sorted(set(query) - {"dry_run"})
    if unknown:
        raise BadReloadRequest(f"unknown query parameter {unknown[0]!r}; only dry_run is read")
    value = query.get("dry_run", "0").strip().lower()
    if value not in _FLAGS:
        raise BadReloadRequest("dry_run must be 1 or 0 (true or false)")
    return _FLAGS[value]


@routes.post("/reload")
async def reload_handler(request: web.Request) -> web.Response:
    """Reload this process (and, once applied, every worker); answer what changed."""
    try:
        dry_run = parse_reload_query(request.query)
    except BadReloadRequest as exc:
        return web.json_response(
            {"error": {"message": str(exc), "code": "bad_request"}}, status=400
        )
    result = await request.config_dict[RELOADS].from_api(dry_run=dry_run)
    return web.json_response(result.document())
