"""The relay's answers that need no socket: an upstream error passed on as is, masked."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.constants import ErrorReason, ProviderType
from llmgateway.core.errors import UpstreamUnavailable
from llmgateway.core.masking import Masker
from llmgateway.core.models import CheckResult
from llmgateway.pool.key_pool import KeyPool
from llmgateway.providers.upstream import UpstreamAnswer
from llmgateway.web.exchange import MAX_RELAYED_ERROR_BODY, Exchange
from llmgateway.web.relay import Relay
from tests.support.config import accessor_of

KEY = "AIzaSyRelayTest0123456789abcdefghijklm"
OTHER = "sk-other-secret-0123456789abcdef"


def relay(masker: Masker) -> Relay:
    config = ProviderConfig(
        name="g",
        provider_type=ProviderType.GEMINI,
        api_base_url="http://invalid",
        default_model="m",
    )
    return Relay(KeyPool(accessor_of(config)), masker, None)


def upstream_answer(body: bytes, headers: dict[str, str], complete: bool = True) -> UpstreamAnswer:
    result = CheckResult(reason=ErrorReason.INVALID_KEY, status_code=403, message="suspended")
    proxy = CIMultiDictProxy(CIMultiDict(headers))
    return UpstreamAnswer(result, 403, proxy, body, complete)


def test_an_error_answer_is_relayed_with_every_secret_masked() -> None:
    """The attempt's key and every other known secret leave neither body nor headers."""
    answer = upstream_answer(
        f'{{"error": "Consumer \'api_key:{KEY}\' has been suspended; {OTHER}"}}'.encode(),
        {"X-Echo": KEY, "X-Request-Id": "req_123", "Connection": "close"},
    )
    response = relay(Masker([OTHER])).as_is(answer, Exchange("rid-1", 0.0), KEY)
    assert response.status == 403
    assert isinstance(response.body, bytes)
    assert KEY.encode() not in response.body and OTHER.encode() not in response.body
    assert b"has been suspended" in response.body
    assert KEY not in "".join(response.headers.values())
    assert response.headers["x-request-id"] == "rid-1"
    assert response.headers["x-upstream-request-id"] == "req_123"
    assert "Connection" not in response.headers


def test_an_error_answer_too_large_to_relay_whole_becomes_a_502() -> None:
    """A cut answer is never passed on as if it were whole."""
    answer = upstream_answer(b"x" * MAX_RELAYED_ERROR_BODY, {}, complete=False)
    with pytest.raises(UpstreamUnavailable, match="too large to relay") as caught:
        relay(Masker()).as_is(answer, Exchange("rid-2", 0.0), KEY)
    assert caught.value.status == 502
