"""Stop signals, the shutdown's deadline, the watchdog, the parent-death set-up of a worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from llmgateway.core.lifecycle import (
    EXIT_MARGIN,
    EXIT_OVERRUN,
    HURRY_LIMIT,
    MIN_STEP,
    ShutdownClock,
    interruptible_sleep,
)
from llmgateway.process.parent import PR_SET_PDEATHSIG, ParentWatch, child_setup, load_prctl
from llmgateway.process.stop_signals import ReloadSignals, StopSignals

PR_GET_PDEATHSIG = 2


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestShutdownClock:
    def test_before_the_shutdown_every_step_gets_what_it_asks(self) -> None:
        """No deadline yet: `allow` returns the wanted time."""
        clock = ShutdownClock(30.0, clock=FakeClock())
        assert not clock.begun
        assert clock.allow(10.0) == 10.0

    def test_steps_share_what_is_left_of_the_deadline(self) -> None:
        """The deadline is grace + EXIT_MARGIN after the start; late steps get at least MIN_STEP."""
        time = FakeClock()
        clock = ShutdownClock(30.0, clock=time)
        clock.begin()
        assert clock.deadline == 100.0 + 30.0 + EXIT_MARGIN
        time.now += 30.0
        assert clock.allow(10.0) == EXIT_MARGIN
        assert clock.allow(10.0, keep=1.0) == EXIT_MARGIN - 1.0
        time.now += 60.0
        assert clock.allow(10.0) == MIN_STEP

    def test_hurrying_shortens_the_deadline_and_tells_once(self) -> None:
        """A hurried shutdown ends HURRY_LIMIT from now; listeners hear the start and the hurry."""
        time = FakeClock()
        clock = ShutdownClock(30.0, clock=time)
        heard: list[tuple[bool, bool]] = []
        clock.on_change(lambda: heard.append((clock.begun, clock.hurried)))
        clock.begin()
        clock.begin()
        time.now += 1.0
        clock.hurry()
        clock.hurry()
        assert heard == [(True, False), (True, True)]
        assert clock.deadline == 101.0 + HURRY_LIMIT


class TestStopSignals:
    def test_a_signal_is_recorded_and_never_kills(self) -> None:
        """Captured: SIGTERM is recorded and heard by listeners; released: handlers are restored."""
        before = signal.getsignal(signal.SIGTERM)
        signals = StopSignals()
        heard: list[int] = []
        signals.on_signal(heard.append)
        signals.capture()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            assert signals.received == [signal.SIGTERM] == heard
            assert signals.requested
        finally:
            signals.release()
        assert signal.getsignal(signal.SIGTERM) == before

    async def test_the_loop_handles_them_while_attached(self) -> None:
        """Attached to the running loop, a signal wakes it; detached, the Python handler records."""
        signals = StopSignals()
        signals.capture()
        woken = asyncio.Event()
        signals.on_signal(lambda _: woken.set())
        try:
            signals.attach(asyncio.get_running_loop())
            os.kill(os.getpid(), signal.SIGINT)
            async with asyncio.timeout(5):
                await woken.wait()
            signals.detach()
            os.kill(os.getpid(), signal.SIGINT)
            assert signals.received == [signal.SIGINT, signal.SIGINT]
        finally:
            signals.detach()
            signals.release()


def test_a_sighup_is_recorded_as_a_reload_and_never_kills() -> None:
    """Captured: SIGHUP is recorded by the reload signals alone; released: the handler is restored."""
    before = signal.getsignal(signal.SIGHUP)
    stops, reloads = StopSignals(), ReloadSignals()
    heard: list[int] = []
    reloads.on_signal(heard.append)
    stops.capture()
    reloads.capture()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)
        assert reloads.received == [signal.SIGHUP, signal.SIGHUP] == heard
        assert not stops.requested
    finally:
        reloads.release()
        stops.release()
    assert signal.getsignal(signal.SIGHUP) == before


async def test_an_interruptible_sleep_ends_when_asked_to_stop() -> None:
    """A long wait returns as soon as the event is set; once set, waits return at once."""
    stopping = asyncio.Event()
    pause = interruptible_sleep(asyncio.sleep, stopping)
    waiting = asyncio.create_task(pause(3600))
    await asyncio.sleep(0)
    stopping.set()
    async with asyncio.timeout(5):
        await waiting
        await pause(3600)


def _run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=child_setup(os.getpid()),
    )


@pytest.mark.skipif(load_prctl() is None, reason="prctl is Linux-only")
def test_a_worker_starts_with_its_signals_blocked_and_the_parent_death_signal_set() -> None:
    """`child_setup` blocks SIGTERM/SIGINT/SIGHUP through exec, asks for SIGTERM on parent death."""
    result = _run_child(f"""
        import ctypes, signal
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        value = ctypes.c_int()
        ctypes.CDLL(None).prctl({PR_GET_PDEATHSIG}, ctypes.byref(value), 0, 0, 0)
        print(*(int(s in blocked) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)))
        print(value.value)
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1", "1", str(int(signal.SIGTERM))]
    assert PR_SET_PDEATHSIG == 1


def test_the_watchdog_ends_an_overrunning_process_with_exit_1() -> None:
    """A process still running when its watchdog fires exits EXIT_OVERRUN and says why."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from llmgateway.core.lifecycle import Watchdog\n"
            "Watchdog().arm(time.monotonic() + 0.2, 'a test step')\n"
            "time.sleep(60)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_OVERRUN
    assert "shutdown_overran" in result.stdout + result.stderr


async def test_the_parent_watch_tells_an_orphan() -> None:
    """A watch naming another process as supervisor sees this process as orphaned at once."""
    told: list[bool] = []
    watch = ParentWatch(os.getppid() + 1 if os.getppid() != 1 else 2, interval=0.01)
    assert watch.orphaned()
    async with asyncio.timeout(5):
        await watch.watch(lambda: told.append(True))
    assert told == [True]
    assert not ParentWatch(os.getppid()).orphaned()
