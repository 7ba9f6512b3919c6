"""The keeper: background health checks of every key, applied to the live pool at once.

One `Keeper` per application, run by `app.py` around the gateway (`async with
keeper.running(...)`). Each round fetches the (key, model) rows due for a
check, probes them over the shared ClientSession with bounded concurrency,
and hands each classified result to `KeyPool.report(..., probe=True)`, which
derives the next record from the health policy and queues it for the store.
Every `keeper.keys_sync_interval` the keeper has the `KeySync` re-read the keys.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final, Protocol, final

import aiohttp
import structlog

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.constants import ALL_MODELS_MARKER, ErrorReason
from llmgateway.core.errors import StoreError
from llmgateway.core.lifecycle import interruptible_sleep
from llmgateway.core.logs import mask_key
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.keeper.key_sync import KeySync
from llmgateway.keeper.leases import LeaseRenewer, lease_length
from llmgateway.pool.key_pool import Clock, KeyPool
from llmgateway.providers import classify_exception
from llmgateway.providers.base import ProviderAdapter
from llmgateway.providers.upstream import CallLimits, call_upstream
from llmgateway.store.protocol import Store

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
"""Waits the given number of seconds (asyncio.sleep); injectable for tests."""

DUE_BATCH: Final = 5000
"""At most this many due (key, model) rows are fetched and probed per round."""

LEASE_WAVES: Final = 4
"""Rows leased at a time, in multiples of `keeper.max_concurrent_probes`."""


class ProbeObserver(Protocol):
    """Told about every recorded probe (the metrics' `probes_total`)."""

    def probe_done(self, instance: str, status: str) -> None:
        """One probe of `instance` was recorded with `status` (a Status value)."""


PROBE_FAILURES: Final = (aiohttp.ClientError, TimeoutError, OSError, ValueError)
"""What a probe may raise on the wire (refused, reset, garbage, timeout, undecodable)."""


@final
class Keeper:
    """Probes due keys on a schedule and keeps the live pool and the store up to date.

    `running()` runs the loop (rounds of probes, an idle `keeper.check_interval`
    when nothing is due, `key_sync.sync()` every `keeper.keys_sync_interval`);
    `run_once()` is one round. Clock and sleep are injectable for tests;
    `observer` (the app's Metrics) counts recorded probes.

    Several processes may run keepers on one database: due checks are leased
    (`Store.lease_due`, as `owner`, for `lease_seconds`, by default
    `leases.lease_length` of the instances) and the leases renewed while the
    checks run, so each runs once across them and a dead keeper's checks are
    soon taken over. A `solo` keeper (SQLite workers of one host) probes only
    while it holds the store's `keeper` lock, for its whole life; the others
    wait, retrying every `keeper.check_interval`, and follow the statuses
    through their change feed.
    """

    def __init__(
        self,
        accessor: ConfigAccessor,
        store: Store,
        pool: KeyPool,
        session: aiohttp.ClientSession,
        adapters: Mapping[str, ProviderAdapter],
        key_sync: KeySync,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        *,
        observer: ProbeObserver | None = None,
        owner: str | None = None,
        lease_seconds: float | None = None,
        solo: bool = False,
    ) -> None:
        self._accessor = accessor
        self.owner = owner or f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        """The name this keeper leases due checks under."""
        if lease_seconds is None:
            lease_seconds = lease_length(accessor.enabled_providers())
        self._lease_seconds = lease_seconds
        self.leases = LeaseRenewer(store, self.owner, lease_seconds, clock)
        """Renews the leases of the checks running now."""
        self._solo = solo
        self._lease_batch = min(
            DUE_BATCH, LEASE_WAVES * max(accessor.keeper.max_concurrent_probes, 1)
        )
        self.active = not solo
        """False while a solo keeper waits for another process to give up probing."""
        self._observer = observer
        self._store = store
        self._pool = pool
        self._session = session
        self._adapters = adapters
        self._clock = clock
        self._stop_requested = asyncio.Event()
        # Every wait (idle, verification delay) ends as soon as the keeper is asked to stop.
        self._sleep = interruptible_sleep(sleep, self._stop_requested)
        settings = accessor.keeper
        self._probe_slots = asyncio.Semaphore(max(settings.max_concurrent_probes, 1))
        self._instance_slots: dict[str, asyncio.Semaphore] = {
            p.name: asyncio.Semaphore(max(settings.max_concurrent_probes_per_instance, 1))
            for p in accessor.enabled_providers()
        }
        self._key_sync = key_sync
        self._next_sync = clock() + settings.keys_sync_interval
        self._task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._idle = False

    # -- lifecycle --------------------------------------------------------

    @asynccontextmanager
    async def running(self, grace: Callable[[], float]) -> AsyncIterator[None]:
        """Run the background loop for the body; on exit, stop it.

        A stop already begun (`stop_soon`, when the shutdown begins) is
        waited for; otherwise in-flight probes get `grace()` seconds.
        """
        if self._task is None:
            self._stopping = False
            self._stop_requested.clear()
            self._task = asyncio.create_task(self._run(), name="llmgateway-keeper")
        try:
            yield
        finally:
            if self._stop_task is not None:
                await asyncio.gather(self._stop_task, return_exceptions=True)
            else:
                await self.stop(grace())

    def stop_soon(self, timeout: float) -> asyncio.Task[None]:
        """Begin stopping (see `stop`) in a task, which `running()` waits for on exit.

        Cancelling the task gives up the in-flight probes at once.
        """
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self.stop(timeout), name="keeper-stop")
        return self._stop_task

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (app.py's deadline)
        """Stop the loop: no new probe starts; in-flight ones get `timeout` seconds.

        An idle loop is cancelled at once, and a check waiting to probe again
        (verification delay) gives up at once. Probes still running at the
        deadline (or when this call is cancelled) are cancelled; what they
        had not reported is simply not recorded (those keys stay due).
        Flushing the write queue is the caller's next step.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._stop_requested.set()
        if self._idle:
            task.cancel()
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:  # the caller gives up waiting: no probe outlives it
            task.cancel()
            await asyncio.wait({task})
            raise
        if not done:
            log.warning("keeper_stop_deadline", timeout=timeout)
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.error("keeper_stopped_with_error", error=repr(task.exception()))

    async def _run(self) -> None:
        """The background loop: sync keys when due, probe due keys, sleep when idle.

        A solo keeper first waits for the store's `keeper` lock. A failed
        round is logged and the loop goes on; cancellation propagates.
        """
        if not self._solo:
            await self._rounds()
            return
        while not self._stopping:
            try:
                async with self._store.exclusive("keeper") as got:
                    if got:
                        log.info("keeper_lock_taken", owner=self.owner)
                        self.active = True
                        try:
                            await self._rounds()
                        finally:
                            self.active = False
                        return
            except StoreError as exc:
                log.error("keeper_lock_failed", error=str(exc))
            await self._idle_sleep(self._accessor.keeper.check_interval)

    async def _idle_sleep(self, seconds: float) -> None:
        self._idle = True
        try:
            await self._sleep(seconds)
        finally:
            self._idle = False

    def use(self, accessor: ConfigAccessor, adapters: Mapping[str, ProviderAdapter]) -> None:
        """Probe the instances of `accessor` through `adapters` from the next round on (a reload).

        An added instance gets its own probe slots; the concurrency limits
        themselves are fixed while serving.
        """
        limit = max(accessor.keeper.max_concurrent_probes_per_instance, 1)
        for provider in accessor.enabled_providers():
            self._instance_slots.setdefault(provider.name, asyncio.Semaphore(limit))
        self._accessor = accessor
        self._adapters = adapters

    async def _rounds(self) -> None:
        while not self._stopping:
            settings = self._accessor.keeper  # each round reads the configuration in effect
            probed = 0
            try:
                if self._clock() >= self._next_sync:
                    self._next_sync = self._clock() + settings.keys_sync_interval
                    await self._key_sync.sync()
                probed = await self.run_once()
            except Exception:  # the loop's outermost guard: log, then the next round
                log.exception("keeper_round_failed")
            if probed or self._stopping:
                continue
            await self._idle_sleep(settings.check_interval)

    # -- probing ----------------------------------------------------------

    async def run_once(self) -> int:
        """One round: probe every (key, model) due now; return how many were recorded.

        Due rows are leased a few probe waves at a time, so that other
        processes' keepers share the round and a lease never waits long for
        a probe slot. Rows whose in-pool record is no longer due (probed
        moments ago, the write queue not flushed yet) or no longer checked
        are skipped; a leased row the pool does not know yet (another
        process's key sync added it) joins the pool first.
        """
        names = [p.name for p in self._accessor.enabled_providers() if p.name in self._adapters]
        if not names:
            return 0
        recorded = 0
        leased = 0
        while leased < DUE_BATCH and not self._stopping:
            now = datetime.fromtimestamp(self._clock(), UTC)
            limit = min(self._lease_batch, DUE_BATCH - leased)
            due = await self._store.lease_due(names, now, limit, self.owner, self._lease_seconds)
            if not due:
                break
            leased += len(due)
            for record in due:
                if self._pool.get(record.instance, record.model, record.key_id) is None:
                    self._pool.apply_remote(record)
            todo = [record for record in due if self._is_due(record, now)]
            if todo:
                async with self.leases.holding(todo), asyncio.TaskGroup() as group:
                    checks = [group.create_task(self._check(record)) for record in todo]
                recorded += sum(1 for check in checks if check.result())
        return recorded

    def _is_due(self, record: KeyRecord, now: datetime) -> bool:
        current = self._pool.get(record.instance, record.model, record.key_id)
        return (
            current is not None
            and current.next_check_at is not None
            and current.next_check_at <= now
        )

    async def _check(self, record: KeyRecord) -> bool:
        """Probe one (key, model) and report the outcome; False when skipped.

        Shared instances are probed on `default_model`. Every probe is
        recorded: a retryable failure is re-probed `verification_delay` later
        (see `next_record`) until `verification_attempts` failures in a row
        make it a verdict, so the key shows its last reason and next check
        meanwhile.
        """
        provider = self._accessor.get_provider(record.instance)
        adapter = self._adapters.get(record.instance)
        if provider is None or adapter is None:
            return False
        model = provider.default_model if record.model == ALL_MODELS_MARKER else record.model
        result = await self._guarded_probe(provider, adapter, model, record)
        if result is None:
            return False
        self._pool.report(record, result, probe=True)
        if self._observer is not None:
            self._observer.probe_done(record.instance, result.status.value)
        log.debug(
            "probe_recorded",
            instance=record.instance,
            model=record.model,
            key=mask_key(record.key),
            status=result.status.value,
            status_code=result.status_code,
            response_ms=result.response_ms,
        )
        return True

    async def _guarded_probe(
        self, provider: ProviderConfig, adapter: ProviderAdapter, model: str, record: KeyRecord
    ) -> CheckResult | None:
        """One probe under the concurrency limits (None: stopping, or no longer due).

        Wire failures are classified by `classify_exception`; anything else
        escaping the adapter is logged (key masked) and recorded as unknown,
        so one bad response never takes the round's other probes down.
        """
        async with self._instance_slots[provider.name], self._probe_slots:
            if self._stopping:
                return None
            if not self._is_due(record, datetime.fromtimestamp(self._clock(), UTC)):
                # Settled while this probe waited for a slot: by a key-wide result of
                # another model's probe, or by the gateway. Nothing to record.
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
