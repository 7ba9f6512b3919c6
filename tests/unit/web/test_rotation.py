"""The gateway's retry and relay decisions, without a socket: a real pool, real routes."""

from __future__ import annotations

from dataclasses import replace

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from llmgateway.config.schemas import ModelConfig, ProviderConfig, RetryBudget
from llmgateway.core.constants import ErrorReason, ProviderType, Status
from llmgateway.core.errors import (
    KeysCoolingDown,
    NoUsableKey,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.pool.key_pool import KeyPool
from llmgateway.providers import build_adapter
from llmgateway.providers.upstream import UpstreamAnswer
from llmgateway.web.exchange import Route
from llmgateway.web.relay import BUFFERED_BODY, SSE, buffered
from llmgateway.web.rotation import Rotation, names_model
from tests.support.config import accessor_of

MODEL = "gpt-4o-mini"
NOW = 1_800_000_000.0


def provider(retry_enabled: bool = True) -> ProviderConfig:
    config = ProviderConfig(
        name="p",
        provider_type=ProviderType.OPENAI_LIKE,
        api_base_url="http://127.0.0.1:1",
        default_model=MODEL,
        models={MODEL: ModelConfig()},
    )
    retry = replace(
        config.gateway_policy.retry,
        enabled=retry_enabled,
        on_key_error=RetryBudget(attempts=2, backoff=0.0, backoff_factor=1.0),
        on_server_error=RetryBudget(attempts=1, backoff=0.0, backoff_factor=1.0),
    )
    return replace(config, gateway_policy=replace(config.gateway_policy, retry=retry))


def setup(
    count: int = 3, retry_enabled: bool = True, status: Status = Status.VALID
) -> tuple[Route, KeyPool, list[KeyRecord]]:
    config = provider(retry_enabled)
    pool = KeyPool(accessor_of(config), clock=lambda: NOW, rng=lambda: 0.5)
    records = [
        KeyRecord(
            key_id=i,
            instance="p",
            key=f"sk-rotation-{i:04d}-abcdef",
            model=MODEL,
            status=status,
        )
        for i in range(1, count + 1)
    ]
    pool.load(records)
    return Route.of(config, build_adapter(config)), pool, records


def fail(reason: ErrorReason) -> CheckResult:
    return CheckResult(reason=reason, status_code=400, message=reason.value)


def answer(body: bytes, status: int = 404) -> UpstreamAnswer:
    return UpstreamAnswer(fail(ErrorReason.NO_MODEL), status, CIMultiDictProxy(CIMultiDict()), body)


class TestFailed:
    def test_a_fatal_reason_is_replaced_outside_the_budget(self) -> None:
        """Every dead key may be replaced: no key retry is spent on it."""
        route, pool, records = setup(status=Status.UNTESTED)  # untested: no incident
        rotation = Rotation(route)
        for record in records:
            assert rotation.failed(pool, MODEL, record, fail(ErrorReason.INVALID_KEY), None)
        assert rotation.key_budget.left == 2
        assert rotation.spent == [1, 2, 3]

    def test_a_fatal_reason_without_retries_ends_the_rotation(self) -> None:
        """With retries off the first key error is the client's answer."""
        route, pool, records = setup(retry_enabled=False)
        assert not Rotation(route).failed(pool, MODEL, records[0], fail(ErrorReason.NO_QUOTA), None)

    def test_a_rate_limit_costs_a_key_retry(self) -> None:
        """Rate limits take from the key budget until it is empty."""
        route, pool, records = setup()
        rotation = Rotation(route)
        results = [
            rotation.failed(pool, MODEL, r, fail(ErrorReason.RATE_LIMITED), None) for r in records
        ]
        assert results == [True, True, False]

    def test_a_server_error_goes_to_another_key_and_owes_the_backoff(self) -> None:
        """The failed key is tried last; its backoff is owed, not slept yet."""
        route, pool, records = setup()
        rotation = Rotation(route)
        assert rotation.failed(pool, MODEL, records[0], fail(ErrorReason.SERVER_ERROR), None)
        assert rotation.tried == [1] and rotation.owed is rotation.server_budget
        assert 1 in rotation.excluded()
        assert not rotation.failed(pool, MODEL, records[1], fail(ErrorReason.SERVER_ERROR), None)
        assert pool.get("p", MODEL, 1).status is Status.VALID  # type: ignore[union-attr]

    def test_a_client_error_ends_the_rotation_and_touches_no_key(self) -> None:
        """A bad request is relayed as it is."""
        route, pool, records = setup()
        assert not Rotation(route).failed(
            pool, MODEL, records[0], fail(ErrorReason.BAD_REQUEST), None
        )
        assert {r.status for r in pool.records()} == {Status.VALID}

    def test_no_model_that_names_no_model_is_the_clients_error(self) -> None:
        """A 404 for an unknown path is relayed; the key stays."""
        route, pool, records = setup()
        rotation = Rotation(route)
        bogus = answer(b'{"error": {"message": "Requested entity was not found."}}')
        assert not rotation.failed(pool, MODEL, records[0], fail(ErrorReason.NO_MODEL), bogus)
        assert pool.get("p", MODEL, 1).status is Status.VALID  # type: ignore[union-attr]

    def test_no_model_naming_the_configured_model_holds_the_key(self) -> None:
        """The provider's model-not-found for the requested model makes the key verifying."""
        route, pool, records = setup()
        rotation = Rotation(route)
        real = answer(b'{"error": {"message": "The model `gpt-4o-mini` does not exist"}}')
        assert rotation.failed(pool, MODEL, records[0], fail(ErrorReason.NO_MODEL), real)
        assert pool.get("p", MODEL, 1).status is Status.VERIFYING  # type: ignore[union-attr]

    def test_an_incident_costs_key_retries_and_names_itself(self) -> None:
        """Within an incident a key error is not condemned, costs a retry, and ends as 503."""
        route, pool, records = setup(count=4)
        rotation = Rotation(route)
        for record in records[:3]:
            rotation.failed(pool, MODEL, record, fail(ErrorReason.INVALID_KEY), None)
        assert rotation.incident is not None
        error = rotation.exhausted("p", MODEL)
        assert isinstance(error, NoUsableKey) and "incident" in str(error)

    def test_a_rate_limit_incident_answers_429(self) -> None:
        """An incident of rate limits ends as 429 with a Retry-After."""
        route, pool, records = setup(count=3)
        rotation = Rotation(route)
        for record in records:
            rotation.failed(pool, MODEL, record, fail(ErrorReason.RATE_LIMITED), None)
        error = rotation.exhausted("p", MODEL)
        assert isinstance(error, KeysCoolingDown) and error.retry_after == 10


class TestNextKey:
    async def test_a_key_that_failed_server_side_comes_after_the_others(self) -> None:
        """The other keys are picked first; once they are used up, the failed one again."""
        route, pool, _ = setup(count=2)
        rotation = Rotation(route)
        first = await rotation.next_key(pool, "p", MODEL)
        assert rotation.failed(pool, MODEL, first, fail(ErrorReason.SERVER_ERROR), None)
        second = await rotation.next_key(pool, "p", MODEL)
        assert second.key_id != first.key_id
        assert rotation.failed(pool, MODEL, second, fail(ErrorReason.RATE_LIMITED), None)
        third = await rotation.next_key(pool, "p", MODEL)  # only the tried key is left
        assert third.key_id == first.key_id
        assert rotation.owed is None and rotation.tried == []


class TestLastWord:
    def test_the_upstreams_own_answer_is_relayed(self) -> None:
        """A failure the upstream answered is passed on as it is."""
        route, _, _ = setup()
        own = answer(b'{"error": "bad request"}', status=400)
        last = Rotation(route).last_word("p", MODEL, fail(ErrorReason.BAD_REQUEST), own)
        assert last is own

    def test_a_timeout_without_an_answer_is_a_gateway_timeout(self) -> None:
        """No answer in time: 504, not the upstream's."""
        route, _, _ = setup()
        last = Rotation(route).last_word("p", MODEL, fail(ErrorReason.TIMEOUT), None)
        assert isinstance(last, UpstreamTimeout)

    def test_a_wire_failure_without_an_answer_is_unavailable(self) -> None:
        """Refused or reset: 502 naming the failure."""
        route, _, _ = setup()
        result = CheckResult(reason=ErrorReason.NETWORK_ERROR, message="connection refused")
        last = Rotation(route).last_word("p", MODEL, result, None)
        assert isinstance(last, UpstreamUnavailable) and "connection refused" in str(last)

    def test_an_incident_overrides_the_upstreams_answer(self) -> None:
        """Within an incident the client hears about the incident, not the last key's error."""
        route, pool, records = setup(count=3)
        rotation = Rotation(route)
        for record in records:
            rotation.failed(pool, MODEL, record, fail(ErrorReason.RATE_LIMITED), None)
        last = rotation.last_word("p", MODEL, fail(ErrorReason.RATE_LIMITED), answer(b"{}", 429))
        assert isinstance(last, KeysCoolingDown)


def test_names_model_needs_a_configured_model_in_the_body() -> None:
    """Unconfigured or absent models never count; the body must name the model."""
    route, _, _ = setup()
    named = answer(b"model gpt-4o-mini not found")
    assert names_model(route, MODEL, named)
    assert not names_model(route, "gpt-9", answer(b"model gpt-9 not found"))
    assert not names_model(route, "", named)
    assert not names_model(route, MODEL, None)


@pytest.mark.parametrize(
    ("streaming", "content_type", "length", "whole"),
    [
        (False, SSE, None, True),
        (True, SSE, 100, False),
        (True, "application/json", 100, True),
        (True, "application/json", BUFFERED_BODY + 1, False),
        (True, "application/json", None, False),
    ],
)
def test_buffered_relay_decision(
    streaming: bool, content_type: str, length: int | None, whole: bool
) -> None:
    """Small known-length bodies go in one write; SSE and unknown lengths stream."""
    assert buffered(streaming, content_type, length) is whole
