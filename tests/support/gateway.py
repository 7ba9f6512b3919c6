"""A real llmgateway in front of the fake upstream, for end-to-end tests.

`gateway_config` builds a configuration (one instance per provider type, each
pointing at the fake upstream, keys in key files under `tmp_path`); a test
adjusts it with `GatewayConfig.set`, then starts the gateway either
in-process (`start_gateway`: aiohttp's TestServer on `create_app`, fast, with
the live pool at hand) or as a real process (`serve_gateway`:
`python -m llmgateway serve --config ...`, waiting for `/-/healthy`).
The keeper is off unless a test turns `keeper.enabled` on.
"""

from __future__ import annotations

import asyncio
import copy
import io
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from google import genai
from google.genai import types as genai_types
from openai.types.chat import ChatCompletionMessageParam
from ruamel.yaml import YAML

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.loader import load_config
from llmgateway.pool.key_pool import KeyPool
from llmgateway.store.protocol import Store
from llmgateway.store.write_queue import WriteQueue
from llmgateway.web.keys import POOL, STORE, WRITE_QUEUE

OPENAI: Final = "oai"
ANTHROPIC: Final = "claude"
GEMINI: Final = "gem"
INSTANCES: Final = (OPENAI, ANTHROPIC, GEMINI)

PROVIDER_TYPES: Final = {OPENAI: "openai_like", ANTHROPIC: "anthropic", GEMINI: "gemini"}
MODELS: Final = {
    OPENAI: "gpt-4o-mini",
    ANTHROPIC: "claude-3-5-haiku-latest",
    GEMINI: "gemini-2.0-flash",
}
TOKENS: Final = {
    OPENAI: "gw-token-openai-0123456789",
    ANTHROPIC: "gw-token-anthropic-0123456789",
    GEMINI: "gw-token-gemini-0123456789",
}
"""The gateway token of each instance (what clients send)."""

STARTUP_TIMEOUT: Final = 20.0
"""Seconds a subprocess gateway gets to answer `/-/healthy`."""


class FakeClock:
    """An epoch-seconds clock that moves only when told (for the pool's cool-downs)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


@dataclass(slots=True)
class GatewayConfig:
    """A gateway configuration under construction, written as YAML plus key files.

    `keys[instance]` are the instance's keys (written to `keys/<instance>/keys.txt`);
    `tree` is the YAML document, changed with `set("providers.oai.timeouts.total", "2s")`.
    """

    tmp_path: Path
    keys: dict[str, list[str]]
    tree: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    def set(self, dotted: str, value: Any) -> None:
        """Set one value by its dotted YAML path, creating sections on the way."""
        node = self.tree
        *parents, last = dotted.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = value

    def provider(self, instance: str) -> dict[str, Any]:
        """The YAML section of one instance (mutable)."""
        section: dict[str, Any] = self.tree["providers"][instance]
        return section

    def write(self) -> Path:
        """Write the key files and the configuration; returns the configuration's path.

        Each file is replaced whole (written aside, then renamed), so a running
        gateway never reads one half-written.
        """
        for instance, keys in self.keys.items():
            folder = self.tmp_path / "keys" / instance
            folder.mkdir(parents=True, exist_ok=True)
            _replace(folder / "keys.txt", "".join(f"{k}\n" for k in keys))
        path = self.tmp_path / "providers.yaml"
        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        text = io.StringIO()
        yaml.dump(copy.deepcopy(self.tree), text)
        _replace(path, text.getvalue())
        return path

    def accessor(self) -> ConfigAccessor:
        """Write, then load the configuration the way `serve` does."""
        return ConfigAccessor(load_config(self.write(), self.env))


def _replace(path: Path, text: str) -> None:
    """Make `text` the content of `path` in one rename (the name aside matches no `*.txt`)."""
    aside = path.with_name(f".{path.name}.new")
    aside.write_text(text, encoding="utf-8")
    aside.replace(path)


def build_config(
    tmp_path: Path, upstream_url: str, keys: Mapping[str, Sequence[str]] | None = None
) -> GatewayConfig:
    """A configuration with one instance per provider type at `upstream_url`, keeper off.

    Retry backoffs are tiny so retries cost no real time.
    """
    keys = dict(keys or {})
    providers: dict[str, Any] = {}
    for instance in INSTANCES:
        providers[instance] = {
            "provider_type": PROVIDER_TYPES[instance],
            "api_base_url": upstream_url,
            "keys_path": str(tmp_path / "keys" / instance),
            "default_model": MODELS[instance],
            "models": {MODELS[instance]: {}},
            "access_control": {"gateway_access_token": TOKENS[instance]},
            "timeouts": {"connect": "2s", "first_byte": "10s", "idle": "10s", "total": "30s"},
            "gateway_policy": {
                "retry": {
                    "on_key_error": {"attempts": 3, "backoff": "1ms", "backoff_factor": 1.0},
                    "on_server_error": {"attempts": 2, "backoff": "1ms", "backoff_factor": 1.0},
                }
            },
        }
    tree: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": free_port(), "max_body_mb": 4},
        "database": {"url": f"sqlite:///{tmp_path / 'data' / 'llmgateway.db'}"},
        "keeper": {"enabled": False},
        "logging": {"level": "warning", "format": "console"},
        "providers": providers,
    }
    return GatewayConfig(
        tmp_path=tmp_path,
        keys={i: list(keys.get(i, ())) for i in INSTANCES},
        tree=tree,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass(frozen=True, slots=True)
class RunningGateway:
    """A started in-process gateway: its URL and the live objects behind it."""

    url: str
    app: web.Application

    @property
    def pool(self) -> KeyPool:
        """The live key pool."""
        return self.app[POOL]

    @property
    def store(self) -> Store:
        """The opened store."""
        return self.app[STORE]

    @property
    def write_queue(self) -> WriteQueue:
        """The write-behind queue."""
        return self.app[WRITE_QUEUE]


type StartGateway = Callable[..., Awaitable[RunningGateway]]
"""`await start_gateway(config, clock=None)`."""


@dataclass(slots=True)
class ServedGateway:
    """A gateway running as `python -m llmgateway serve` in a child process."""

    url: str
    process: asyncio.subprocess.Process
    log_path: Path

    def output(self) -> str:
        """What the process printed so far (stdout and stderr)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


type ServeGateway = Callable[[GatewayConfig], Awaitable[ServedGateway]]


type SpawnGateway = Callable[..., Awaitable[ServedGateway]]
"""`await spawn_gateway(config, *extra_args, log_name="serve.log")`: started, not waited for."""


async def wait_healthy(gateway: ServedGateway) -> None:
    """Poll `/-/healthy` until 200; fail with the process output if it exits or never answers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            if gateway.process.returncode is not None:
                pytest.fail(f"llmgateway serve exited early:\n{gateway.output()}")
            try:
                async with session.get(gateway.url + "/-/healthy") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    pytest.fail(f"llmgateway serve did not become healthy:\n{gateway.output()}")


def openai_client(url: str, token: str = TOKENS[OPENAI]) -> openai.AsyncOpenAI:
    """The official OpenAI SDK pointed at a gateway, SDK retries off."""
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=token, max_retries=0)


def anthropic_client(url: str, token: str = TOKENS[ANTHROPIC]) -> anthropic.AsyncAnthropic:
    """The official Anthropic SDK pointed at a gateway, SDK retries off."""
    return anthropic.AsyncAnthropic(base_url=url, api_key=token, max_retries=0)


def genai_client(url: str, token: str = TOKENS[GEMINI]) -> genai.Client:
    """The official google-genai SDK pointed at a gateway (it never retries by default)."""
    return genai.Client(api_key=token, http_options=genai_types.HttpOptions(base_url=url))


async def ask_openai(url: str, token: str = TOKENS[OPENAI], *, stream: bool = False) -> str:
    """One chat completion through the OpenAI SDK; returns the reply text."""
    async with openai_client(url, token) as client:
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
        if not stream:
            completion = await client.chat.completions.create(
                model=MODELS[OPENAI], messages=messages
            )
            return completion.choices[0].message.content or ""
        pieces: list[str] = []
        chunks = await client.chat.completions.create(
            model=MODELS[OPENAI], messages=messages, stream=True
        )
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        return "".join(pieces)


async def ask_anthropic(url: str, token: str = TOKENS[ANTHROPIC], *, stream: bool = False) -> str:
    """One message through the Anthropic SDK; returns the reply text."""
    async with anthropic_client(url, token) as client:
        if not stream:
            message = await client.messages.create(
                model=MODELS[ANTHROPIC],
                max_tokens=64,
                messages=[{"role": "user", "content": "hi"}],
            )
            return "".join(b.text for b in message.content if b.type == "text")
        async with client.messages.stream(
            model=MODELS[ANTHROPIC], max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as events:
            return "".join([text async for text in events.text_stream])


async def ask_gemini(url: str, token: str = TOKENS[GEMINI], *, stream: bool = False) -> str:
    """One generateContent through the google-genai SDK; returns the reply text."""
    client = genai_client(url, token)
    try:
        if not stream:
            response = await client.aio.models.generate_content(model=MODELS[GEMINI], contents="hi")
            return response.text or ""
        pieces: list[str] = []
        async for chunk in await client.aio.models.generate_content_stream(
            model=MODELS[GEMINI], contents="hi"
        ):
            pieces.append(chunk.text or "")
        return "".join(pieces)
    finally:
        await client.aio.aclose()


ASK: Final = {OPENAI: ask_openai, ANTHROPIC: ask_anthropic, GEMINI: ask_gemini}
"""The SDK call of each instance: `await ASK[instance](url, token, stream=...)`."""


@asynccontextmanager
async def inline_upstream(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 for the body of the block; yields its origin URL."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
