"""Plain value types passed between the providers, the keeper, the pool and the gateway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from llmgateway.core.constants import ErrorReason, Status


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The classified outcome of one call made with a key (a probe or a proxied attempt).

    `reason` is None when the call succeeded. `retry_after` is the number of
    seconds the provider asked us to wait (Retry-After, rate-limit reset
    headers, Gemini's RetryInfo), when it said so.
    """

    reason: ErrorReason | None
    status_code: int | None = None
    message: str = ""
    retry_after: float | None = None
    response_ms: int | None = None

    @property
    def ok(self) -> bool:
        """True when the call succeeded."""
        return self.reason is None

    @property
    def status(self) -> Status:
        """The key status this result records."""
        return Status.of(self.reason)


CHECK_OK = CheckResult(reason=None, status_code=200)
"""A successful result without details."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """The stored state of one key for one model (or `__ALL_MODELS__`).

    This is the row of `key_model_status` joined with its key: what the store
    loads into the pool at start-up and what the pool and keeper write back.
    Times are timezone-aware UTC datetimes. `reason` is the reason of the
    last failure: the status's own for a failure status, the suspected one
    while `verifying`, None after a success.
    """

    key_id: int
    instance: str
    key: str
    model: str
    status: Status
    last_checked_at: datetime | None = None
    next_check_at: datetime | None = None
    failing_since: datetime | None = None
    consecutive_failures: int = 0
    status_code: int | None = None
    message: str = ""
    response_ms: int | None = None
    cooldown_until: datetime | None = None
    reason: ErrorReason | None = None
