"""A process's reloads: SIGHUP reloads in the background; an API reload applied signals the supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.live import LiveConfig
from llmgateway.config.loader import load_config
from llmgateway.process.stop_signals import ReloadSignals
from llmgateway.web.reloading import Reloads
from tests.unit.config.conftest import MINIMAL

SECOND = """\
  second:
    provider_type: anthropic
    keys: ["sk-second-0123456789abcdef"]
    access_control:
      gateway_access_token: "tok-second-0123456789"
"""


@pytest.fixture
def sighups() -> Iterator[ReloadSignals]:
    """This test process's SIGHUPs, recorded (it plays the supervisor)."""
    signals = ReloadSignals()
    signals.capture()
    try:
        yield signals
    finally:
        signals.release()


def _live(tmp_path: Path) -> tuple[LiveConfig, Path]:
    path = tmp_path / "providers.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    return LiveConfig(ConfigAccessor(load_config(path, {})), path=path, env={}), path


async def test_an_applied_api_reload_signals_the_supervisor(
    tmp_path: Path, sighups: ReloadSignals
) -> None:
    """Applied: the supervisor gets SIGHUP; a dry run or a refused reload sends nothing."""
    live, path = _live(tmp_path)
    reloads = Reloads(live, supervisor=os.getpid())
    path.write_text(MINIMAL + SECOND, encoding="utf-8")

    assert not (await reloads.from_api(dry_run=True)).applied
    assert sighups.received == []
    assert (await reloads.from_api()).applied
    assert sighups.received == [signal.SIGHUP]

    path.write_text(MINIMAL + SECOND.replace("anthropic", "nope"), encoding="utf-8")
    assert not (await reloads.from_api()).applied
    assert sighups.received == [signal.SIGHUP]


async def test_a_lone_process_reloads_itself(tmp_path: Path, sighups: ReloadSignals) -> None:
    """Without a supervisor an API reload applies here and signals nobody."""
    live, path = _live(tmp_path)
    path.write_text(MINIMAL + SECOND, encoding="utf-8")
    assert (await Reloads(live).from_api()).applied
    assert live.current.get_provider("second") is not None
    assert sighups.received == []


async def test_a_sighup_reloads_in_the_background(tmp_path: Path) -> None:
    """The signal's listener starts the reload; `settle` waits for it."""
    live, path = _live(tmp_path)
    reloads = Reloads(live)
    path.write_text(MINIMAL + SECOND, encoding="utf-8")
    reloads.on_signal()
    async with asyncio.timeout(10):
        await reloads.settle()
    assert live.current.get_provider("second") is not None
