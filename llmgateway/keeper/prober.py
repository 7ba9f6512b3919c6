"""The keeper's probe machinery: one probe of a (key, model), under the concurrency limits.

`Prober` holds the limits (`keeper.max_concurrent_probes` in all,
`keeper.max_concurrent_probes_per_instance` per instance) and sends probes
over the shared ClientSession. The periodic keeper and the recheck jobs of
the key admin use the same `Prober`, so together they never exceed the
limits; it exists whether or not the periodic keeper is enabled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Final, final

import aiohttp
import structlog

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.constants import ALL_MODELS_MARKER, ErrorReason
from llmgateway.core.logs import mask_key
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.providers import classify_exception
from llmgateway.providers.base import ProviderAdapter
from llmgateway.providers.upstream import CallLimits, call_upstream

log = structlog.get_logger("llmgateway.keeper.keeper")

PROBE_FAILURES: Final = (aiohttp.ClientError, TimeoutError, OSError, ValueError)
"""What a probe may raise on the wire (refused, reset, garbage, timeout, undecodable)."""

StillWanted = Callable[[KeyRecord], bool]
"""Asked once a probe has its slots: False drops it (stopping, or settled meanwhile)."""


@final
class Prober:
    """Probes (key, model) rows with the instances' adapters, within the keeper's limits."""

    def __init__(
        self,
        accessor: ConfigAccessor,
        session: aiohttp.ClientSession,
        adapters: Mapping[str, ProviderAdapter],
    ) -> None:
        settings = accessor.keeper
        self._accessor = accessor
        self._session = session
        self._adapters = adapters
        self.concurrency = max(settings.max_concurrent_probes, 1)
        """Probes in flight at most, in all."""
        self._slots = asyncio.Semaphore(self.concurrency)
        self._instance_slots: dict[str, asyncio.Semaphore] = {
            p.name: asyncio.Semaphore(max(settings.max_concurrent_probes_per_instance, 1))
            for p in accessor.enabled_providers()
        }

    def use(self, accessor: ConfigAccessor, adapters: Mapping[str, ProviderAdapter]) -> None:
        """Probe with `accessor`'s instances through `adapters` from now on (a reload).

        An added instance gets its own slots; the limits themselves are fixed while serving.
        """
        limit = max(accessor.keeper.max_concurrent_probes_per_instance, 1)
        for provider in accessor.enabled_providers():
            self._instance_slots.setdefault(provider.name, asyncio.Semaphore(limit))
        self._accessor = accessor
        self._adapters = adapters

    async def probe(
        self, record: KeyRecord, still_wanted: StillWanted | None = None
    ) -> CheckResult | None:
        """Probe `record`'s key for its model (shared statuses: the default model).

        None when the instance is not served here, or `still_wanted` says no
        once the probe has its slots. Wire failures are classified by
        `classify_exception`; anything else escaping the adapter is logged
        (key masked) and recorded as unknown, so one bad response never
        takes other probes down.
        """
        provider = self._accessor.get_provider(record.instance)
        adapter = self._adapters.get(record.instance)
        if provider is None or adapter is None or record.instance not in self._instance_slots:
            return None
        model = provider.default_model if record.model == ALL_MODELS_MARKER else record.model
        async with self._instance_slots[provider.name], self._slots:
            if still_wanted is not None and not still_wanted(record):
                return None
            started = time.perf_counter()
            try:
                result = await probe_once(self._session, provider, adapter, model, record.key)
            except PROBE_FAILURES as exc:
                result = classify_exception(exc)
                log.info(
                    "probe_failed",
                    instance=provider.name,
                    model=model,
                    key=mask_key(record.key),
                    reason=result.reason.value if result.reason else None,
                    error=type(exc).__name__,
                )
            except Exception as exc:  # a probe task's outermost guard: log, record unknown
                log.exception(
                    "probe_crashed", instance=provider.name, model=model, key=mask_key(record.key)
                )
                result = CheckResult(
                    reason=ErrorReason.UNKNOWN, message=f"probe crashed: {type(exc).__name__}"
                )
            elapsed = int((time.perf_counter() - started) * 1000)
        return replace(result, response_ms=elapsed)


async def probe_once(
    session: aiohttp.ClientSession,
    provider: ProviderConfig,
    adapter: ProviderAdapter,
    model: str,
    key: str,
) -> CheckResult:
    """Send the adapter's probe for `model` with `key` and classify the answer.

    The connection must open within `timeouts.connect` and the headers
    arrive `timeouts.first_byte` after the request went out (never later
    than their sum in all); at most MAX_ERROR_BODY bytes of the body are
    classified, within `timeouts.idle`. Redirects are not followed. Wire failures
    raise (aiohttp.ClientError, TimeoutError, ...): the caller classifies them.
    """
    probe = adapter.probe_request(model, key)
    url = provider.api_base_url.rstrip("/") + probe.path
    headers = {"Accept-Encoding": "identity", **probe.headers}
    limits = CallLimits.for_probe(provider.timeouts)
    answer = await call_upstream(session, adapter, probe.method, url, headers, probe.body, limits)
    return answer.result
