"""The container image, built and run for real with buildah (no Docker engine needed).

`base_image` is a local Python 3.13 base: Debian trixie made with debootstrap
(`--variant=minbase`, python3, python3-venv, ca-certificates) from the apt
mirror this machine's own sources name, without package archives or lists,
imported with `podman import` and kept under a tag that names its recipe, so
it is made once per machine. `image` builds the repository's Dockerfile on it
with `buildah build` (chroot isolation, host network, the host's CA
certificates mounted read-only so pip verifies TLS as this machine does, and
this machine's pip index, if pip is configured with one, as `PIP_INDEX_URL`).

`new_container` makes a working container of the image (`buildah from`);
`Container` runs the image's entry point in it with `buildah run` the way
`docker run IMAGE ARGS...` does: the image's environment, working directory,
user and declared volumes, with bind mounts given as `--volume`. buildah gives
each working container its own directory for every VOLUME of the image,
filled from the image at first use (owner included, as Docker fills a new
named volume) and kept for every later run in that container: two runs in one
container are two `docker run`s on one named volume. A `--volume` aimed at a
declared VOLUME is shadowed by that directory, so only /app/config and
/app/keys are bind-mounted. `Container.serve` starts a long-running command as
PID 1 of its own PID namespace, as a container engine does (see `pid1_init.py`).

Everything here needs root and buildah, and skips with that reason otherwise;
podman and debootstrap are needed only while the base image is missing.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.support.pid1_init import PID_LINE

ROOT: Final = Path(__file__).resolve().parents[2]
PID1_SOURCE: Final = (Path(__file__).parent / "pid1_init.py").read_text(encoding="utf-8")

BASE_SUITE: Final = "trixie"
BASE_PACKAGES: Final = ("python3", "python3-venv", "ca-certificates")
BASE_RECIPE: Final = (
    f"debootstrap --variant=minbase --include={','.join(BASE_PACKAGES)} {BASE_SUITE}"
)
BASE_REPOSITORY: Final = "localhost/llmgateway-test-base"
BASE_TAG: Final = (
    f"{BASE_REPOSITORY}:{BASE_SUITE}-{hashlib.sha256(BASE_RECIPE.encode()).hexdigest()[:12]}"
)
"""The base image's name: a new recipe makes a new tag, the same one reuses the image."""

LOCK_PATH: Final = Path("/var/tmp/llmgateway-container-tests.lock")
"""Serialises the base image's creation between test runs on one machine."""

DEBOOTSTRAP_TIMEOUT: Final = 1200
BUILD_TIMEOUT: Final = 1200
COMMAND_TIMEOUT: Final = 120
STARTUP_TIMEOUT: Final = 90.0
"""Seconds a served container gets to answer /-/ready (a loaded 2-core machine is slow)."""


def skip_reason() -> str | None:
    """Why the container tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "the container tests need root (buildah's chroot isolation); run them as root"
    if shutil.which("buildah") is None:
        return "the container tests need buildah (apt-get install buildah; .ci/run installs it)"
    return None


def run_command(
    command: Sequence[str], *, timeout: float, what: str, stdin: Any = None
) -> subprocess.CompletedProcess[str]:
    """Run `command`; fail the test with its output when it does not exit 0."""
    result = subprocess.run(
        list(command),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed with exit code {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


# -- the machine's package sources ---------------------------------------------------------


def _one_line_sources(text: str) -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) of the `deb` lines of a sources.list file."""
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            yield words[0], [words[1]]


def _deb822_sources(text: str) -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) of the enabled `deb` stanzas of a .sources file."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split()


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str | None:
    """The first Debian archive (not its security archive) in this machine's apt sources.

    None when the sources name none; debootstrap then uses its own default.
    """
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        parse = _deb822_sources if path.suffix == ".sources" else _one_line_sources
        for uri, suites in parse(text):
            segments = [s for s in urlsplit(uri).path.split("/") if s]
            if urlsplit(uri).scheme not in ("http", "https") or not segments:
                continue
            if segments[-1] == "debian" and not any(s.endswith("-security") for s in suites):
                return uri.rstrip("/")
    return None


def pip_index_url() -> str | None:
    """This machine's pip index (PIP_INDEX_URL or pip's configuration), if one is set."""
    value = os.environ.get("PIP_INDEX_URL", "")
    if not value:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        for line in listed.stdout.splitlines():
            name, _, setting = line.partition("=")
            if name.endswith(".index-url") and not name.endswith("extra-index-url"):
                value = setting.strip().strip("'\"")
                break
    return value if value.startswith(("http://", "https://")) else None


# -- images ----------------------------------------------------------------------------------


def image_exists(name: str) -> bool:
    """Whether the local container storage holds an image called `name`."""
    found = subprocess.run(
        ["buildah", "inspect", "--type", "image", name],
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    return found.returncode == 0


@contextmanager
def _machine_lock() -> Iterator[None]:
    with LOCK_PATH.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unmount_below(root: Path) -> None:
    """Unmount whatever a failed debootstrap left mounted inside `root` (deepest first)."""
    mounts = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False, timeout=COMMAND_TIMEOUT)


def make_base_image(tag: str = BASE_TAG) -> str:
    """The local Python 3.13 base image `tag`, made with debootstrap unless it exists."""
    with _machine_lock():
        if image_exists(tag):
            return tag
        for tool in ("debootstrap", "podman"):
            if shutil.which(tool) is None:
                pytest.fail(f"making the base image {tag} needs {tool} (.ci/run installs it)")
        mirror = debian_mirror()
        with tempfile.TemporaryDirectory(prefix="llmgateway-base-", dir="/var/tmp") as work:
            root = Path(work) / "root"
            try:
                run_command(
                    [*BASE_RECIPE.split(), str(root), *([mirror] if mirror else [])],
                    timeout=DEBOOTSTRAP_TIMEOUT,
                    what="debootstrap",
                )
            finally:
                _unmount_below(root)
            # A slim base, as the official slim images: no package archives, no package lists.
            for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for item in (root / leftovers).glob("*"):
                    if item.is_file():
                        item.unlink()
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            try:
                run_command(
                    ["podman", "import", "-", tag],
                    stdin=tar.stdout,
                    timeout=BUILD_TIMEOUT,
                    what="podman import",
                )
            finally:
                if tar.stdout is not None:
                    tar.stdout.close()
                tar.wait(timeout=COMMAND_TIMEOUT)
    return tag


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The parts of an image's configuration that `docker run` applies."""

    name: str
    user: str
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    env: list[str]
    volumes: list[str]
    exposed_ports: list[str]
    healthcheck: list[str]
    """The health check's `Test` (e.g. ["CMD", "python", "-c", ...]); empty when none."""

    @classmethod
    def inspect(cls, name: str) -> ImageConfig:
        """Read the configuration of image `name` with `buildah inspect`."""
        shown = run_command(
            ["buildah", "inspect", "--type", "image", name],
            timeout=COMMAND_TIMEOUT,
            what="buildah inspect",
        )
        config: dict[str, Any] = json.loads(shown.stdout)["Docker"]["config"]
        return cls(
            name=name,
            user=config.get("User") or "",
            entrypoint=list(config.get("Entrypoint") or []),
            cmd=list(config.get("Cmd") or []),
            workdir=config.get("WorkingDir") or "",
            env=list(config.get("Env") or []),
            volumes=sorted(config.get("Volumes") or {}),
            exposed_ports=sorted(config.get("ExposedPorts") or {}),
            healthcheck=list((config.get("Healthcheck") or {}).get("Test") or []),
        )


def build_image(base: str, tag: str, log: Path) -> None:
    """`buildah build` the repository's Dockerfile on `base` as `tag` (output in `log`)."""
    index = pip_index_url()
    command = [
        "buildah",
        "build",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--format",
        "docker",
        "--build-arg",
        f"BASE_IMAGE={base}",
        *(["--build-arg", f"PIP_INDEX_URL={index}"] if index else []),
        *(
            ["--volume", "/etc/ssl/certs:/etc/ssl/certs:ro"]
            if Path("/etc/ssl/certs").is_dir()
            else []
        ),
        "--tag",
        tag,
        "--file",
        str(ROOT / "Dockerfile"),
        str(ROOT),
    ]
    with log.open("w", encoding="utf-8") as sink:
        code = subprocess.run(
            command, stdout=sink, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT, check=False
        ).returncode
    if code != 0:
        output = log.read_text(encoding="utf-8", errors="replace")
        if index:
            output = output.replace(index, "<PIP_INDEX_URL>")
        pytest.fail(f"buildah build exited {code}:\n{output[-6000:]}")


# -- containers ------------------------------------------------------------------------------


@dataclass(slots=True)
class Serving:
    """A long-running command of a container, PID 1 of its own PID namespace."""

    process: asyncio.subprocess.Process
    """The `buildah run` process; its exit code is the command's."""
    log_path: Path
    host_pid: int
    """The command's process ID as this machine sees it (what a signal is sent to)."""

    def output(self) -> str:
        """What the command printed so far (stdout and stderr)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass(slots=True)
class Container:
    """A working container of an image: `docker run` of its entry point, through buildah."""

    id: str
    image: ImageConfig
    served: list[Serving] = field(default_factory=list)

    def entry(self, args: Sequence[str] | None = None) -> list[str]:
        """The command `docker run IMAGE ARGS...` runs: the entry point, then ARGS or CMD."""
        return [*self.image.entrypoint, *(self.image.cmd if args is None else args)]

    def buildah_run(
        self,
        command: Sequence[str],
        *,
        mounts: Mapping[Path, str] | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        cap_add: Sequence[str] = (),
    ) -> list[str]:
        """The `buildah run` command line that runs `command` in this container."""
        options = ["--isolation", "chroot", "--network", "host"]
        for host, target in (mounts or {}).items():
            options += ["--volume", f"{host}:{target}"]
        for name, value in (env or {}).items():
            options += ["--env", f"{name}={value}"]
        if user is not None:
            options += ["--user", user]
        for capability in cap_add:
            options += ["--cap-add", capability]
        return ["buildah", "run", *options, self.id, "--", *command]

    async def run(
        self,
        args: Sequence[str] | None,
        *,
        mounts: Mapping[Path, str] | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> tuple[int, str]:
        """`docker run IMAGE ARGS...` to the end: (exit code, stdout and stderr together)."""
        return await self.run_command(self.entry(args), mounts=mounts, env=env, user=user)

    async def run_command(
        self,
        command: Sequence[str],
        *,
        mounts: Mapping[Path, str] | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> tuple[int, str]:
        """Run `command` itself (no entry point) to the end: (exit code, output)."""
        process = await asyncio.create_subprocess_exec(
            *self.buildah_run(command, mounts=mounts, env=env, user=user),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout=COMMAND_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return process.returncode, output.decode(errors="replace")

    async def serve(
        self,
        args: Sequence[str] | None,
        log_path: Path,
        *,
        mounts: Mapping[Path, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Serving:
        """Start `docker run IMAGE ARGS...` with the command as PID 1, as the image's user.

        buildah runs the PID-namespace helper as root (it needs CAP_SYS_ADMIN to
        make the namespace); the helper drops to the image's `User` before it
        executes the entry point.
        """
        helper = ["python", "-c", PID1_SOURCE, self.image.user or "0", *self.entry(args)]
        command = self.buildah_run(
            helper, mounts=mounts, env=env, user="0:0", cap_add=["CAP_SYS_ADMIN"]
        )
        with log_path.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=sink, stderr=asyncio.subprocess.STDOUT
            )
        host_pid = await _read_host_pid(process, log_path)
        serving = Serving(process, log_path, host_pid)
        self.served.append(serving)
        return serving

    async def stop_all(self) -> None:
        """Kill whatever `serve` started and is still running (test clean-up)."""
        for serving in self.served:
            if serving.process.returncode is None:
                with suppress(ProcessLookupError):
                    os.kill(serving.host_pid, 9)
                try:
                    await asyncio.wait_for(serving.process.wait(), timeout=30)
                except TimeoutError:
                    serving.process.kill()
                    await serving.process.wait()


async def _read_host_pid(process: asyncio.subprocess.Process, log_path: Path) -> int:
    """The host PID the helper prints first; fail with the output if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    while loop.time() < deadline:
        text = await asyncio.to_thread(log_path.read_text, encoding="utf-8", errors="replace")
        for line in text.splitlines():
            if line.startswith(PID_LINE):
                return int(line.removeprefix(PID_LINE))
        if process.returncode is not None:
            break
        await asyncio.sleep(0.05)
    text = await asyncio.to_thread(log_path.read_text, encoding="utf-8", errors="replace")
    pytest.fail(f"the container never started its command:\n{text}")


def namespace_pids(host_pid: int) -> list[int]:
    """The process's IDs in each PID namespace it belongs to, outermost first (NSpid)."""
    status = Path(f"/proc/{host_pid}/status").read_text(encoding="utf-8")
    line = next(line for line in status.splitlines() if line.startswith("NSpid:"))
    return [int(pid) for pid in line.split()[1:]]


def mount_points(host_pid: int) -> list[str]:
    """Where the process sees a file system mounted (relative to its root directory)."""
    table = Path(f"/proc/{host_pid}/mountinfo").read_text(encoding="utf-8")
    return [line.split()[4] for line in table.splitlines()]


def process_uid(host_pid: int) -> int:
    """The real user ID of a running process."""
    status = Path(f"/proc/{host_pid}/status").read_text(encoding="utf-8")
    line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return int(line.split()[1])


async def wait_ready(serving: Serving, url: str) -> None:
    """Poll `url`/-/ready until 200; fail with the output if the container exits or never is."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            if serving.process.returncode is not None:
                pytest.fail(f"the container exited early:\n{serving.output()}")
            try:
                async with session.get(url + "/-/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail(f"the container never became ready:\n{serving.output()}")


type NewContainer = Callable[[], Awaitable[Container]]
"""`await new_container()`: a new working container of the session's image."""
