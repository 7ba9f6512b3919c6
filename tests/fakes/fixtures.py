"""pytest fixtures for the fake upstreams: `fake_upstream`, `hostile_upstream`, `cutting_proxy`, `refused_port`.

Load with `pytest_plugins = ["tests.fakes.fixtures"]` in `tests/conftest.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.fakes.cutting_proxy import CuttingProxy
from tests.fakes.cutting_proxy import refused_port as find_refused_port
from tests.fakes.hostile_upstream import HostileUpstream
from tests.fakes.upstream import FakeUpstream

type CuttingProxyFactory = Callable[..., Awaitable[CuttingProxy]]
"""`await cutting_proxy(target_port, cut_after_bytes=None, target_host="127.0.0.1")`."""


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A started FakeUpstream, closed after the test."""
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def hostile_upstream() -> AsyncIterator[HostileUpstream]:
    """A started HostileUpstream (every key answered OK until told otherwise), closed after."""
    async with HostileUpstream() as hostile:
        yield hostile


@pytest.fixture
async def cutting_proxy() -> AsyncIterator[CuttingProxyFactory]:
    """A factory of started CuttingProxy objects, all closed after the test."""
    proxies: list[CuttingProxy] = []

    async def make(
        target_port: int, cut_after_bytes: int | None = None, target_host: str = "127.0.0.1"
    ) -> CuttingProxy:
        proxy = CuttingProxy(target_host, target_port, cut_after_bytes)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.close()


@pytest.fixture
def refused_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    return find_refused_port()
