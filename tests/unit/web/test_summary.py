"""The periodic pool summary line: counts by status and request deltas per instance."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.schemas import AppConfig, LoggingConfig, ModelConfig, ProviderConfig
from llmgateway.core.constants import ErrorReason, ProviderType, Status
from llmgateway.core.models import KeyRecord
from llmgateway.pool.key_pool import KeyPool
from llmgateway.web.metrics import Metrics
from llmgateway.web.summary import PoolSummary
from tests.support.config import accessor_of

KEY = "sk-summary-0123456789-zz"


PROVIDER = ProviderConfig(
    name="oai",
    provider_type=ProviderType.OPENAI_LIKE,
    api_base_url="http://upstream.invalid",
    default_model="m",
    models={"m": ModelConfig()},
)


def _pool() -> KeyPool:
    pool = KeyPool(accessor_of(PROVIDER))
    pool.load(
        [
            KeyRecord(1, "oai", KEY, "m", Status.VALID),
            KeyRecord(2, "oai", KEY + "2", "m", Status.NO_QUOTA),
            KeyRecord(3, "oai", KEY + "3", "m", Status.UNTESTED),
        ]
    )
    return pool


def test_summary_gives_status_counts_and_deltas_since_the_last_line() -> None:
    """Each line counts keys by status and the requests, retries and failures since the previous line."""
    metrics = Metrics()
    summary = PoolSummary(accessor_of(PROVIDER), _pool(), metrics)
    metrics.attempt_failed("oai", ErrorReason.INVALID_KEY)
    metrics.request_done("oai", 200, 0.1, 0.1)
    metrics.request_done("oai", 200, 0.1, 0.1)
    with capture_logs() as first:
        summary.emit()
    metrics.request_done("oai", 200, 0.1, 0.1)
    with capture_logs() as second:
        summary.emit()
    assert first == [
        {
            "event": "pool_summary",
            "log_level": "info",
            "instance": "oai",
            "keys": 3,
            "usable": 2,
            "statuses": {"untested": 1, "valid": 1, "no_quota": 1},
            "requests": 2,
            "retries": 1,
            "failures": 1,
        }
    ]
    assert (second[0]["requests"], second[0]["retries"], second[0]["failures"]) == (1, 0, 0)
    assert KEY not in repr(first + second)


async def test_running_logs_and_continues_after_a_failed_round() -> None:
    """A failing round is logged and the loop goes on; leaving `running()` ends it."""
    ticks: list[float] = []
    rounds = asyncio.Event()

    class BrokenPool:
        def records(self, instance: str | None = None) -> list[KeyRecord]:
            raise RuntimeError("boom")

    async def sleep(seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) == 3:
            rounds.set()
        await asyncio.sleep(0)

    accessor = ConfigAccessor(
        AppConfig(providers={"oai": PROVIDER}, logging=LoggingConfig(summary_interval=0.0))
    )
    summary = PoolSummary(accessor, BrokenPool(), None, sleep)  # type: ignore[arg-type]
    with capture_logs() as logs:
        async with summary.running():
            await rounds.wait()
        ticks_at_exit = len(ticks)
        await asyncio.sleep(0)
        assert len(ticks) == ticks_at_exit  # the loop is over
    assert ticks[:3] == [1.0, 1.0, 1.0]
    assert [e["event"] for e in logs][:2] == ["pool_summary_failed"] * 2
