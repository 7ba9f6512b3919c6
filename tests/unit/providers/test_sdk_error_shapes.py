"""Gateway-made errors parse in the official SDKs into their usual exception types.

A real aiohttp server on 127.0.0.1 answers with `error_body`; the real openai,
anthropic and google-genai clients are pointed at it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from llmgateway.core.constants import ProviderType
from tests.unit.providers.factory import make_adapter

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
MESSAGE = "llmgateway: every key is cooling down"


async def error_server(
    aiohttp_server: ServerFactory, provider: ProviderType, status: int
) -> TestServer:
    """A server answering every request with the adapter's error for `status`."""
    adapter = make_adapter(provider)
    retry_after = 2.3 if status == 429 else None

    async def handler(request: web.Request) -> web.Response:
        error = adapter.error_body(status, MESSAGE, retry_after)
        return web.Response(status=error.status, body=error.body, headers=dict(error.headers))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return await aiohttp_server(app)


OPENAI_CASES = [
    (401, openai.AuthenticationError),
    (413, openai.APIStatusError),
    (429, openai.RateLimitError),
    (502, openai.InternalServerError),
    (503, openai.InternalServerError),
    (504, openai.InternalServerError),
]


@pytest.mark.parametrize(("status", "exc_type"), OPENAI_CASES)
async def test_openai_sdk_raises_its_usual_exception(
    aiohttp_server: ServerFactory, status: int, exc_type: type[openai.APIStatusError]
) -> None:
    """openai.AsyncOpenAI raises the status's exception type with our message and code."""
    server = await error_server(aiohttp_server, ProviderType.OPENAI_LIKE, status)
    client = openai.AsyncOpenAI(
        base_url=str(server.make_url("/v1")), api_key="gw-token", max_retries=0
    )
    async with client:
        with pytest.raises(exc_type) as caught:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
    assert caught.value.status_code == status
    assert MESSAGE in caught.value.message
    if status == 401:
        assert caught.value.code == "invalid_api_key"
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "3"
        assert caught.value.code == "rate_limit_exceeded"


ANTHROPIC_CASES = [
    (401, anthropic.AuthenticationError, "authentication_error"),
    (413, anthropic.APIStatusError, "request_too_large"),
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (502, anthropic.InternalServerError, "api_error"),
    (503, anthropic.InternalServerError, "overloaded_error"),
    (504, anthropic.InternalServerError, "timeout_error"),
]


@pytest.mark.parametrize(("status", "exc_type", "error_type"), ANTHROPIC_CASES)
async def test_anthropic_sdk_raises_its_usual_exception(
    aiohttp_server: ServerFactory,
    status: int,
    exc_type: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    """anthropic.AsyncAnthropic raises the status's exception type with the native error type."""
    server = await error_server(aiohttp_server, ProviderType.ANTHROPIC, status)
    client = anthropic.AsyncAnthropic(
        base_url=str(server.make_url("")), api_key="gw-token", max_retries=0
    )
    async with client:
        with pytest.raises(exc_type) as caught:
            await client.messages.create(
                model="claude-3-5-haiku-latest",
                max_tokens=1,
                messages=[{"role": "user", "content": "hi"}],
            )
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"] == {"type": error_type, "message": MESSAGE}


GEMINI_CASES = [
    (401, genai_errors.ClientError, "UNAUTHENTICATED"),
    (413, genai_errors.ClientError, "INVALID_ARGUMENT"),
    (429, genai_errors.ClientError, "RESOURCE_EXHAUSTED"),
    (502, genai_errors.ServerError, "UNAVAILABLE"),
    (503, genai_errors.ServerError, "UNAVAILABLE"),
    (504, genai_errors.ServerError, "DEADLINE_EXCEEDED"),
]


@pytest.mark.parametrize(("status", "exc_type", "grpc_status"), GEMINI_CASES)
async def test_genai_sdk_raises_its_usual_exception(
    aiohttp_server: ServerFactory,
    status: int,
    exc_type: type[genai_errors.APIError],
    grpc_status: str,
) -> None:
    """google.genai raises ClientError/ServerError with our code, status and message."""
    server = await error_server(aiohttp_server, ProviderType.GEMINI, status)
    client = genai.Client(
        api_key="gw-token",
        http_options=genai_types.HttpOptions(
            base_url=str(server.make_url("")),
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )
    with pytest.raises(exc_type) as caught:
        await client.aio.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert caught.value.code == status
    assert caught.value.status == grpc_status
    assert caught.value.message == MESSAGE
