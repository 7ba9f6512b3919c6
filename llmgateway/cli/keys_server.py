"""`llmgateway keys` through the running server: the key admin API over HTTP.

`ServerBackend` sends each request to the server listening at the configured
address, with the admin token of `server.admin_token`; `answers()` tells
whether one is there (`/-/healthy` within `PROBE_TIMEOUT`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import orjson

from llmgateway.cli.keys_client import KeysCommandError

PROBE_TIMEOUT: Final = 1.0
"""Seconds the command waits for `/-/healthy` before it goes to the store directly."""

REQUEST_TIMEOUT: Final = 300.0
"""Seconds one API request may take (an import of 100,000 keys takes a few)."""


class ServerBackend:
    """The key admin API of a running server, over HTTP."""

    def __init__(self, base_url: str, admin_token: str = "") -> None:
        self._base = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            trust_env=False,
        )

    @property
    def where(self) -> str:
        """The server's URL."""
        return f"server at {self._base}"

    async def answers(self) -> bool:
        """True when the server answers `/-/healthy` within `PROBE_TIMEOUT`."""
        try:
            async with self._session.get(
                f"{self._base}/-/healthy", timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def list_keys(self, query: Mapping[str, str]) -> dict[str, Any]:
        """`GET /-/api/keys`."""
        return await self._call("GET", "/-/api/keys", query=query)

    async def add_keys(self, instance: str, text: str) -> dict[str, Any]:
        """`POST /-/api/keys` with `text`."""
        return await self._call("POST", "/-/api/keys", body={"instance": instance, "text": text})

    async def act(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /-/api/keys/{action}`."""
        return await self._call("POST", f"/-/api/keys/{action}", body=body)

    async def job(self, job_id: int) -> dict[str, Any]:
        """`GET /-/api/jobs/{job_id}`."""
        return await self._call("GET", f"/-/api/jobs/{job_id}")

    async def route(self, instance: str, model: str) -> dict[str, Any]:
        """`GET /-/api/route`."""
        return await self._call("GET", "/-/api/route", query={"instance": instance, "model": model})

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._session.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        data = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self._session.request(
                method, self._base + path, params=query, data=data, headers=headers
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KeysCommandError(f"the server did not answer: {exc}") from None
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise KeysCommandError(f"the server answered {status} without JSON", status) from None
        if status >= 400 or not isinstance(document, dict):
            error = document.get("error", {}) if isinstance(document, dict) else {}
            message = error.get("message") or f"the server answered {status}"
            raise KeysCommandError(str(message), status, str(error.get("code", "error")))
        return document
