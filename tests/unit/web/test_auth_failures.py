"""Failed token attempts per client address: counting, blocking for a minute, bounded memory."""

from __future__ import annotations

import pytest

from llmgateway.web.admin_guard import is_loopback
from llmgateway.web.auth_failures import AuthFailures, client_key


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestAuthFailures:
    def test_blocked_after_the_limit_for_a_minute(self) -> None:
        """The attempt past the limit is refused for 60 s; the next minute starts afresh."""
        clock = Clock()
        failures = AuthFailures(3, clock=clock)
        assert [failures.failed("203.0.113.7", "proxy") for _ in range(3)] == [None] * 3
        assert failures.failed("203.0.113.7", "proxy") == 60.0
        clock.now += 20
        assert failures.failed("203.0.113.7", "proxy") == 40.0
        assert failures.blocked_for("203.0.113.7") == 40.0
        clock.now += 41
        assert failures.blocked_for("203.0.113.7") is None
        assert failures.failed("203.0.113.7", "proxy") is None

    def test_addresses_are_counted_apart(self) -> None:
        """One noisy address does not block another."""
        failures = AuthFailures(1, clock=Clock())
        failures.failed("203.0.113.7", "proxy")
        assert failures.failed("203.0.113.7", "proxy") is not None
        assert failures.failed("198.51.100.1", "proxy") is None

    def test_failures_spread_over_minutes_never_block(self) -> None:
        """The count starts again each minute."""
        clock = Clock()
        failures = AuthFailures(2, clock=clock)
        for _ in range(5):
            assert failures.failed("203.0.113.7", "admin") is None
            assert failures.failed("203.0.113.7", "admin") is None
            clock.now += 61
        assert failures.totals == {"proxy": 0, "admin": 10}

    def test_zero_never_blocks_but_counts(self) -> None:
        """auth_failures_per_minute 0 disables blocking; the metric still counts."""
        failures = AuthFailures(0, clock=Clock())
        assert all(failures.failed("203.0.113.7", "proxy") is None for _ in range(100))
        assert failures.totals["proxy"] == 100

    def test_the_table_is_bounded(self) -> None:
        """A crowd of addresses cannot grow the table past its bound."""
        failures = AuthFailures(5, clock=Clock(), max_tracked=100)
        for i in range(1000):
            failures.failed(f"10.0.{i // 256}.{i % 256}", "proxy")
        assert failures.blocked_for("10.0.0.0") is None
        assert len(failures._clients) == 100


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:1", "2001:db8::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "local"),
    ],
)
def test_client_key_groups_ipv6_by_64(remote: str | None, key: str) -> None:
    """IPv6 clients are counted per /64 (what one host usually holds)."""
    assert client_key(remote) == key


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        (None, True),
        ("", True),
        ("192.0.2.2", False),
        ("10.0.0.1", False),
        ("fd00::2", False),
        ("::ffff:10.0.0.1", False),
        ("not-an-address", False),
    ],
)
def test_loopback_clients(remote: str | None, loopback: bool) -> None:
    """Only 127.0.0.0/8, ::1 (IPv4-mapped too) and Unix sockets are loopback."""
    assert is_loopback(remote) is loopback
