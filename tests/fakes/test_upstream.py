"""The fake upstream answers like the real providers: proven with the official SDKs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import httpx
import httpx2
import openai
import pytest
from anthropic.types import MessageParam
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from openai.types.chat import ChatCompletionMessageParam

from tests.fakes import Behaviour, FakeUpstream

GPT = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-latest"
GEMINI = "gemini-2.0-flash"
OPENAI_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
ANTHROPIC_MESSAGES: list[MessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def openai_client(fake_upstream: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    """An OpenAI SDK client for key "sk-good" pointed at the fake, without retries."""
    client = openai.AsyncOpenAI(
        base_url=f"{fake_upstream.url}/v1", api_key="sk-good", max_retries=0
    )
    yield client
    await client.close()


def openai_with(fake: FakeUpstream, key: str) -> openai.AsyncOpenAI:
    """An OpenAI SDK client with `key`, no retries."""
    return openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key=key, max_retries=0)


def anthropic_with(fake: FakeUpstream, key: str) -> anthropic.AsyncAnthropic:
    """An Anthropic SDK client with `key`, no retries."""
    return anthropic.AsyncAnthropic(base_url=fake.url, api_key=key, max_retries=0)


def gemini_with(fake: FakeUpstream, key: str) -> genai.Client:
    """A google-genai client with `key`, pointed at the fake."""
    return genai.Client(api_key=key, http_options=genai_types.HttpOptions(base_url=fake.url))


class TestOpenAI:
    """OpenAI-compatible chat completions through the openai SDK."""

    async def test_chat_returns_the_echo_text(
        self, fake_upstream: FakeUpstream, openai_client: openai.AsyncOpenAI
    ) -> None:
        """A good key gets a chat.completion whose content echoes the model."""
        fake_upstream.set_key("sk-good")
        completion = await openai_client.chat.completions.create(
            model=GPT, messages=OPENAI_MESSAGES
        )
        assert completion.choices[0].message.content == fake_upstream.text_for(GPT)
        assert completion.usage is not None and completion.usage.completion_tokens == 20
        [seen] = fake_upstream.requests
        assert (seen.key, seen.model, seen.path) == ("sk-good", GPT, "/v1/chat/completions")
        assert seen.headers["authorization"] == "Bearer sk-good"

    async def test_stream_yields_every_chunk(
        self, fake_upstream: FakeUpstream, openai_client: openai.AsyncOpenAI
    ) -> None:
        """A streamed completion arrives in chunk_count pieces that join to the same text."""
        fake_upstream.set_key("sk-good")
        stream = await openai_client.chat.completions.create(
            model=GPT, messages=OPENAI_MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        pieces, usage = [], None
        async for chunk in stream:
            pieces += [c.delta.content for c in chunk.choices if c.delta.content]
            usage = chunk.usage or usage
        assert "".join(pieces) == fake_upstream.text_for(GPT)
        assert len(pieces) == fake_upstream.chunk_count
        assert usage is not None and usage.completion_tokens == fake_upstream.chunk_count

    @pytest.mark.parametrize(
        ("behaviour", "error", "status", "code"),
        [
            (Behaviour.INVALID_KEY, openai.AuthenticationError, 401, "invalid_api_key"),
            (Behaviour.NO_QUOTA, openai.RateLimitError, 429, "insufficient_quota"),
            (Behaviour.RATE_LIMITED, openai.RateLimitError, 429, "rate_limit_exceeded"),
            (Behaviour.NO_MODEL, openai.NotFoundError, 404, "model_not_found"),
            (
                Behaviour.NO_ACCESS,
                openai.PermissionDeniedError,
                403,
                "unsupported_country_region_territory",
            ),
            (Behaviour.SERVER_ERROR, openai.InternalServerError, 500, None),
            (Behaviour.UNAVAILABLE, openai.InternalServerError, 503, None),
            (Behaviour.BAD_REQUEST, openai.BadRequestError, 400, "context_length_exceeded"),
        ],
    )
    async def test_error_behaviours_raise_the_sdk_exception(
        self,
        fake_upstream: FakeUpstream,
        behaviour: Behaviour,
        error: type[openai.APIStatusError],
        status: int,
        code: str | None,
    ) -> None:
        """Each error behaviour makes the SDK raise its usual exception with OpenAI's code."""
        fake_upstream.set_key("sk-x", behaviour, retry_after=3)
        async with openai_with(fake_upstream, "sk-x") as client:
            with pytest.raises(error) as raised:
                await client.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES)
        assert raised.value.status_code == status
        assert raised.value.code == code

    async def test_rate_limit_carries_the_retry_time(self, fake_upstream: FakeUpstream) -> None:
        """A rate-limited key's 429 says when to retry in Retry-After and the reset header."""
        fake_upstream.set_key("sk-rl", Behaviour.RATE_LIMITED, retry_after=3)
        async with openai_with(fake_upstream, "sk-rl") as client:
            with pytest.raises(openai.RateLimitError) as raised:
                await client.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES)
        assert raised.value.response.headers["retry-after"] == "3"
        assert raised.value.response.headers["x-ratelimit-reset-requests"] == "3s"

    async def test_unknown_key_is_invalid(self, fake_upstream: FakeUpstream) -> None:
        """A key never configured gets OpenAI's 401 invalid_api_key."""
        async with openai_with(fake_upstream, "sk-who") as client:
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()
        assert fake_upstream.calls_by_key["sk-who"] == 1

    async def test_no_model_only_for_the_named_models(self, fake_upstream: FakeUpstream) -> None:
        """NO_MODEL set for one model leaves the key working for the others."""
        fake_upstream.set_key("sk-m", Behaviour.NO_MODEL, models=["gpt-4o"])
        async with openai_with(fake_upstream, "sk-m") as client:
            with pytest.raises(openai.NotFoundError, match="gpt-4o"):
                await client.chat.completions.create(model="gpt-4o", messages=OPENAI_MESSAGES)
            ok = await client.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES)
        assert ok.choices[0].message.content == fake_upstream.text_for(GPT)

    async def test_stream_error_event_raises(self, fake_upstream: FakeUpstream) -> None:
        """An in-band error event inside a 200 stream makes the SDK raise APIError."""
        fake_upstream.set_key("sk-e", Behaviour.STREAM_ERROR_EVENT)
        async with openai_with(fake_upstream, "sk-e") as client:
            stream = await client.chat.completions.create(
                model=GPT, messages=OPENAI_MESSAGES, stream=True
            )
            with pytest.raises(openai.APIError, match="server had an error"):
                async for _ in stream:
                    pass

    async def test_cut_stream_raises(self, fake_upstream: FakeUpstream) -> None:
        """A stream cut midway makes the SDK's iteration raise, not end cleanly."""
        fake_upstream.set_key("sk-cut", Behaviour.CUT_STREAM)
        pieces: list[str] = []
        async with openai_with(fake_upstream, "sk-cut") as client:
            stream = await client.chat.completions.create(
                model=GPT, messages=OPENAI_MESSAGES, stream=True
            )
            with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
                async for chunk in stream:
                    pieces += [c.delta.content or "" for c in chunk.choices]
        assert 0 < len(pieces) < fake_upstream.chunk_count

    async def test_garbage_is_a_connection_error(self, fake_upstream: FakeUpstream) -> None:
        """Bytes that are not HTTP make the SDK raise APIConnectionError."""
        fake_upstream.set_key("sk-g", Behaviour.GARBAGE)
        async with openai_with(fake_upstream, "sk-g") as client:
            with pytest.raises(openai.APIConnectionError):
                await client.chat.completions.create(model=GPT, messages=OPENAI_MESSAGES)

    async def test_embeddings_and_models(
        self, fake_upstream: FakeUpstream, openai_client: openai.AsyncOpenAI
    ) -> None:
        """Embeddings (base64 or float) and the model list parse in the SDK."""
        fake_upstream.set_key("sk-good")
        vectors = await openai_client.embeddings.create(model="e", input=["a", "b"])
        floats = await openai_client.embeddings.create(
            model="e", input="a", encoding_format="float"
        )
        models = await openai_client.models.list()
        assert [len(v.embedding) for v in vectors.data] == [8, 8]
        assert floats.data[0].embedding == pytest.approx(vectors.data[0].embedding)
        assert GPT in [m.id for m in models.data]


class TestAnthropic:
    """Anthropic messages through the anthropic SDK."""

    async def test_message_returns_the_echo_text(self, fake_upstream: FakeUpstream) -> None:
        """A good key gets a message whose text block echoes the model."""
        fake_upstream.set_key("sk-ant-good")
        async with anthropic_with(fake_upstream, "sk-ant-good") as client:
            message = await client.messages.create(
                model=CLAUDE, max_tokens=1, messages=ANTHROPIC_MESSAGES
            )
        assert message.content[0].type == "text"
        assert message.content[0].text == fake_upstream.text_for(CLAUDE)
        assert message.stop_reason == "end_turn"
        [seen] = fake_upstream.requests
        assert (seen.key, seen.model, seen.family) == ("sk-ant-good", CLAUDE, "anthropic")

    async def test_stream_has_the_real_event_sequence(self, fake_upstream: FakeUpstream) -> None:
        """A streamed message parses in the SDK with every event of the real sequence."""
        fake_upstream.set_key("sk-ant-good")
        async with anthropic_with(fake_upstream, "sk-ant-good") as client:
            stream = await client.messages.create(
                model=CLAUDE, max_tokens=64, messages=ANTHROPIC_MESSAGES, stream=True
            )
            events = [event async for event in stream]
        kinds = [event.type for event in events]
        assert kinds[:3] == ["message_start", "content_block_start", "content_block_delta"]
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        text = "".join(e.delta.text for e in events if e.type == "content_block_delta")  # type: ignore[union-attr]
        assert text == fake_upstream.text_for(CLAUDE)

    async def test_stream_helper_gets_the_final_text(self, fake_upstream: FakeUpstream) -> None:
        """The SDK's messages.stream helper accumulates the whole text."""
        fake_upstream.set_key("sk-ant-good")
        async with (
            anthropic_with(fake_upstream, "sk-ant-good") as client,
            client.messages.stream(
                model=CLAUDE, max_tokens=64, messages=ANTHROPIC_MESSAGES
            ) as stream,
        ):
            text = await stream.get_final_text()
        assert text == fake_upstream.text_for(CLAUDE)

    @pytest.mark.parametrize(
        ("behaviour", "status", "error_type"),
        [
            (Behaviour.INVALID_KEY, 401, "authentication_error"),
            (Behaviour.NO_QUOTA, 400, "invalid_request_error"),
            (Behaviour.RATE_LIMITED, 429, "rate_limit_error"),
            (Behaviour.NO_MODEL, 404, "not_found_error"),
            (Behaviour.NO_ACCESS, 403, "permission_error"),
            (Behaviour.SERVER_ERROR, 500, "api_error"),
            (Behaviour.UNAVAILABLE, 503, "api_error"),
            (Behaviour.OVERLOADED, 529, "overloaded_error"),
            (Behaviour.BAD_REQUEST, 400, "invalid_request_error"),
        ],
    )
    async def test_error_behaviours_raise_status_errors(
        self, fake_upstream: FakeUpstream, behaviour: Behaviour, status: int, error_type: str
    ) -> None:
        """Each error behaviour makes the SDK raise APIStatusError with Anthropic's error type."""
        fake_upstream.set_key("sk-ant-x", behaviour)
        async with anthropic_with(fake_upstream, "sk-ant-x") as client:
            with pytest.raises(anthropic.APIStatusError) as raised:
                await client.messages.create(
                    model=CLAUDE, max_tokens=1, messages=ANTHROPIC_MESSAGES
                )
        assert raised.value.status_code == status
        assert isinstance(raised.value.body, dict)
        assert raised.value.body["error"]["type"] == error_type
        assert raised.value.response.headers["request-id"].startswith("req_")

    async def test_specific_exceptions(self, fake_upstream: FakeUpstream) -> None:
        """Invalid key, credit balance, rate limit and overload map to the SDK's own classes."""
        cases = {
            "k-invalid": (Behaviour.INVALID_KEY, anthropic.AuthenticationError),
            "k-credit": (Behaviour.NO_QUOTA, anthropic.BadRequestError),
            "k-rate": (Behaviour.RATE_LIMITED, anthropic.RateLimitError),
            "k-over": (Behaviour.OVERLOADED, anthropic.InternalServerError),
        }
        for key, (behaviour, error) in cases.items():
            fake_upstream.set_key(key, behaviour, retry_after=5)
            async with anthropic_with(fake_upstream, key) as client:
                with pytest.raises(error) as raised:
                    await client.messages.create(
                        model=CLAUDE, max_tokens=1, messages=ANTHROPIC_MESSAGES
                    )
            if behaviour is Behaviour.RATE_LIMITED:
                assert raised.value.response.headers["retry-after"] == "5"
            if behaviour is Behaviour.NO_QUOTA:
                assert "credit balance is too low" in raised.value.message

    async def test_stream_error_event_raises(self, fake_upstream: FakeUpstream) -> None:
        """An `event: error` inside a 200 stream makes the SDK raise."""
        fake_upstream.set_key("sk-ant-e", Behaviour.STREAM_ERROR_EVENT)
        async with anthropic_with(fake_upstream, "sk-ant-e") as client:
            stream = await client.messages.create(
                model=CLAUDE, max_tokens=64, messages=ANTHROPIC_MESSAGES, stream=True
            )
            with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
                async for _ in stream:
                    pass

    async def test_models_list_is_anthropic_shaped(self, fake_upstream: FakeUpstream) -> None:
        """GET /v1/models from the Anthropic SDK gets Anthropic's page, not OpenAI's list."""
        fake_upstream.set_key("sk-ant-good")
        async with anthropic_with(fake_upstream, "sk-ant-good") as client:
            ids = [model.id async for model in client.models.list()]
        assert CLAUDE in ids
        assert fake_upstream.requests[0].family == "anthropic"

    async def test_cut_stream_raises(self, fake_upstream: FakeUpstream) -> None:
        """A stream cut midway makes the SDK's iteration raise."""
        fake_upstream.set_key("sk-ant-cut", Behaviour.CUT_STREAM)
        async with anthropic_with(fake_upstream, "sk-ant-cut") as client:
            stream = await client.messages.create(
                model=CLAUDE, max_tokens=64, messages=ANTHROPIC_MESSAGES, stream=True
            )
            with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIError)):
                async for _ in stream:
                    pass


class TestGemini:
    """Gemini generateContent through the google-genai SDK (async)."""

    async def test_generate_returns_the_echo_text(self, fake_upstream: FakeUpstream) -> None:
        """A good key gets candidates[0] text echoing the model, key read from x-goog-api-key."""
        fake_upstream.set_key("AIza-good")
        client = gemini_with(fake_upstream, "AIza-good")
        response = await client.aio.models.generate_content(model=GEMINI, contents="hi")
        await client.aio.aclose()
        assert response.text == fake_upstream.text_for(GEMINI)
        assert response.usage_metadata is not None
        [seen] = fake_upstream.requests
        assert (seen.key, seen.model) == ("AIza-good", GEMINI)
        assert seen.path == f"/v1beta/models/{GEMINI}:generateContent"

    async def test_stream_yields_every_chunk(self, fake_upstream: FakeUpstream) -> None:
        """streamGenerateContent?alt=sse arrives in chunk_count pieces joining to the text."""
        fake_upstream.set_key("AIza-good")
        client = gemini_with(fake_upstream, "AIza-good")
        stream = await client.aio.models.generate_content_stream(model=GEMINI, contents="hi")
        pieces = [chunk.text async for chunk in stream]
        await client.aio.aclose()
        assert "".join(p or "" for p in pieces) == fake_upstream.text_for(GEMINI)
        assert len(pieces) == fake_upstream.chunk_count
        assert fake_upstream.requests[0].query["alt"] == "sse"

    async def test_count_tokens(self, fake_upstream: FakeUpstream) -> None:
        """countTokens answers a total the SDK parses."""
        fake_upstream.set_key("AIza-good")
        client = gemini_with(fake_upstream, "AIza-good")
        counted = await client.aio.models.count_tokens(model=GEMINI, contents="hello")
        await client.aio.aclose()
        assert counted.total_tokens is not None and counted.total_tokens > 0

    @pytest.mark.parametrize(
        ("behaviour", "error", "code", "status", "marker"),
        [
            (
                Behaviour.INVALID_KEY,
                genai_errors.ClientError,
                400,
                "INVALID_ARGUMENT",
                "API_KEY_INVALID",
            ),
            (Behaviour.NO_QUOTA, genai_errors.ClientError, 429, "RESOURCE_EXHAUSTED", "PerDay"),
            (Behaviour.RATE_LIMITED, genai_errors.ClientError, 429, "RESOURCE_EXHAUSTED", '"3s"'),
            (Behaviour.NO_MODEL, genai_errors.ClientError, 404, "NOT_FOUND", GEMINI),
            (Behaviour.NO_ACCESS, genai_errors.ClientError, 403, "PERMISSION_DENIED", "leaked"),
            (Behaviour.BAD_REQUEST, genai_errors.ClientError, 400, "INVALID_ARGUMENT", "contents"),
            (Behaviour.SERVER_ERROR, genai_errors.ServerError, 500, "INTERNAL", "internal"),
            (Behaviour.UNAVAILABLE, genai_errors.ServerError, 503, "UNAVAILABLE", "unavailable"),
            (Behaviour.OVERLOADED, genai_errors.ServerError, 503, "UNAVAILABLE", "overloaded"),
        ],
    )
    async def test_error_behaviours_raise_api_errors(
        self,
        fake_upstream: FakeUpstream,
        behaviour: Behaviour,
        error: type[genai_errors.APIError],
        code: int,
        status: str,
        marker: str,
    ) -> None:
        """Each error behaviour makes the SDK raise its APIError with Google's code and status."""
        fake_upstream.set_key("AIza-x", behaviour, retry_after=3)
        client = gemini_with(fake_upstream, "AIza-x")
        with pytest.raises(error) as raised:
            await client.aio.models.generate_content(model=GEMINI, contents="hi")
        await client.aio.aclose()
        assert (raised.value.code, raised.value.status) == (code, status)
        assert marker in json.dumps(raised.value.details)

    async def test_cut_stream_raises(self, fake_upstream: FakeUpstream) -> None:
        """A stream cut midway makes the SDK's iteration raise."""
        fake_upstream.set_key("AIza-cut", Behaviour.CUT_STREAM)
        client = gemini_with(fake_upstream, "AIza-cut")
        stream = await client.aio.models.generate_content_stream(model=GEMINI, contents="hi")
        with pytest.raises(aiohttp.ClientError):
            async for _ in stream:
                pass
        await client.aio.aclose()

    async def test_stream_error_event_raises(self, fake_upstream: FakeUpstream) -> None:
        """An in-band `{"error": ...}` chunk inside a 200 stream makes the SDK raise ServerError."""
        fake_upstream.set_key("AIza-e", Behaviour.STREAM_ERROR_EVENT, after_chunks=3)
        client = gemini_with(fake_upstream, "AIza-e")
        pieces: list[str] = []
        stream = await client.aio.models.generate_content_stream(model=GEMINI, contents="hi")
        with pytest.raises(genai_errors.ServerError) as raised:
            async for chunk in stream:
                pieces.append(chunk.text or "")
        await client.aio.aclose()
        assert raised.value.code == 503
        assert len(pieces) == 3

    async def test_key_query_parameter(self, fake_upstream: FakeUpstream) -> None:
        """The `key` query parameter authenticates like x-goog-api-key."""
        fake_upstream.set_key("AIza-q")
        url = f"{fake_upstream.url}/v1beta/models/{GEMINI}:generateContent?key=AIza-q"
        async with aiohttp.ClientSession() as session, session.post(url, json={}) as response:
            body = await response.json()
        assert response.status == 200
        assert body["candidates"][0]["content"]["parts"][0]["text"] == fake_upstream.text_for(
            GEMINI
        )
        assert fake_upstream.calls_by_key["AIza-q"] == 1
