"""classify_status: decided from the status line and headers alone."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from llmgateway.core.constants import ErrorReason, ProviderType
from llmgateway.core.models import CHECK_OK
from tests.fixtures.provider_errors import ERRORS
from tests.unit.providers.factory import headers_of, make_adapter


def test_classify_status_takes_no_body_at_all() -> None:
    """The signature has no body parameter: the body cannot be read there."""
    adapter = make_adapter("openai_like")
    assert list(inspect.signature(adapter.classify_status).parameters) == ["status", "headers"]


@pytest.mark.parametrize("provider", list(ProviderType))
def test_success_statuses_are_ok(provider: ProviderType) -> None:
    """200 gives CHECK_OK; another 2xx a success carrying its status."""
    adapter = make_adapter(provider)
    assert adapter.classify_status(200, headers_of()) is CHECK_OK
    result = adapter.classify_status(204, headers_of())
    assert result is not None and result.ok and result.status_code == 204


@pytest.mark.parametrize("provider", list(ProviderType))
def test_unmapped_errors_need_the_body(provider: ProviderType) -> None:
    """Without a fast mapping, an error status returns None so the caller reads the body."""
    assert make_adapter(provider).classify_status(429, headers_of()) is None


def test_fast_mapping_wins_over_what_the_body_would_say() -> None:
    """A 429 mapped to no_quota stays no_quota even when its body reads as a rate limit."""
    status, headers, body = ERRORS["openai_like"]["rate_limited_requests"]
    adapter = make_adapter("openai_like", fast={429: ErrorReason.NO_QUOTA})
    fast = adapter.classify_status(status, headers_of(headers))
    assert fast is not None and fast.reason is ErrorReason.NO_QUOTA
    assert (
        adapter.classify_body(status, headers_of(headers), body).reason is ErrorReason.RATE_LIMITED
    )


def test_fast_mapping_keeps_the_retry_after_header() -> None:
    """A fast decision still reports the wait the upstream's headers ask for."""
    adapter = make_adapter("anthropic", fast={529: ErrorReason.OVERLOADED})
    result = adapter.classify_status(529, headers_of({"retry-after": "9"}))
    assert result is not None and result.retry_after == 9.0 and result.status_code == 529


@pytest.fixture
async def body_never_sent() -> AsyncIterator[tuple[TestServer, asyncio.Event]]:
    """A real upstream that sends 418 headers and then holds its body until released."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=418, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await release.wait()
        await response.write(b'{"error": {"code": "rate_limit_exceeded"}}')
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, release
    release.set()
    await server.close()


async def test_fast_mapping_decides_before_any_body_byte_arrives(
    body_never_sent: tuple[TestServer, asyncio.Event],
) -> None:
    """With the body still unsent, the fast mapping classifies from the live response headers."""
    server, release = body_never_sent
    adapter = make_adapter("openai_like", fast={418: ErrorReason.NO_QUOTA})
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.make_url("/v1/chat/completions")) as response,
    ):
        result = adapter.classify_status(response.status, response.headers)
        assert response.content.total_bytes == 0
        release.set()
    assert result is not None and result.reason is ErrorReason.NO_QUOTA
