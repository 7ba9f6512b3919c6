"""Failed token attempts per client address, and the one-minute block that follows too many.

Both surfaces report here: the proxy (a wrong gateway token) and the admin
endpoints (a wrong admin token). After `server.auth_failures_per_minute`
failures from one address within a minute, that address is refused with 429
for a minute. Only failures cost anything: a request with a valid token
never reaches this module, so it is never slowed, whatever its address. The
table is bounded (`MAX_TRACKED` addresses; IPv6 clients are counted per /64,
the block a single host usually holds), so a crowd of addresses cannot grow it
without limit.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, final

import structlog

log = structlog.get_logger(__name__)

WINDOW: Final = 60.0
"""Seconds over which failures are counted, and how long a block lasts."""

MAX_TRACKED: Final = 10_000
"""Client addresses tracked at most; the oldest are forgotten first."""

SURFACES: Final = ("proxy", "admin")
"""Where a failed attempt happened (the metric's label)."""


def client_key(remote: str | None) -> str:
    """The address failures are counted under: the IPv4 address, or the IPv6 /64."""
    if not remote:
        return "local"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _Client:
    """The failures of one address in its current window, and its block."""

    __slots__ = ("window_start", "failures", "blocked_until")

    def __init__(self, now: float) -> None:
        self.window_start = now
        self.failures = 0
        self.blocked_until = 0.0


@final
class AuthFailures:
    """Counts failed token attempts per client address and blocks the noisy ones.

    `failed(remote, surface)` records one failure and returns the seconds the
    address is blocked for (None while it is not). `per_minute` 0 disables
    blocking (failures are still counted for the metric).
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._max_tracked = max_tracked
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self.totals: dict[str, int] = dict.fromkeys(SURFACES, 0)
        """Failed attempts since start, per surface (`llmgateway_auth_failures_total`)."""

    def use(self, per_minute: int) -> None:
        """Block after `per_minute` failures from now on (a reload; 0: never block)."""
        self._per_minute = per_minute

    def failed(self, remote: str | None, surface: str) -> float | None:
        """Record one failed attempt; the block's remaining seconds, or None if not blocked."""
        self.totals[surface] = self.totals.get(surface, 0) + 1
        if self._per_minute <= 0:
            return None
        now = self._clock()
        key = client_key(remote)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = _Client(now)
            self._forget_oldest()
        else:
            self._clients.move_to_end(key)
        if client.blocked_until > now:
            return client.blocked_until - now
        if now - client.window_start >= WINDOW:
            client.window_start, client.failures = now, 0
        client.failures += 1
        if client.failures <= self._per_minute:
            return None
        client.blocked_until = now + WINDOW
        client.window_start, client.failures = client.blocked_until, 0
        log.warning(
            "client_blocked",
            client=key,
            surface=surface,
            failures_per_minute=self._per_minute,
            blocked_seconds=WINDOW,
        )
        return WINDOW

    def blocked_for(self, remote: str | None) -> float | None:
        """Seconds the address stays blocked, or None (does not count as an attempt)."""
        client = self._clients.get(client_key(remote))
        if client is None:
            return None
        left = client.blocked_until - self._clock()
        return left if left > 0 else None

    def _forget_oldest(self) -> None:
        while len(self._clients) > self._max_tracked:
            self._clients.popitem(last=False)


def retry_after_header(seconds: float) -> str:
    """The Retry-After value (whole seconds, at least 1) for a block of `seconds`."""
    return str(max(1, math.ceil(seconds)))
