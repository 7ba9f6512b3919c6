"""The Dockerfile's install and start steps, run in a clean virtualenv (Docker cannot run here).

The test reads the Dockerfile, copies what its COPY lines copy into a fresh
application folder, runs its `pip install` commands with a new virtualenv's pip
(made from the same Python), then starts its CMD from that folder, as the
image does from /app, against a minimal configuration in `config/`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PIP_TIMEOUT = 900
STARTUP_TIMEOUT = 30.0
SKIPPED_COMMANDS = frozenset({"groupadd", "useradd", "mkdir", "chown", "rm"})
"""Image-only steps (users, volume folders, clean-up) that would touch this machine."""


@dataclass(slots=True)
class Image:
    """The instructions of the Dockerfile that matter for install and start."""

    base: str = ""
    workdir: str = ""
    env: dict[str, str] = field(default_factory=dict)
    copies: list[tuple[str, str]] = field(default_factory=list)
    pip_commands: list[list[str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    expose: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    user: str = ""
    cmd: list[str] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def parse_dockerfile(text: str) -> Image:
    """The install and start steps of a Dockerfile."""
    image = Image()
    for instruction, args in _instructions(text):
        match instruction:
            case "FROM":
                image.base = args
            case "WORKDIR":
                image.workdir = args
            case "ENV":
                for pair in shlex.split(args):
                    name, _, value = pair.partition("=")
                    image.env[name] = value
            case "COPY":
                *sources, target = shlex.split(args)
                image.copies.extend((source, target) for source in sources)
            case "RUN":
                for command in args.split("&&"):
                    words = shlex.split(command)
                    if words[0] == "pip":
                        image.pip_commands.append(words[1:])
                    else:
                        image.skipped.append(words[0])
            case "EXPOSE":
                image.expose.extend(args.split())
            case "VOLUME":
                image.volumes.extend(json.loads(args))
            case "USER":
                image.user = args
            case "CMD":
                image.cmd = json.loads(args)
    return image


def test_dockerfile_follows_the_image_contract() -> None:
    """The image is python:3.13-slim, non-root, exposes 55300, keeps data and keys in volumes."""
    image = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    assert image.base == "python:3.13-slim"
    assert image.workdir == "/app"
    assert image.user not in ("", "root", "0")
    assert image.expose == ["55300"]
    assert image.volumes == ["/app/data", "/app/keys"]
    assert image.cmd == ["llmgateway", "serve"]
    assert image.pip_commands == [
        ["install", "--require-hashes", "-r", "requirements.txt"],
        ["install", "--no-deps", "."],
    ]
    assert set(image.skipped) <= SKIPPED_COMMANDS


def _copy_context(image: Image, app_dir: Path) -> None:
    for source, target in image.copies:
        origin = ROOT / source
        destination = app_dir / target
        if origin.is_dir():
            shutil.copytree(origin, destination, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            destination = destination / origin.name if target.endswith("/") else destination
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, destination)


MINIMAL_CONFIG = """\
server:
  host: "127.0.0.1"
  port: {port}
worker:
  enabled: false
providers:
  openai-main:
    provider_type: "openai_like"
    api_base_url: "http://127.0.0.1:9"
    keys_path: "keys/openai-main/"
    default_model: "gpt-4o-mini"
    access_control:
      gateway_access_token: "gw-docker-steps-token-0123456789"
"""


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llmgateway serve exited early:\n{log.read_text(errors='replace')}")
        try:
            if _get(url + "/-/healthy") == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"llmgateway serve never became healthy:\n{log.read_text(errors='replace')}")


def test_image_steps_install_and_serve_from_a_clean_virtualenv(tmp_path: Path) -> None:
    """The Dockerfile's COPY and pip steps give a working `llmgateway serve` without dev tools."""
    image = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    _copy_context(image, app_dir)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    env = {**os.environ, **image.env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    for args in image.pip_commands:
        subprocess.run(
            [str(bin_dir / "python"), "-m", "pip", *args],
            cwd=app_dir,
            env=env,
            check=True,
            timeout=PIP_TIMEOUT,
            capture_output=True,
        )
    dev_only = subprocess.run(
        [str(bin_dir / "python"), "-c", "import pytest"], env=env, capture_output=True, check=False
    )
    assert dev_only.returncode != 0, "a development dependency was installed"

    port = free_port()
    (app_dir / "config").mkdir()
    (app_dir / "config" / "providers.yaml").write_text(MINIMAL_CONFIG.format(port=port))
    (app_dir / "keys" / "openai-main").mkdir(parents=True)
    (app_dir / "keys" / "openai-main" / "keys.txt").write_text("sk-docker-steps-0123456789\n")
    command = [str(bin_dir / image.cmd[0]), *image.cmd[1:]]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=app_dir, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(process, url, log)
        assert _get(url + "/-/ready") == 200
        assert (app_dir / "data" / "llmgateway.db").is_file()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, log.read_text(errors="replace")
