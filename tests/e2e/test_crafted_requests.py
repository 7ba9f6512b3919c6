"""Property: no request a client can craft changes a key's status.

Random requests (seeded; `LLMGW_PROPERTY_SEED` replays one run) of every method,
with paths the providers have and do not have, bodies valid, malformed and odd,
and models configured, unknown and absent, go through the gateway to the fake
upstream, which answers each as the real provider would. Every key works, so no
answer is a key error of the provider: afterwards every key must still be in the
pool as untested or valid, and no key may have been judged.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Final

import aiohttp

from llmgateway.core.constants import Status
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import (
    ANTHROPIC,
    GEMINI,
    INSTANCES,
    MODELS,
    OPENAI,
    TOKENS,
    GatewayConfig,
    StartGateway,
)

REQUESTS: Final = 240
UNKNOWN_MODELS: Final = ("gpt-99-turbo", "claude-0", "gemini-9.9-pro", "models", "..", "%2e%2e")
"""Models no provider serves: the fake answers its provider's model-not-found naming them."""

PATHS: Final = {
    OPENAI: (
        "/v1/chat/completions",
        "/v1/chat/completionz",
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/responses",
        "/v1/files",
        "/v2/chat/completions",
        "/",
        "/v1/chat/completions?stream=true",
    ),
    ANTHROPIC: (
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/messages/batches",
        "/v1/models",
        "/v1/complete",
        "/v1/mesages",
    ),
    GEMINI: (
        "/v1beta/models/{model}:generateContent",
        "/v1beta/models/{model}:streamGenerateContent?alt=sse",
        "/v1beta/models/{model}:countTokens",
        "/v1beta/models/{model}:bogusMethod",
        "/v1beta/models/{model}:embedContent",
        "/v1beta/models",
        "/v1beta/models/{model}",
        "/v1beta/tunedModels",
        "/v1/models/{model}:generateContent",
    ),
}
HEADER: Final = {OPENAI: "Authorization", ANTHROPIC: "x-api-key", GEMINI: "x-goog-api-key"}


def _model(rng: random.Random, instance: str) -> str:
    if rng.random() < 0.5:
        return MODELS[instance]
    return rng.choice([*UNKNOWN_MODELS, ""])


def _body(rng: random.Random, instance: str, model: str) -> bytes:
    """A request body: valid for the family, valid JSON of the wrong shape, or not JSON."""
    shape = rng.randrange(6)
    if shape == 0:
        return b""
    if shape == 1:
        return b'{"model": "' + model.encode() + b'", "messages": ['  # cut short
    if shape == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    document: dict[str, Any] = {"model": model} if model else {}
    if shape == 3:
        document.update({"messages": "not a list", "max_tokens": -rng.randrange(10**6)})
    elif instance == GEMINI:
        document = {"contents": [{"parts": [{"text": "hi"}]}]}
    else:
        document.update({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
    if shape == 5:
        document["stream"] = True
    return json.dumps(document).encode()


def _request(rng: random.Random) -> tuple[str, str, str, bytes, dict[str, str]]:
    instance = rng.choice(INSTANCES)
    model = _model(rng, instance)
    paths = PATHS[instance]
    path = (paths[0] if rng.random() < 0.4 else rng.choice(paths)).replace("{model}", model or "x")
    method = "POST" if rng.random() < 0.7 else rng.choice(["GET", "PUT", "PATCH", "DELETE"])
    token = TOKENS[instance]
    value = f"Bearer {token}" if HEADER[instance] == "Authorization" else token
    headers = {HEADER[instance]: value, "Content-Type": "application/json"}
    if instance == ANTHROPIC:
        headers["anthropic-version"] = "2023-06-01"
    return instance, method, path, _body(rng, instance, model), headers


async def test_no_crafted_request_changes_a_key_status(
    gateway_config: GatewayConfig,
    start_gateway: StartGateway,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """Hundreds of random client requests against working keys leave every key usable, unjudged."""
    seed = int(os.environ.get("LLMGW_PROPERTY_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    for instance in INSTANCES:
        gateway_config.keys[instance] = [f"sk-{instance}-{n}-0123456789abcdef" for n in range(3)]
        for key in gateway_config.keys[instance]:
            fake_upstream.set_key(key)
            fake_upstream.set_key(key, Behaviour.NO_MODEL, models=UNKNOWN_MODELS)
    gateway = await start_gateway(gateway_config)
    events = gateway.pool.subscribe()

    answered: dict[int, int] = {}
    for _ in range(REQUESTS):
        instance, method, path, body, headers = _request(rng)
        async with http.request(method, gateway.url + path, data=body, headers=headers) as response:
            await response.read()
            answered[response.status] = answered.get(response.status, 0) + 1

    judged = [r for r in gateway.pool.records() if r.status not in (Status.UNTESTED, Status.VALID)]
    assert not judged, f"seed {seed}: keys judged by client requests: {judged}"
    while not events.empty():
        event = events.get_nowait()
        assert getattr(event, "new", None) is Status.VALID, f"seed {seed}: {event}"
    assert {200, 400, 404} <= set(answered), f"seed {seed}: too few kinds of answers: {answered}"
