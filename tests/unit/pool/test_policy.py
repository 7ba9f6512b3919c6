"""The health policy: the next record of a key after a check, per outcome."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from llmgateway.config.schemas import HealthPolicy
from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.pool.policy import next_record, recheck_interval

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
DAY = 86400.0
POLICY = HealthPolicy(
    on_success=1000.0,
    on_rate_limit=2000.0,
    on_no_quota=3000.0,
    on_server_error=4000.0,
    on_overload=5000.0,
    on_invalid_key=6000.0,
    on_no_access=7000.0,
    on_no_model=8000.0,
    on_other_error=9000.0,
    quarantine_after=30 * DAY,
    quarantine_recheck=10 * DAY,
    stop_checking_after=90 * DAY,
)
COOLDOWN = 60.0


def untested() -> KeyRecord:
    """A fresh key record, never checked."""
    return KeyRecord(
        key_id=1, instance="main", key="sk-test-0000000001", model="m", status=Status.UNTESTED
    )


def failing(reason: ErrorReason, since: datetime, failures: int = 3) -> KeyRecord:
    """A record whose checks have failed with `reason` since `since`."""
    return replace(
        untested(),
        status=Status.of(reason),
        failing_since=since,
        consecutive_failures=failures,
        last_checked_at=since,
    )


EXPECTED_INTERVALS = [
    (None, 1000.0),
    (ErrorReason.RATE_LIMITED, 2000.0),
    (ErrorReason.NO_QUOTA, 3000.0),
    (ErrorReason.SERVER_ERROR, 4000.0),
    (ErrorReason.SERVICE_UNAVAILABLE, 4000.0),
    (ErrorReason.NETWORK_ERROR, 4000.0),
    (ErrorReason.TIMEOUT, 4000.0),
    (ErrorReason.STREAM_DISCONNECT, 4000.0),
    (ErrorReason.OVERLOADED, 5000.0),
    (ErrorReason.INVALID_KEY, 6000.0),
    (ErrorReason.NO_ACCESS, 7000.0),
    (ErrorReason.NO_MODEL, 8000.0),
    (ErrorReason.UNKNOWN, 9000.0),
    (ErrorReason.BAD_REQUEST, 9000.0),
]


class TestRecheckInterval:
    @pytest.mark.parametrize(("reason", "seconds"), EXPECTED_INTERVALS)
    def test_interval_per_reason(self, reason: ErrorReason | None, seconds: float) -> None:
        """Each outcome is rechecked after its own `health_policy` interval."""
        assert recheck_interval(reason, POLICY) == seconds

    def test_every_reason_has_an_interval(self) -> None:
        """No ErrorReason is left without a policy entry."""
        covered = {reason for reason, _ in EXPECTED_INTERVALS}
        assert covered == {*ErrorReason, None}


class TestNextRecord:
    @pytest.mark.parametrize(("reason", "seconds"), EXPECTED_INTERVALS)
    def test_outcome_sets_status_and_next_check(
        self, reason: ErrorReason | None, seconds: float
    ) -> None:
        """A check records its status, the check time and the next check per policy."""
        result = CheckResult(reason=reason, status_code=418, message="why", response_ms=12)
        new = next_record(untested(), result, NOW, POLICY, COOLDOWN)
        assert new.status is Status.of(reason)
        assert new.last_checked_at == NOW
        assert new.next_check_at == NOW + timedelta(seconds=seconds)
        assert (new.status_code, new.message, new.response_ms) == (418, "why", 12)

    def test_success_clears_the_failure_streak(self) -> None:
        """A success after failures clears failing_since, the failure count and any cooldown."""
        previous = replace(
            failing(ErrorReason.RATE_LIMITED, NOW - timedelta(hours=1)),
            cooldown_until=NOW + timedelta(minutes=5),
        )
        new = next_record(
            previous, CheckResult(reason=None, status_code=200), NOW, POLICY, COOLDOWN
        )
        assert new.status is Status.VALID
        assert new.failing_since is None
        assert new.consecutive_failures == 0
        assert new.cooldown_until is None

    def test_first_failure_starts_the_streak(self) -> None:
        """The first failure sets failing_since to now and counts one failure."""
        new = next_record(
            untested(), CheckResult(reason=ErrorReason.INVALID_KEY), NOW, POLICY, COOLDOWN
        )
        assert new.failing_since == NOW
        assert new.consecutive_failures == 1

    def test_failing_since_is_kept_across_failures(self) -> None:
        """Later failures, even of another reason, keep the first failing_since and count up."""
        since = NOW - timedelta(days=2)
        previous = failing(ErrorReason.SERVER_ERROR, since, failures=4)
        new = next_record(previous, CheckResult(reason=ErrorReason.NO_QUOTA), NOW, POLICY, COOLDOWN)
        assert new.failing_since == since
        assert new.consecutive_failures == 5
        assert new.status is Status.NO_QUOTA

    def test_stale_failing_since_of_a_valid_key_is_not_reused(self) -> None:
        """A valid record carrying an old failing_since starts a new streak at its next failure."""
        previous = replace(untested(), status=Status.VALID, failing_since=NOW - timedelta(days=80))
        new = next_record(previous, CheckResult(reason=ErrorReason.TIMEOUT), NOW, POLICY, COOLDOWN)
        assert new.failing_since == NOW
        assert new.next_check_at == NOW + timedelta(seconds=4000.0)

    def test_retry_after_wins_when_later(self) -> None:
        """A provider's retry-after longer than the policy interval sets the next check."""
        result = CheckResult(reason=ErrorReason.RATE_LIMITED, retry_after=5000.0)
        new = next_record(untested(), result, NOW, POLICY, COOLDOWN)
        assert new.next_check_at == NOW + timedelta(seconds=5000.0)

    def test_retry_after_shorter_than_policy_is_ignored_for_the_next_check(self) -> None:
        """A retry-after shorter than the policy interval leaves the policy interval."""
        result = CheckResult(reason=ErrorReason.RATE_LIMITED, retry_after=30.0)
        new = next_record(untested(), result, NOW, POLICY, COOLDOWN)
        assert new.next_check_at == NOW + timedelta(seconds=2000.0)

    def test_rate_limit_cools_down_for_retry_after(self) -> None:
        """A rate limit with a retry-after cools the key down for exactly that long."""
        result = CheckResult(reason=ErrorReason.RATE_LIMITED, retry_after=30.0)
        new = next_record(untested(), result, NOW, POLICY, COOLDOWN)
        assert new.cooldown_until == NOW + timedelta(seconds=30.0)

    def test_rate_limit_without_retry_after_cools_down_for_the_default(self) -> None:
        """A rate limit without a retry-after cools down for `rate_limit_cooldown`."""
        new = next_record(
            untested(), CheckResult(reason=ErrorReason.RATE_LIMITED), NOW, POLICY, COOLDOWN
        )
        assert new.cooldown_until == NOW + timedelta(seconds=COOLDOWN)

    @pytest.mark.parametrize(
        "reason", [ErrorReason.NO_QUOTA, ErrorReason.INVALID_KEY, ErrorReason.SERVER_ERROR]
    )
    def test_other_failures_set_no_cooldown(self, reason: ErrorReason) -> None:
        """Only a rate limit cools a key down; other failures leave cooldown_until empty."""
        new = next_record(untested(), CheckResult(reason=reason), NOW, POLICY, COOLDOWN)
        assert new.cooldown_until is None

    def test_failing_past_quarantine_is_rechecked_at_quarantine_pace(self) -> None:
        """A key failing longer than quarantine_after is rechecked every quarantine_recheck."""
        previous = failing(ErrorReason.INVALID_KEY, NOW - timedelta(days=31))
        new = next_record(
            previous, CheckResult(reason=ErrorReason.INVALID_KEY), NOW, POLICY, COOLDOWN
        )
        assert new.next_check_at == NOW + timedelta(days=10)

    def test_failing_just_under_quarantine_follows_the_reason(self) -> None:
        """A key failing a little less than quarantine_after keeps its reason's interval."""
        previous = failing(ErrorReason.INVALID_KEY, NOW - timedelta(days=29))
        new = next_record(
            previous, CheckResult(reason=ErrorReason.INVALID_KEY), NOW, POLICY, COOLDOWN
        )
        assert new.next_check_at == NOW + timedelta(seconds=6000.0)

    def test_failing_past_stop_is_no_longer_checked(self) -> None:
        """A key failing longer than stop_checking_after gets no next check at all."""
        previous = failing(ErrorReason.NO_QUOTA, NOW - timedelta(days=91))
        new = next_record(previous, CheckResult(reason=ErrorReason.NO_QUOTA), NOW, POLICY, COOLDOWN)
        assert new.next_check_at is None
        assert new.status is Status.NO_QUOTA

    def test_success_after_quarantine_returns_to_the_normal_schedule(self) -> None:
        """A quarantined key that passes its check is valid again with on_success pacing."""
        previous = failing(ErrorReason.INVALID_KEY, NOW - timedelta(days=60))
        new = next_record(previous, CheckResult(reason=None), NOW, POLICY, COOLDOWN)
        assert new.status is Status.VALID
        assert new.next_check_at == NOW + timedelta(seconds=1000.0)

    def test_long_message_is_truncated(self) -> None:
        """The recorded message is cut to 500 characters."""
        result = CheckResult(reason=ErrorReason.UNKNOWN, message="x" * 2000)
        assert len(next_record(untested(), result, NOW, POLICY, COOLDOWN).message) == 500

    def test_identity_fields_are_kept(self) -> None:
        """The key, its id, instance and model never change through a check."""
        new = next_record(untested(), CheckResult(reason=None), NOW, POLICY, COOLDOWN)
        assert (new.key_id, new.instance, new.key, new.model) == (
            1,
            "main",
            "sk-test-0000000001",
            "m",
        )
