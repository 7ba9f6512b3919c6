"""Processes under test: tool installation, start/stop, and /proc readings.

Every server process is started through `taskset -c CPU` (taskset execs the
program, so the Popen pid is the server's own pid) and read from
/proc/<pid>/stat (utime + stime) and /proc/<pid>/status (VmRSS).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
READY_POLL = 0.02
"""Seconds between two asks of a starting server whether it is ready."""


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU seconds (user + system) a process has used so far."""

    seconds: float


def ensure_tools() -> None:
    """Install nginx and wrk from Debian packages when missing (idempotent)."""
    missing = [name for name in ("nginx", "wrk") if not _which(name)]
    if not missing:
        return
    print(f"bench: installing {', '.join(missing)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    packages = [("nginx-light" if name == "nginx" else name) for name in missing]
    result = subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env)
    if result.returncode != 0 and "nginx-light" in packages:
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx", "wrk"], check=True, env=env)


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Block until 127.0.0.1:`port` accepts; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} after {timeout} s")


def wait_for_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Block until GET `url` answers 200; raise if the process dies or time runs out.

    Asked every `READY_POLL` seconds: a ready time is measured to within that.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(READY_POLL)
    raise RuntimeError(f"{url} not ready after {timeout} s: {last}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` in seconds, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle or iowait), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Server:
    """A server process pinned to one CPU, stopped with SIGINT (graceful) then SIGKILL."""

    def __init__(self, name: str, argv: list[str], cpu: int | str, log_path: Path) -> None:
        """Prepare (not start) `argv` under `taskset -c cpu` (a CPU or a list: "0,1")."""
        self.name = name
        self._argv = ["taskset", "-c", str(cpu), *argv]
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The running process."""
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process

    @property
    def pid(self) -> int:
        """The server's pid."""
        return self.process.pid

    def start(self, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        """Start the process, its output appended to the log file."""
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
            )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the process printed."""
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGINT, wait up to 15 s, then SIGKILL."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(2)
            try:
                process.wait(timeout=15.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None


def bare_proxy(upstream: str, port: int, cpu: int, log_path: Path) -> Server:
    """The reference proxy (bench/bare_proxy.py) forwarding to `upstream`."""
    argv = [sys.executable, str(BENCH_DIR / "bare_proxy.py"), upstream, str(port)]
    return Server("bare", argv, cpu, log_path)


@cache
def compile_bytecode() -> None:
    """Compile the package's modules to bytecode once (`__pycache__`, as git ignores it).

    An installed package (pip, the container image) ships its bytecode; the
    editable install of a checkout gets it on the first import, unless
    PYTHONDONTWRITEBYTECODE is set, as on some CI machines: then every start
    would compile some 120 modules again (0.3 s) and a bench would time the
    compiler instead of the gateway's start-up.
    """
    import compileall

    compileall.compile_dir(REPO_DIR / "llmgateway", quiet=1)


def gateway(
    config_path: Path, cpu: int | str, log_path: Path, wrapper: Sequence[str] = ()
) -> Server:
    """`python -m llmgateway serve --config <config_path>`, under `wrapper` (e.g. valgrind).

    The package's bytecode is compiled first (`compile_bytecode`).
    """
    compile_bytecode()
    argv = [*wrapper, sys.executable, "-m", "llmgateway", "serve", "--config", str(config_path)]
    return Server("gateway", argv, cpu, log_path)


def result_path(kind: str, label: str = "") -> Path:
    """Where a report goes: `bench/results/<date>_<time>-<kind>[-<label>].md` (UTC)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d_%H%M")
    return BENCH_DIR / "results" / f"{stamp}-{kind}{f'-{label}' if label else ''}.md"
