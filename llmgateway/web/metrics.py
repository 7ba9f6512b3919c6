"""Prometheus metrics of one application: its own registry, cheap on the request path.

`Metrics` is the gateway's `RequestObserver`: label children are bound once
per (instance, code) or (instance, reason) and cached, so a request costs a
dictionary look-up and an increment. Key counts and the write-queue depth are
read from the pool's tallies only when `/metrics` is scraped (never a walk over
every key), and the event loop's lag is observed by the process's monitor. No
label ever carries key material:
instances, models, statuses, reasons and HTTP codes only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final, final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.loop_lag import LAG_BUCKETS
from llmgateway.pool.key_pool import KeyPool
from llmgateway.store.write_queue import WriteQueue
from llmgateway.web.auth_failures import SURFACES, AuthFailures

OVERHEAD_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
"""Time the gateway adds: well under a millisecond when healthy."""

UPSTREAM_BUCKETS: Final = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
"""Upstream answers: from fast errors to long generations."""

PoolSource = Callable[[], KeyPool | None]
"""Returns the live pool, or None before it is loaded."""

QueueSource = Callable[[], WriteQueue | None]
"""Returns the write-behind queue, or None before it exists."""

AuthSource = Callable[[], AuthFailures | None]
"""Returns the failed-token-attempt counter, or None."""

# The failed attempt of the current request not yet known to be retried (one
# handler task per request, so the context is the request's own).
_pending_failure: ContextVar[tuple[str, ErrorReason] | None] = ContextVar(
    "llmgateway_pending_failure", default=None
)


@dataclass(frozen=True, slots=True)
class RequestTally:
    """Cumulative request-path counts of one instance (for the summary line)."""

    requests: int = 0
    retries: int = 0
    failures: int = 0


class _PoolCollector(Collector):
    """Keys by instance, model and status, the write-queue depth and auth failures, at scrape time."""

    def __init__(self, pool: PoolSource, queue: QueueSource, auth: AuthSource) -> None:
        self._pool = pool
        self._queue = queue
        self._auth = auth

    def collect(self) -> Iterable[Metric]:
        keys = GaugeMetricFamily(
            "llmgateway_keys",
            "Keys of the live pool by instance, status model and status.",
            labels=["instance", "model", "status"],
        )
        pool = self._pool()
        if pool is not None:
            # The pool's own tallies: a scrape costs the same for 10 keys or 100,000.
            for tally in sorted(pool.tallies(), key=lambda t: (t.instance, t.model)):
                for status in Status:  # zeros too, so a series drops to 0 instead of vanishing
                    keys.add_metric(
                        [tally.instance, tally.model, status.value], tally.counts.get(status, 0)
                    )
        yield keys
        depth = GaugeMetricFamily(
            "llmgateway_write_queue_depth",
            "Status updates waiting to be written to the store.",
        )
        queue = self._queue()
        depth.add_metric([], queue.depth if queue is not None else 0)
        yield depth
        failures = CounterMetricFamily(
            "llmgateway_auth_failures",
            "Requests with a wrong gateway or admin token, by surface (proxy, admin).",
            labels=["surface"],
        )
        auth = self._auth()
        totals = auth.totals if auth is not None else {}
        for surface in SURFACES:
            failures.add_metric([surface], totals.get(surface, 0))
        yield failures


@final
class Metrics:
    """The application's Prometheus metrics; implements the gateway's `RequestObserver`.

    Args:
        pool: returns the live pool at scrape time (None before it is loaded).
        queue: returns the write-behind queue at scrape time.
        auth: returns the failed-token-attempt counter at scrape time.
    """

    def __init__(
        self,
        pool: PoolSource = lambda: None,
        queue: QueueSource = lambda: None,
        auth: AuthSource = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._requests = Counter(
            "llmgateway_requests",
            "Client requests answered, by instance and HTTP status code.",
            ["instance", "code"],
            registry=registry,
        )
        self._failed = Counter(
            "llmgateway_upstream_attempts_failed",
            "Upstream attempts that failed, by instance and reason.",
            ["instance", "reason"],
            registry=registry,
        )
        self._retries = Counter(
            "llmgateway_retries",
            "Failed upstream attempts followed by another attempt, by instance and reason.",
            ["instance", "reason"],
            registry=registry,
        )
        self._overhead = Histogram(
            "llmgateway_gateway_overhead_seconds",
            "Request time spent outside waiting for upstream response headers.",
            ["instance"],
            buckets=OVERHEAD_BUCKETS,
            registry=registry,
        )
        self._upstream = Histogram(
            "llmgateway_upstream_seconds",
            "Time waiting for upstream response headers, all attempts of a request.",
            ["instance"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self._probes = Counter(
            "llmgateway_probes",
            "Keeper probes recorded, by instance and resulting status.",
            ["instance", "result"],
            registry=registry,
        )
        self._incidents = Counter(
            "llmgateway_incidents",
            "Upstream incidents declared (many working keys failing alike at once).",
            ["instance", "reason"],
            registry=registry,
        )
        self.loop_lag = Histogram(
            "llmgateway_event_loop_lag_seconds",
            "How late the event loop woke a task sleeping a fixed interval (stalls: every client waits).",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        """Fed by the process's `LoopLagMonitor`."""
        self.loop_own_lag = Histogram(
            "llmgateway_event_loop_own_lag_seconds",
            "Of each event-loop lag, the part the loop's thread did not spend waiting for a CPU "
            "(held by other processes or a CPU limit): what the gateway's own work caused "
            "(Linux only).",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        """Fed by the process's `LoopLagMonitor`, where the thread's CPU wait can be read."""
        registry.register(_PoolCollector(pool, queue, auth))
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._failed_children: dict[tuple[str, ErrorReason], Counter] = {}
        self._retry_children: dict[tuple[str, ErrorReason], Counter] = {}
        self._latency_children: dict[str, tuple[Histogram, Histogram]] = {}
        self._probe_children: dict[tuple[str, str], Counter] = {}
        self._tallies: dict[str, list[int]] = {}

    # -- RequestObserver --------------------------------------------------

    def request_done(
        self, instance: str, status: int, seconds: float, upstream_seconds: float
    ) -> None:
        """Count one answered request and observe its latencies."""
        pending = _pending_failure.get()
        if pending is not None:
            _pending_failure.set(None)
            if status < 400:  # the request ended in a success: its last failure was retried
                self._retry(*pending)
        child = self._request_children.get((instance, status))
        if child is None:
            child = self._requests.labels(instance, str(status))
            self._request_children[(instance, status)] = child
        child.inc()
        latency = self._latency_children.get(instance)
        if latency is None:
            latency = (self._overhead.labels(instance), self._upstream.labels(instance))
            self._latency_children[instance] = latency
        latency[0].observe(max(seconds - upstream_seconds, 0.0))
        if upstream_seconds > 0.0:
            latency[1].observe(upstream_seconds)
        self._tally(instance)[0] += 1

    def attempt_failed(self, instance: str, reason: ErrorReason) -> None:
        """Count one failed upstream attempt; the request's previous failure was retried."""
        pending = _pending_failure.get()
        if pending is not None:
            self._retry(*pending)
        # A broken stream is past the point of no return: it is never retried.
        _pending_failure.set(
            None if reason is ErrorReason.STREAM_DISCONNECT else (instance, reason)
        )
        child = self._failed_children.get((instance, reason))
        if child is None:
            child = self._failed.labels(instance, reason.value)
            self._failed_children[(instance, reason)] = child
        child.inc()
        self._tally(instance)[2] += 1

    def _retry(self, instance: str, reason: ErrorReason) -> None:
        child = self._retry_children.get((instance, reason))
        if child is None:
            child = self._retries.labels(instance, reason.value)
            self._retry_children[(instance, reason)] = child
        child.inc()
        self._tally(instance)[1] += 1

    # -- keeper -----------------------------------------------------------

    def incident_started(self, instance: str, reason: str) -> None:
        """Count one incident of `instance` for `reason` (the pool's PoolObserver)."""
        self._incidents.labels(instance, reason).inc()

    def probe_done(self, instance: str, status: str) -> None:
        """Count one recorded keeper probe of `instance` that gave `status` (a Status value)."""
        key = (instance, str(status))
        child = self._probe_children.get(key)
        if child is None:
            child = self._probes.labels(instance, str(status))
            self._probe_children[key] = child
        child.inc()

    # -- reading ----------------------------------------------------------

    def _tally(self, instance: str) -> list[int]:
        tally = self._tallies.get(instance)
        if tally is None:
            tally = self._tallies[instance] = [0, 0, 0]
        return tally

    def tally(self, instance: str) -> RequestTally:
        """The cumulative requests, retries and failed attempts of `instance`."""
        requests, retries, failures = self._tallies.get(instance, (0, 0, 0))
        return RequestTally(requests, retries, failures)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


METRICS: Final = web.AppKey("metrics", Metrics)
"""The application's `Metrics` (created by the admin cleanup context before the gateway)."""
