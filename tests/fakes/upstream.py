"""A fake LLM provider: one real aiohttp server on 127.0.0.1 speaking all three API families.

Tests configure how each key (and model) behaves, point the gateway or an SDK at
`fake.url`, and read back what the fake saw: the requests, the calls per key and
the TCP connections open right now. See `FakeUpstream`.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from llmgateway.core.constants import ProviderType
from tests.fakes.anthropic_family import AnthropicFamily, is_anthropic
from tests.fakes.family import ERROR_BEHAVIOURS, Behaviour, Call, Family, Operation, Reply
from tests.fakes.gemini_family import GeminiFamily, is_gemini
from tests.fakes.openai_family import OpenAIFamily

GARBAGE_BYTES: Final = b"\x00\xff\xfeSSH-2.0-this is not HTTP\r\n\r\n\x13\x37"
"""What a GARBAGE key gets instead of an HTTP response."""

_BODY_OPERATIONS: Final = frozenset(
    {
        Operation.CHAT,
        Operation.EMBEDDINGS,
        Operation.MESSAGES,
        Operation.COUNT_TOKENS,
        Operation.GENERATE,
    }
)


@dataclass(frozen=True, slots=True)
class KeyRule:
    """How one key (for some models) behaves."""

    behaviour: Behaviour = Behaviour.OK
    retry_after: float = 7.0
    """RATE_LIMITED: seconds in Retry-After / reset headers / Gemini's retryDelay."""
    delay: float = 1.0
    """SLOW_FIRST_BYTE: seconds before the answer starts."""
    after_chunks: int | None = None
    """CUT_STREAM / STREAM_ERROR_EVENT: SSE events sent first (None: half of them)."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as it reached the fake (recorded before the behaviour is applied)."""

    method: str
    path: str
    """Decoded path."""
    raw_path: str
    """Path and query exactly as sent on the request line."""
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]
    """Case-insensitive: `"authorization" in r.headers` works."""
    body: bytes
    key: str | None
    """The key read the provider's way, None when the request carried none."""
    model: str
    family: ProviderType
    stream: bool
    sent: bytearray = field(default_factory=bytearray, compare=False)
    """Every body byte the fake wrote in answer (SSE frames included), for byte-exact checks."""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class _Waiters:
    """Wakes coroutines waiting for a predicate on the fake's state (no polling)."""

    def __init__(self) -> None:
        self._events: set[asyncio.Event] = set()

    def notify(self) -> None:
        for event in self._events:
            event.set()

    async def until(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        try:
            async with asyncio.timeout(within):
                while not predicate():
                    event = asyncio.Event()
                    self._events.add(event)
                    try:
                        await event.wait()
                    finally:
                        self._events.discard(event)
        except TimeoutError:
            raise TimeoutError(f"fake upstream: still waiting for {what} after {within}s") from None


class _CountingServer(web.Server):
    """aiohttp's low-level server, telling the fake when a TCP connection opens or closes."""

    def __init__(self, handler: Callable[[web.BaseRequest], Any], on_change: Callable[[], None]):
        super().__init__(handler, handler_cancellation=True, access_log=None)
        self.open: set[RequestHandler] = set()
        self.accepted = 0
        self._on_change = on_change

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.open.add(handler)
        self.accepted += 1
        self._on_change()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.open.discard(handler)
        self._on_change()


@final
class FakeUpstream:
    """A fake OpenAI-compatible, Anthropic and Gemini upstream on 127.0.0.1.

    Usage::

        async with FakeUpstream() as fake:
            fake.set_key("sk-good")
            fake.set_key("sk-bad", Behaviour.INVALID_KEY)
            fake.set_key("sk-mixed", Behaviour.NO_MODEL, models=["gpt-4o"])
            ...  # point a client at fake.url
            await fake.wait_for_requests(2)
            assert fake.calls_by_key["sk-bad"] == 1

    Unknown keys get the provider's invalid-key error unless `default_behaviour`
    is set. Replies echo "hello from <model> #1 #2 ..." (`text_for`), split
    into `chunk_count` pieces when streamed, `chunk_delay` seconds apart.
    """

    def __init__(self, *, chunk_count: int = 20, chunk_delay: float = 0.0) -> None:
        self.chunk_count = chunk_count
        self.chunk_delay = chunk_delay
        self.default_behaviour: Behaviour | None = None
        """Behaviour of keys never set; None: the provider's invalid-key error."""
        self.requests: list[RecordedRequest] = []
        self.calls_by_key: Counter[str] = Counter()
        self._rules: dict[str, dict[str | None, KeyRule]] = {}
        self._families: dict[ProviderType, Family] = {
            ProviderType.OPENAI_LIKE: OpenAIFamily(),
            ProviderType.ANTHROPIC: AnthropicFamily(),
            ProviderType.GEMINI: GeminiFamily(),
        }
        self._waiters = _Waiters()
        self._closing = asyncio.Event()
        self._server: _CountingServer | None = None
        self._runner: web.ServerRunner | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port."""
        self._server = _CountingServer(self._handle, self._waiters.notify)
        self._runner = web.ServerRunner(self._server, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening, end hanging and slow answers, close every connection."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            self._server.open.clear()
        self._waiters.notify()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        """The TCP port the fake listens on."""
        if self._port is None:
            raise RuntimeError("FakeUpstream is not started")
        return self._port

    @property
    def url(self) -> str:
        """The origin, e.g. "http://127.0.0.1:40123" (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    # -- configuration -----------------------------------------------------------------------

    def set_key(
        self,
        key: str,
        behaviour: Behaviour = Behaviour.OK,
        models: Iterable[str] | None = None,
        *,
        retry_after: float = 7.0,
        delay: float = 1.0,
        after_chunks: int | None = None,
    ) -> None:
        """Make `key` behave so, for every model or only for `models`.

        A per-model rule wins over the key-wide one; a known key with no rule
        for a model answers OK. Calling again replaces the rule.
        """
        rule = KeyRule(behaviour, retry_after, delay, after_chunks)
        rules = self._rules.setdefault(key, {})
        for model in [None] if models is None else models:
            rules[model] = rule

    def forget_key(self, key: str) -> None:
        """Make `key` unknown again (so invalid, unless `default_behaviour` is set)."""
        self._rules.pop(key, None)

    def rule_for(self, key: str, model: str) -> KeyRule | None:
        """The rule applied to `key` and `model`; None when the key is unknown."""
        rules = self._rules.get(key)
        if rules is None:
            return None if self.default_behaviour is None else KeyRule(self.default_behaviour)
        return rules.get(model) or rules.get(None) or KeyRule()

    def text_for(self, model: str) -> str:
        """The reply text for `model`, the same streamed or not."""
        return f"hello from {model}" + "".join(f" #{i}" for i in range(1, self.chunk_count))

    def reset(self) -> None:
        """Forget recorded requests and call counts (key rules stay)."""
        self.requests.clear()
        self.calls_by_key.clear()

    # -- observation -------------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """TCP connections to the fake open right now."""
        return 0 if self._server is None else len(self._server.open)

    @property
    def accepted_connections(self) -> int:
        """TCP connections accepted since start."""
        return 0 if self._server is None else self._server.accepted

    async def wait_for_requests(self, n: int, within: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least `n` requests were recorded; returns them all."""
        await self._waiters.until(lambda: len(self.requests) >= n, within, f"{n} requests")
        return list(self.requests)

    async def wait_for_connections(self, n: int, within: float = 5.0) -> None:
        """Wait until exactly `n` TCP connections are open (e.g. 0 after a client left)."""
        await self._waiters.until(
            lambda: self.open_connections == n, within, f"{n} open connections"
        )

    # -- serving -----------------------------------------------------------------------------

    def _family_of(self, request: web.BaseRequest) -> Family:
        if is_gemini(request.path):
            return self._families[ProviderType.GEMINI]
        if is_anthropic(request.method, request.path, request.headers):
            return self._families[ProviderType.ANTHROPIC]
        return self._families[ProviderType.OPENAI_LIKE]

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.content.read()
        family = self._family_of(request)
        key = family.key_of(request.headers, request.query)
        call = family.parse(request.method, request.path, request.query, body, self.chunk_count)
        sent = self._record(request, body, key, call).sent
        if key is None:
            return self._reply(family, family.missing_key(), sent)
        rule = self.rule_for(key, call.model) or KeyRule(Behaviour.INVALID_KEY)
        if rule.behaviour in ERROR_BEHAVIOURS:
            return self._reply(family, family.error(rule.behaviour, call, rule.retry_after), sent)
        if call.operation is Operation.UNKNOWN:
            return self._reply(family, family.not_found(request.method, request.path), sent)
        if call.operation in _BODY_OPERATIONS and call.payload is None:
            return self._reply(family, family.error(Behaviour.BAD_REQUEST, call, 0.0), sent)
        return await self._behave(request, family, call, rule, sent)

    def _record(
        self, request: web.BaseRequest, body: bytes, key: str | None, call: Call
    ) -> RecordedRequest:
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            raw_path=request.raw_path,
            query=MultiDictProxy(MultiDict(request.query)),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            key=key,
            model=call.model,
            family=call.family,
            stream=call.stream,
        )
        self.requests.append(record)
        if key is not None:
            self.calls_by_key[key] += 1
        self._waiters.notify()
        return record

    async def _behave(
        self, request: web.BaseRequest, family: Family, call: Call, rule: KeyRule, sent: bytearray
    ) -> web.StreamResponse:
        match rule.behaviour:
            case Behaviour.HANG:
                await self._closing.wait()
                return await self._abandon(request)
            case Behaviour.GARBAGE:
                self._transport(request).write(GARBAGE_BYTES)
                sent += GARBAGE_BYTES
                return await self._abandon(request, abort=False)
            case Behaviour.SLOW_FIRST_BYTE:
                if not await self._pause(rule.delay):
                    return await self._abandon(request)
            case Behaviour.CUT_STREAM if not call.stream:
                return await self._cut_body(request, family.success(call), sent)
            case _:
                pass
        if not call.stream:
            return self._reply(family, family.success(call), sent)
        return await self._stream(request, family, call, rule, sent)

    async def _stream(
        self, request: web.BaseRequest, family: Family, call: Call, rule: KeyRule, sent: bytearray
    ) -> web.StreamResponse:
        events = family.stream(call)
        cut_at = len(events) // 2 if rule.after_chunks is None else rule.after_chunks
        headers = {**family.extra_headers(), "Content-Type": family.stream_content_type}
        response = web.StreamResponse(status=200, headers=headers | {"Cache-Control": "no-cache"})
        await response.prepare(request)
        for index, event in enumerate(events):
            if index == cut_at and rule.behaviour is Behaviour.CUT_STREAM:
                return await self._abandon(request)
            if index == cut_at and rule.behaviour is Behaviour.STREAM_ERROR_EVENT:
                sent += family.stream_error()
                await response.write(family.stream_error())
                break
            sent += event
            await response.write(event)
            if self.chunk_delay and not await self._pause(self.chunk_delay):
                return await self._abandon(request)
        await response.write_eof()
        return response

    async def _cut_body(
        self, request: web.BaseRequest, reply: Reply, sent: bytearray
    ) -> web.StreamResponse:
        """Promise the whole body in Content-Length, send half of it, abort."""
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        response.content_length = len(reply.body)
        await response.prepare(request)
        sent += reply.body[: len(reply.body) // 2]
        await response.write(reply.body[: len(reply.body) // 2])
        return await self._abandon(request)

    def _reply(self, family: Family, reply: Reply, sent: bytearray) -> web.Response:
        sent += reply.body
        headers = {**family.extra_headers(), **reply.headers}
        return web.Response(status=reply.status, headers=headers, body=reply.body)

    async def _pause(self, seconds: float) -> bool:
        """Sleep `seconds`; False when the fake started closing meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        except TimeoutError:
            return True
        return False

    def _transport(self, request: web.BaseRequest) -> asyncio.Transport:
        transport = request.transport
        if not isinstance(transport, asyncio.Transport):
            raise ConnectionResetError("fake upstream: the client has gone")
        return transport

    async def _abandon(self, request: web.BaseRequest, *, abort: bool = True) -> web.StreamResponse:
        """Drop the connection without a proper HTTP end; never returns normally.

        With `handler_cancellation` aiohttp cancels this handler once the
        transport is gone, so no response is written after the cut.
        """
        transport = self._transport(request)
        if abort:
            transport.abort()
        else:
            transport.close()
        await asyncio.Future()  # cancelled by aiohttp when the connection is lost
        raise AssertionError("unreachable")
