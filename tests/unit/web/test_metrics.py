"""Metrics: request-path counters, retry inference, probes and the scrape-time pool gauges."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from llmgateway.config.schemas import ModelConfig, ProviderConfig
from llmgateway.core.constants import ErrorReason, ProviderType, Status
from llmgateway.core.models import KeyRecord
from llmgateway.pool.key_pool import KeyPool
from llmgateway.web.metrics import Metrics
from tests.support.config import accessor_of

SECRET_KEY = "sk-secret-0123456789-abcd"


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return _samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_counted_by_instance_and_code() -> None:
    """Each request_done moves the counter of its instance and status code only."""
    metrics = Metrics()
    metrics.request_done("oai", 200, 0.5, 0.4)
    metrics.request_done("oai", 200, 0.5, 0.4)
    metrics.request_done("oai", 503, 0.001, 0.0)
    assert _value(metrics, "llmgateway_requests_total", instance="oai", code="200") == 2
    assert _value(metrics, "llmgateway_requests_total", instance="oai", code="503") == 1
    assert _value(metrics, "llmgateway_gateway_overhead_seconds_count", instance="oai") == 3
    assert _value(metrics, "llmgateway_upstream_seconds_count", instance="oai") == 2


def test_failures_followed_by_a_success_are_retries() -> None:
    """Failed attempts before a successful one count as retries; the last failure of a failed request does not."""
    metrics = Metrics()
    metrics.attempt_failed("oai", ErrorReason.INVALID_KEY)
    metrics.attempt_failed("oai", ErrorReason.RATE_LIMITED)
    metrics.request_done("oai", 200, 0.1, 0.1)
    metrics.attempt_failed("oai", ErrorReason.SERVER_ERROR)
    metrics.request_done("oai", 502, 0.1, 0.1)
    retries = "llmgateway_retries_total"
    assert _value(metrics, retries, instance="oai", reason="invalid_key") == 1
    assert _value(metrics, retries, instance="oai", reason="rate_limited") == 1
    assert _value(metrics, retries, instance="oai", reason="server_error") == 0
    failed = "llmgateway_upstream_attempts_failed_total"
    assert _value(metrics, failed, instance="oai", reason="server_error") == 1
    assert metrics.tally("oai").requests == 2
    assert metrics.tally("oai").retries == 2
    assert metrics.tally("oai").failures == 3


def test_a_broken_stream_is_never_a_retry() -> None:
    """A stream_disconnect after a success is a failure but no retry."""
    metrics = Metrics()
    metrics.attempt_failed("oai", ErrorReason.STREAM_DISCONNECT)
    metrics.request_done("oai", 200, 1.0, 0.1)
    assert metrics.tally("oai").retries == 0
    assert metrics.tally("oai").failures == 1


def test_probes_counted_by_result() -> None:
    """probe_done counts keeper probes by instance and resulting status."""
    metrics = Metrics()
    metrics.probe_done("oai", Status.VALID)
    metrics.probe_done("oai", Status.NO_QUOTA)
    metrics.probe_done("oai", Status.VALID)
    assert _value(metrics, "llmgateway_probes_total", instance="oai", result="valid") == 2
    assert _value(metrics, "llmgateway_probes_total", instance="oai", result="no_quota") == 1


def test_keys_gauge_is_computed_from_the_pool_without_key_material() -> None:
    """The keys gauge counts the live pool per instance, model and status; no key in any label."""
    provider = ProviderConfig(
        name="oai",
        provider_type=ProviderType.OPENAI_LIKE,
        api_base_url="http://upstream.invalid",
        default_model="m",
        models={"m": ModelConfig()},
    )
    pool = KeyPool(accessor_of(provider))
    pool.load(
        [
            KeyRecord(1, "oai", SECRET_KEY, "m", Status.VALID),
            KeyRecord(2, "oai", SECRET_KEY + "2", "m", Status.VALID),
            KeyRecord(3, "oai", SECRET_KEY + "3", "m", Status.INVALID_KEY),
        ]
    )
    metrics = Metrics(pool=lambda: pool)
    assert _value(metrics, "llmgateway_keys", instance="oai", model="m", status="valid") == 2
    assert _value(metrics, "llmgateway_keys", instance="oai", model="m", status="invalid_key") == 1
    assert _value(metrics, "llmgateway_keys", instance="oai", model="m", status="no_quota") == 0
    assert _value(metrics, "llmgateway_write_queue_depth") == 0
    text = metrics.render().decode()
    assert SECRET_KEY[:12] not in text and "sk-s" not in text


def test_each_metrics_has_its_own_registry() -> None:
    """Two Metrics (two apps in one process) never share counters."""
    first, second = Metrics(), Metrics()
    first.request_done("oai", 200, 0.1, 0.1)
    assert _value(first, "llmgateway_requests_total", instance="oai", code="200") == 1
    assert _value(second, "llmgateway_requests_total", instance="oai", code="200") == 0
