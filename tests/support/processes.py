"""Looking at real gateway processes from the outside: who runs, what they hold, the port.

Every process of one test's gateway has that test's configuration path on
its command line, so `gateway_pids(config_path)` finds the supervisor, its
workers and any orphan alike, by reading `/proc` (Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

PROC: Final = Path("/proc")


def _cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _all_pids() -> Iterator[int]:
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def is_zombie_or_gone(pid: int) -> bool:
    """True when process `pid` no longer runs (exited, possibly not reaped yet)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def gateway_pids(config_path: Path) -> list[int]:
    """Every live `llmgateway serve` process started with `config_path`."""
    wanted = str(config_path)
    found = []
    for pid in _all_pids():
        command = _cmdline(pid)
        ours = "llmgateway" in command and "serve" in command and wanted in command
        if ours and not is_zombie_or_gone(pid):
            found.append(pid)
    return sorted(found)


def parent_of(pid: int) -> int | None:
    """The parent pid of `pid`, None when it is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def workers_of(supervisor: int, config_path: Path) -> list[int]:
    """The live gateway processes whose parent is `supervisor`."""
    return [pid for pid in gateway_pids(config_path) if parent_of(pid) == supervisor]


def holds_file(pid: int, path: Path) -> bool:
    """True when process `pid` has `path` open."""
    target = str(path)
    try:
        fds = list((PROC / str(pid) / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(fd) == target:
                return True
    return False


def port_is_free(port: int) -> bool:
    """True when a new server could listen on 127.0.0.1:`port` (nobody listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def wait_until(predicate: Callable[[], bool], within: float, what: str) -> float:
    """Poll `predicate()` every 20 ms until true; return the seconds it took.

    Raises AssertionError naming `what` after `within` seconds.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)
    return loop.time() - start


def kill_all(config_path: Path) -> list[int]:
    """SIGKILL every process of this gateway still alive (test clean-up); returns their pids."""
    left = gateway_pids(config_path)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def serve_command(config_path: Path, *extra: str) -> list[str]:
    """`python -m llmgateway serve --config <path>` plus `extra`."""
    return [sys.executable, "-m", "llmgateway", "serve", "--config", str(config_path), *extra]
