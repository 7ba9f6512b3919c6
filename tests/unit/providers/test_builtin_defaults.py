"""Every built-in mapping of the issue, against the providers' real documented bodies."""

from __future__ import annotations

import orjson
import pytest

from llmgateway.core.constants import ErrorReason, ProviderType
from llmgateway.providers.base import MAX_ERROR_BODY
from tests.fixtures.provider_errors import ERRORS, EXPECTED, EXPECTED_RETRY_AFTER
from tests.unit.providers.factory import headers_of, make_adapter

CASES = [
    pytest.param(provider, name, id=f"{provider}-{name}")
    for provider, errors in ERRORS.items()
    for name in errors
]

ISSUE_MAPPINGS = {
    "openai_like": {
        "invalid_key": "invalid_key",
        "insufficient_quota": "no_quota",
        "rate_limited_requests": "rate_limited",
        "model_not_found": "no_model",
        "unsupported_country": "no_access",
        "payment_required": "no_quota",
        "server_error": "server_error",
        "bad_gateway": "server_error",
        "service_unavailable": "service_unavailable",
    },
    "anthropic": {
        "invalid_key": "invalid_key",
        "permission": "no_access",
        "model_not_found": "no_model",
        "rate_limited": "rate_limited",
        "overloaded": "overloaded",
        "api_error": "server_error",
        "credit_balance": "no_quota",
        "bad_request": "bad_request",
    },
    "gemini": {
        "invalid_key": "invalid_key",
        "bad_request": "bad_request",
        "free_tier_unavailable": "no_access",
        "permission_denied": "no_access",
        "model_not_found": "no_model",
        "quota_per_day": "no_quota",
        "quota_per_minute": "rate_limited",
        "internal": "server_error",
        "unavailable": "overloaded",
    },
}


@pytest.mark.parametrize(("provider", "name"), CASES)
def test_builtin_defaults_classify_real_bodies(provider: str, name: str) -> None:
    """With no user rules, each documented error body maps to its expected reason."""
    status, headers, body = ERRORS[provider][name]
    result = make_adapter(provider).classify_body(status, headers_of(headers), body)
    assert result.reason == ErrorReason(EXPECTED[provider][name])
    assert result.status_code == status
    assert not result.ok


@pytest.mark.parametrize(
    ("provider", "name"),
    [(p, n) for p, names in EXPECTED_RETRY_AFTER.items() for n in names],
)
def test_retry_after_comes_from_the_providers_own_signal(provider: str, name: str) -> None:
    """Retry-After, x-ratelimit-reset-*, anthropic-ratelimit-*-reset and retryDelay give the wait."""
    status, headers, body = ERRORS[provider][name]
    result = make_adapter(provider).classify_body(status, headers_of(headers), body)
    assert result.retry_after == pytest.approx(EXPECTED_RETRY_AFTER[provider][name])


def test_every_mapping_named_in_the_issue_has_a_fixture() -> None:
    """The fixture table covers each mapping the issue lists, with the same reason."""
    for provider, mappings in ISSUE_MAPPINGS.items():
        for name, reason in mappings.items():
            assert EXPECTED[provider][name] == reason, (provider, name)


def test_messages_are_the_upstreams_own_words() -> None:
    """The CheckResult message is the provider's error message, not a generic label."""
    status, headers, body = ERRORS["anthropic"]["credit_balance"]
    result = make_adapter("anthropic").classify_body(status, headers_of(headers), body)
    assert result.message.startswith("Your credit balance is too low")


@pytest.mark.parametrize("provider", list(ProviderType))
@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"null", b"[]", b'"text"', b"\xff\xfe\x00garbage", b'{"error": "flat string"}'],
)
def test_unusable_bodies_fall_back_to_the_status_default(
    provider: ProviderType, body: bytes
) -> None:
    """Empty, truncated, non-JSON or oddly shaped bodies never raise and use the status code."""
    adapter = make_adapter(provider)
    assert adapter.classify_body(401, headers_of(), body).reason is ErrorReason.INVALID_KEY
    assert adapter.classify_body(500, headers_of(), body).reason is ErrorReason.SERVER_ERROR
    assert adapter.classify_body(418, headers_of(), body).reason is ErrorReason.BAD_REQUEST


def test_only_the_first_64_kib_of_a_body_is_inspected() -> None:
    """A body whose JSON only closes after 64 KiB is treated as truncated (status default)."""
    padding = "x" * MAX_ERROR_BODY
    document = {
        "error": {"message": padding, "type": "insufficient_quota", "code": "insufficient_quota"}
    }
    body = orjson.dumps(document)
    adapter = make_adapter("openai_like")
    assert adapter.classify_body(429, headers_of(), body).reason is ErrorReason.RATE_LIMITED
    small = orjson.dumps({"error": {**document["error"], "message": "short"}})
    assert adapter.classify_body(429, headers_of(), small).reason is ErrorReason.NO_QUOTA


def test_a_deeply_nested_body_does_not_raise() -> None:
    """JSON nested beyond the parser's limit is unusable, not an exception."""
    body = b"[" * 5000 + b"]" * 5000
    result = make_adapter("gemini").classify_body(503, headers_of(), body)
    assert result.reason is ErrorReason.OVERLOADED


def test_success_statuses_classify_as_ok() -> None:
    """A 2xx handed to classify_body is a success, whatever the body."""
    result = make_adapter("openai_like").classify_body(200, headers_of(), b"{}")
    assert result.ok and result.status_code == 200
