"""The fake upstream's own machinery: connections, waiting, hangs, raw faults, the cutting proxy."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import openai
import pytest

from tests.fakes import Behaviour, FakeUpstream
from tests.fakes.fixtures import CuttingProxyFactory

CHAT = "/v1/chat/completions"
GPT = "gpt-4o-mini"


def bearer(key: str) -> dict[str, str]:
    """An OpenAI-style Authorization header."""
    return {"Authorization": f"Bearer {key}"}


class TestConnections:
    """`open_connections` follows the real TCP connections."""

    async def test_back_to_zero_after_the_sdk_closes(self, fake_upstream: FakeUpstream) -> None:
        """Keep-alive connections stay open while the client lives and are gone after close."""
        fake_upstream.set_key("sk-good")
        client = openai.AsyncOpenAI(
            base_url=f"{fake_upstream.url}/v1", api_key="sk-good", max_retries=0
        )
        await client.models.list()
        await client.models.list()
        assert fake_upstream.open_connections == 1
        assert fake_upstream.accepted_connections == 1
        await client.close()
        await fake_upstream.wait_for_connections(0)
        assert fake_upstream.open_connections == 0

    async def test_client_leaving_mid_stream_frees_the_connection(
        self, fake_upstream: FakeUpstream
    ) -> None:
        """A client that drops a slow stream after its first chunk leaves no connection open."""
        fake_upstream.set_key("sk-good")
        fake_upstream.chunk_delay = 0.05
        body = {"model": GPT, "stream": True, "messages": []}
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                fake_upstream.url + CHAT, json=body, headers=bearer("sk-good")
            )
            first = await response.content.readline()
            assert first.startswith(b"data: ")
            assert fake_upstream.open_connections == 1
            response.close()
            await fake_upstream.wait_for_connections(0)

    async def test_hang_holds_until_the_client_gives_up(self, fake_upstream: FakeUpstream) -> None:
        """A HANG key never answers; the connection closes when the client cancels."""
        fake_upstream.set_key("sk-hang", Behaviour.HANG)
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(
                session.post(
                    fake_upstream.url + CHAT, json={"model": GPT}, headers=bearer("sk-hang")
                )
            )
            await fake_upstream.wait_for_requests(1)
            assert not request.done()
            assert fake_upstream.open_connections == 1
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
        await fake_upstream.wait_for_connections(0)

    async def test_close_ends_a_hanging_request(self) -> None:
        """Closing the fake drops a hanging request's connection instead of waiting on it."""
        fake = FakeUpstream()
        await fake.start()
        fake.set_key("sk-hang", Behaviour.HANG)
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(
                session.post(fake.url + CHAT, json={"model": GPT}, headers=bearer("sk-hang"))
            )
            await fake.wait_for_requests(1)
            await fake.close()
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await request


class TestWaiting:
    """Waiting for requests is event based and bounded."""

    async def test_wait_returns_once_requests_arrive(self, fake_upstream: FakeUpstream) -> None:
        """wait_for_requests wakes when the n-th request is recorded and returns them."""
        fake_upstream.set_key("sk-good")
        waiter = asyncio.create_task(fake_upstream.wait_for_requests(2))
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.get(fake_upstream.url + "/v1/models", headers=bearer("sk-good")):
                    pass
        seen = await waiter
        assert [r.path for r in seen] == ["/v1/models", "/v1/models"]

    async def test_wait_times_out_with_a_clear_message(self, fake_upstream: FakeUpstream) -> None:
        """Waiting for requests that never come raises TimeoutError naming what was awaited."""
        with pytest.raises(TimeoutError, match="1 requests"):
            await fake_upstream.wait_for_requests(1, within=0.01)


class TestAnswers:
    """Odd requests and raw transport behaviours."""

    @pytest.mark.parametrize(
        ("path", "status", "marker"),
        [
            (CHAT, 401, b"You didn't provide an API key"),
            ("/v1/messages", 401, b"x-api-key header is required"),
            (f"/v1beta/models/{GPT}:generateContent", 403, b"PERMISSION_DENIED"),
        ],
    )
    async def test_missing_key_gets_the_provider_answer(
        self, fake_upstream: FakeUpstream, path: str, status: int, marker: bytes
    ) -> None:
        """A request without any key gets that provider's own missing-credential error."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(fake_upstream.url + path, json={"model": GPT}) as response,
        ):
            body = await response.read()
        assert response.status == status
        assert marker in body
        assert fake_upstream.requests[0].key is None

    @pytest.mark.parametrize(
        ("path", "body"),
        [
            (CHAT, {"model": GPT, "stream": True}),
            ("/v1/messages", {"model": "claude", "stream": True}),
            ("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", {"contents": []}),
        ],
    )
    async def test_sent_holds_the_exact_bytes(
        self, fake_upstream: FakeUpstream, path: str, body: dict[str, object]
    ) -> None:
        """A recorded request's `sent` equals the body bytes the client received."""
        fake_upstream.set_key("key-1")
        headers = {**bearer("key-1"), "x-api-key": "key-1", "x-goog-api-key": "key-1"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(fake_upstream.url + path, json=body, headers=headers) as r,
        ):
            received = await r.read()
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert received == bytes(fake_upstream.requests[0].sent)
        assert received.count(b"data: ") >= fake_upstream.chunk_count

    async def test_invalid_json_is_a_bad_request(self, fake_upstream: FakeUpstream) -> None:
        """A body that is not a JSON object gets the provider's 400."""
        fake_upstream.set_key("sk-good")
        async with (
            aiohttp.ClientSession() as session,
            session.post(fake_upstream.url + CHAT, data=b"{nope", headers=bearer("sk-good")) as r,
        ):
            body = await r.json()
        assert r.status == 400
        assert body["error"]["type"] == "invalid_request_error"

    async def test_unknown_path_is_not_found(self, fake_upstream: FakeUpstream) -> None:
        """An endpoint the fake does not serve gets OpenAI's 404 Invalid URL."""
        fake_upstream.set_key("sk-good")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                fake_upstream.url + "/v1/nothing", json={}, headers=bearer("sk-good")
            ) as r,
        ):
            body = await r.json()
        assert r.status == 404
        assert body["error"]["message"] == "Invalid URL (POST /v1/nothing)"

    async def test_cut_non_streaming_body_is_truncated(self, fake_upstream: FakeUpstream) -> None:
        """CUT_STREAM on a plain request promises a Content-Length and sends only half."""
        fake_upstream.set_key("sk-cut", Behaviour.CUT_STREAM)
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                fake_upstream.url + CHAT, json={"model": GPT}, headers=bearer("sk-cut")
            )
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()

    async def test_garbage_is_not_http(self, fake_upstream: FakeUpstream) -> None:
        """GARBAGE makes an HTTP client fail to parse the status line."""
        fake_upstream.set_key("sk-g", Behaviour.GARBAGE)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientResponseError, match="status line"):
                await session.post(fake_upstream.url + CHAT, json={}, headers=bearer("sk-g"))
        await fake_upstream.wait_for_connections(0)

    async def test_slow_first_byte_still_answers(self, fake_upstream: FakeUpstream) -> None:
        """SLOW_FIRST_BYTE delays, then answers a normal success."""
        fake_upstream.set_key("sk-slow", Behaviour.SLOW_FIRST_BYTE, delay=0.01)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                fake_upstream.url + CHAT, json={"model": GPT}, headers=bearer("sk-slow")
            ) as r,
        ):
            body = await r.json()
        assert body["choices"][0]["message"]["content"] == fake_upstream.text_for(GPT)

    async def test_default_behaviour_serves_unknown_keys(self, fake_upstream: FakeUpstream) -> None:
        """With default_behaviour set, keys never configured behave so instead of invalid."""
        fake_upstream.default_behaviour = Behaviour.OK
        async with (
            aiohttp.ClientSession() as session,
            session.post(fake_upstream.url + CHAT, json={"model": GPT}, headers=bearer("any")) as r,
        ):
            assert r.status == 200

    async def test_records_and_reset(self, fake_upstream: FakeUpstream) -> None:
        """Requests are recorded verbatim; reset forgets them but keeps the key rules."""
        fake_upstream.set_key("AIza-k", Behaviour.NO_QUOTA)
        url = f"{fake_upstream.url}/v1beta/models/gemini-2.0-flash:generateContent?key=AIza-k&x=1"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json={"contents": []}, headers={"X-Extra": "1"}) as r,
        ):
            assert r.status == 429
        [seen] = fake_upstream.requests
        assert seen.raw_path.endswith(":generateContent?key=AIza-k&x=1")
        assert (seen.key, seen.model, seen.family, seen.stream) == (
            "AIza-k",
            "gemini-2.0-flash",
            "gemini",
            False,
        )
        assert seen.headers["x-extra"] == "1" and seen.json() == {"contents": []}
        fake_upstream.reset()
        assert fake_upstream.requests == [] and not fake_upstream.calls_by_key
        rule = fake_upstream.rule_for("AIza-k", "any")
        assert rule is not None and rule.behaviour is Behaviour.NO_QUOTA


class TestCuttingProxy:
    """The TCP proxy forwards faithfully and cuts at the byte asked for."""

    async def test_forwards_without_a_limit(
        self, fake_upstream: FakeUpstream, cutting_proxy: CuttingProxyFactory
    ) -> None:
        """With no limit the stream passes through intact."""
        fake_upstream.set_key("sk-good")
        proxy = await cutting_proxy(fake_upstream.port)
        body = {"model": GPT, "stream": True}
        async with (
            aiohttp.ClientSession() as session,
            session.post(proxy.url + CHAT, json=body, headers=bearer("sk-good")) as r,
        ):
            raw = await r.read()
        assert raw.endswith(b"data: [DONE]\n\n")
        assert proxy.cuts == 0

    async def test_cuts_after_n_response_bytes(
        self, fake_upstream: FakeUpstream, cutting_proxy: CuttingProxyFactory
    ) -> None:
        """The client receives exactly N bytes of the response, then the connection drops."""
        fake_upstream.set_key("sk-good")
        proxy = await cutting_proxy(fake_upstream.port, cut_after_bytes=600)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-good\r\n"
            b'Content-Length: 37\r\n\r\n{"model": "gpt-4o-mini", "stream": 1}'
        )
        writer.write(request)
        received = await reader.read(-1)
        writer.close()
        assert len(received) == 600
        assert received.startswith(b"HTTP/1.1 200")
        assert proxy.cuts == 1

    async def test_sdk_sees_the_cut_as_an_error(
        self, fake_upstream: FakeUpstream, cutting_proxy: CuttingProxyFactory
    ) -> None:
        """A stream cut by the proxy makes the openai SDK raise rather than end cleanly."""
        fake_upstream.set_key("sk-good")
        proxy = await cutting_proxy(fake_upstream.port, cut_after_bytes=1500)
        async with openai.AsyncOpenAI(
            base_url=f"{proxy.url}/v1", api_key="sk-good", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model=GPT, messages=[{"role": "user", "content": "hi"}], stream=True
            )
            with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
                async for _ in stream:
                    pass

    async def test_refused_port_refuses(self, refused_port: int) -> None:
        """Nothing listens on refused_port: connecting fails at once."""
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorError):
                await session.get(f"http://127.0.0.1:{refused_port}/")
