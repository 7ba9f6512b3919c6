"""The retry decisions of one proxied request: which key next, whether to try again, and when.

`Rotation` holds what one request has used: the keys spent (a key error:
never again in this request), the keys tried (a server-side failure: the
others first), the two retry budgets and the backoff owed before a tried key
is reused. `Rotation.next_key` picks the next key, `Rotation.failed` tells the
pool what a failed attempt means and decides whether another attempt follows,
and `Rotation.last_word` what the client gets when none does. None of them
touches a socket, so they are tested on their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from llmgateway.config.schemas import RetryBudget
from llmgateway.core.constants import ErrorReason
from llmgateway.core.errors import (
    GatewayError,
    KeysCoolingDown,
    NoUsableKey,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.pool.incidents import BACKOFF_START, Incident
from llmgateway.pool.key_pool import AllKeysTried, KeyPool
from llmgateway.providers.base import MAX_ERROR_BODY
from llmgateway.providers.upstream import UpstreamAnswer
from llmgateway.web.exchange import Route


def names_model(route: Route, model: str, answer: UpstreamAnswer | None) -> bool:
    """True when a model-not-found answer is about the configured model the request names.

    A 404 for a path the provider does not have, or one whose body does not
    name the model, is the client's error: no key is judged by it.
    """
    if not model or model not in route.configured_models or answer is None:
        return False
    return model.encode() in answer.body[:MAX_ERROR_BODY]


class Budget:
    """Attempts left for one failure class, and the growing backoff between them."""

    __slots__ = ("left", "delay", "factor")

    def __init__(self, budget: RetryBudget, enabled: bool) -> None:
        self.left = budget.attempts if enabled else 0
        self.delay = budget.backoff
        self.factor = budget.backoff_factor

    def take(self) -> bool:
        """Use one retry; False when none is left."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    async def wait(self) -> None:
        """Sleep the current backoff, then grow it."""
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        self.delay *= self.factor


class Rotation:
    """Which keys one request has used, and the retries and backoff it has left."""

    __slots__ = (
        "route",
        "key_budget",
        "server_budget",
        "spent",
        "tried",
        "owed",
        "incident",
    )

    def __init__(self, route: Route) -> None:
        self.route = route
        self.key_budget = Budget(route.key_retry, route.retry_enabled)
        self.server_budget = Budget(route.server_retry, route.retry_enabled)
        self.spent: list[int] = []
        """Keys that failed the key's way: never again in this request."""
        self.tried: list[int] = []
        """Keys that failed server-side: the others are tried first."""
        self.owed: Budget | None = None
        """The budget whose backoff is slept before a tried key is used again."""
        self.incident: Incident | None = None
        """The incident a failure of this request fell into, if any."""

    def excluded(self) -> Sequence[int]:
        """Every key not to pick now."""
        if not self.tried:
            return self.spent
        return [*self.spent, *self.tried]

    async def next_key(self, pool: KeyPool, instance: str, slot_model: str) -> KeyRecord:
        """The next key: one not tried yet, else (after the owed backoff) a tried one again.

        Raises the `exhausted` error when every key this request may use was used.
        """
        try:
            return pool.pick(instance, slot_model, self.excluded())
        except AllKeysTried:
            pass
        await self._reuse_tried()
        try:
            return pool.pick(instance, slot_model, self.spent)
        except AllKeysTried:
            raise self.exhausted(instance, slot_model) from None

    async def _reuse_tried(self) -> None:
        """Every untried key is used up: sleep the owed backoff, then allow the tried ones."""
        if self.owed is not None:
            await self.owed.wait()
            self.owed = None
        self.tried.clear()

    def failed(
        self,
        pool: KeyPool,
        model: str,
        record: KeyRecord,
        result: CheckResult,
        answer: UpstreamAnswer | None,
    ) -> bool:
        """Tell the pool what a failed attempt means; True to try another attempt.

        A fatal reason (for a model the request really names) leaves the pool
        and is replaced at once, outside the retry budget: the pool's size and
        `timeouts.total` bound that. A rate limit takes a key retry; a
        server-side failure a server retry, on another key first. Within an
        incident nothing is condemned and every attempt costs a key retry.
        A client-side failure (a bad request, a path the provider does not
        have) ends the rotation: it is relayed as it is.
        """
        reason = result.reason
        assert reason is not None
        if reason is ErrorReason.NO_MODEL and not names_model(self.route, model, answer):
            return False
        if reason.is_fatal or reason is ErrorReason.RATE_LIMITED:
            incident = pool.report(record, result)
            self.spent.append(record.key_id)
            if incident is not None:
                self.incident = incident
                return self.key_budget.take()
            if reason.is_fatal:
                return self.route.retry_enabled
            return self.key_budget.take()
        if reason.is_server_error:
            pool.report(record, result)
            if not self.server_budget.take():
                return False
            self.tried.append(record.key_id)
            self.owed = self.server_budget
            return True
        return False

    def last_word(
        self, instance: str, model: str, result: CheckResult, answer: UpstreamAnswer | None
    ) -> UpstreamAnswer | GatewayError:
        """What the client gets once no attempt is left: the upstream's own answer, or our error.

        Within an incident, the incident's error; after a wire failure (no
        answer), a timeout or an unavailable upstream.
        """
        if self.incident is not None:
            return self.exhausted(instance, model)
        if answer is not None:
            return answer
        if result.reason is ErrorReason.TIMEOUT:
            return UpstreamTimeout("the upstream did not answer in time")
        return UpstreamUnavailable(f"the upstream failed: {result.message}")

    def exhausted(self, instance: str, model: str) -> GatewayError:
        """The error once every key this request may use was used."""
        incident = self.incident
        if incident is None:
            return NoUsableKey(f"every usable key of {instance}/{model} failed for this request")
        if incident.reason is ErrorReason.RATE_LIMITED:
            return KeysCoolingDown(incident.describe(), retry_after=BACKOFF_START)
        return NoUsableKey(incident.describe())
