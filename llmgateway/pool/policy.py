"""Health policy: the next recorded state of a key after a check, as a pure function.

Both the keeper (after a probe) and the pool (after a gateway attempt) derive
the new `KeyRecord` here, so `next_check_at`, `failing_since`, quarantine and
cool-downs follow one rule set.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from llmgateway.config.schemas import HealthPolicy
from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.models import CheckResult, KeyRecord


def recheck_interval(reason: ErrorReason | None, policy: HealthPolicy) -> float:
    """Seconds until the next check after an outcome with `reason` (None: success)."""
    match reason:
        case None:
            return policy.on_success
        case ErrorReason.RATE_LIMITED:
            return policy.on_rate_limit
        case ErrorReason.NO_QUOTA:
            return policy.on_no_quota
        case ErrorReason.OVERLOADED:
            return policy.on_overload
        case (
            ErrorReason.SERVER_ERROR
            | ErrorReason.SERVICE_UNAVAILABLE
            | ErrorReason.NETWORK_ERROR
            | ErrorReason.TIMEOUT
            | ErrorReason.STREAM_DISCONNECT
        ):
            return policy.on_server_error
        case ErrorReason.INVALID_KEY:
            return policy.on_invalid_key
        case ErrorReason.NO_ACCESS:
            return policy.on_no_access
        case ErrorReason.NO_MODEL:
            return policy.on_no_model
        case ErrorReason.UNKNOWN | ErrorReason.BAD_REQUEST:
            return policy.on_other_error


def next_record(
    previous: KeyRecord,
    result: CheckResult,
    now: datetime,
    policy: HealthPolicy,
    rate_limit_cooldown: float,
    *,
    verify_retryable: bool = False,
) -> KeyRecord:
    """The record that `result`, observed at `now`, turns `previous` into.

    Success clears the failure streak. A failure keeps the first
    `failing_since`, counts `consecutive_failures` and schedules the next
    check by reason; a provider's retry-after wins when later. Failing longer
    than `quarantine_after` is rechecked every `quarantine_recheck`; longer
    than `stop_checking_after` is not checked again (`next_check_at` None).
    A rate limit also sets `cooldown_until`.

    With `verify_retryable` (a keeper probe), a retryable failure is not yet
    a verdict: until `verification_attempts` failures in a row were seen it is
    recorded with its reason and checked again `verification_delay` later, so
    the key shows what happened and when it is looked at next.
    """
    reason = result.reason
    failures = previous.consecutive_failures + 1 if reason is not None else 0
    interval = _interval(result, failures, policy, verify_retryable)
    failing_since: datetime | None = None
    cooldown_until: datetime | None = None
    next_check: datetime | None = now + timedelta(seconds=interval)
    if reason is not None:
        failing_since = _failing_since(previous, now)
        failing_for = (now - failing_since).total_seconds()
        if failing_for >= policy.stop_checking_after:
            next_check = None
        elif failing_for >= policy.quarantine_after:
            next_check = now + timedelta(seconds=policy.quarantine_recheck)
        if reason is ErrorReason.RATE_LIMITED:
            wait = result.retry_after if result.retry_after is not None else rate_limit_cooldown
            cooldown_until = now + timedelta(seconds=wait)
    return replace(
        previous,
        status=result.status,
        last_checked_at=now,
        next_check_at=next_check,
        failing_since=failing_since,
        consecutive_failures=failures,
        status_code=result.status_code,
        message=result.message[:500],
        response_ms=result.response_ms,
        cooldown_until=cooldown_until,
        reason=reason,
    )


def suspect_record(
    previous: KeyRecord, result: CheckResult, now: datetime, check_in: float
) -> KeyRecord:
    """A fatal reason seen on client traffic: `verifying`, probed `check_in` seconds from `now`.

    The suspected reason, status code and message are kept for display; the
    policy's long interval applies only once a probe confirms the reason.
    The failure streak is not counted: nothing is proven yet.
    """
    return replace(
        previous,
        status=Status.VERIFYING,
        reason=result.reason,
        last_checked_at=now,
        next_check_at=now + timedelta(seconds=check_in),
        failing_since=_failing_since(previous, now),
        status_code=result.status_code,
        message=result.message[:500],
        cooldown_until=None,
    )


def _interval(
    result: CheckResult, failures: int, policy: HealthPolicy, verify_retryable: bool
) -> float:
    """Seconds until the next check after `result`, the `failures`-th in a row (see `next_record`)."""
    reason = result.reason
    interval = recheck_interval(reason, policy)
    if (
        verify_retryable
        and reason is not None
        and reason.is_retryable
        and failures < policy.verification_attempts
    ):
        interval = policy.verification_delay
    if result.retry_after is not None and result.retry_after > interval:
        interval = result.retry_after
    return interval


def _failing_since(previous: KeyRecord, now: datetime) -> datetime:
    """When the key's current failure streak began (now, unless it was failing already)."""
    failing = previous.reason is not None or previous.status.reason is not None
    if previous.failing_since is not None and failing:
        return previous.failing_since
    return now
