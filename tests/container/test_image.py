"""The Dockerfile built into a real image and run the way the README's `docker run` lines say.

The image is built on a local Debian trixie base with Python 3.13 (see
conftest.py) and run with buildah: configuration and keys are bind-mounted at
/app/config and /app/keys, the store lives in the image's /app/data volume,
the gateway proxies the official OpenAI SDK to the fake upstream, stops on
SIGTERM as PID 1 with exit code 0, and a second start finds the statuses kept.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import tomllib
from collections import Counter
from pathlib import Path
from typing import Final

import pytest

from llmgateway.config.loader import load_config
from llmgateway.core.constants import Status
from llmgateway.core.logs import mask_key
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.container import (
    ROOT,
    ImageConfig,
    NewContainer,
    mount_points,
    namespace_pids,
    process_uid,
    skip_reason,
    wait_ready,
)
from tests.support.gateway import MODELS, OPENAI, TOKENS, ask_openai, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

DEFAULT_PORT: Final = 55300
BAD_KEYS: Final = ("sk-bad-one-0123456789-aa", "sk-bad-two-0123456789-bb")
GOOD_KEY: Final = "sk-good-0123456789-cccc"
HOST_USER: Final = "4242:4242"
"""Stands for `--user "$(id -u):$(id -g)"`: the owner of the mounted folders on the host."""
EXIT_TIMEOUT: Final = 60.0
"""Far above a graceful shutdown's real duration, below `server.shutdown_timeout`."""

SERVE_CONFIG: Final = """\
server:
  host: "127.0.0.1"
  port: {port}
  shutdown_timeout: "90s"
keeper:
  enabled: false
logging:
  level: "info"
providers:
  {instance}:
    provider_type: "openai_like"
    api_base_url: "{upstream}"
    keys_path: "keys/{instance}/"
    default_model: "{model}"
    models:
      "{model}": {{}}
    access_control:
      gateway_access_token: "{token}"
    gateway_policy:
      retry:
        on_key_error: {{attempts: 3, backoff: "1ms", backoff_factor: 1.0}}
"""
"""No `database` section: the store is the default, sqlite:///data/llmgateway.db under /app."""

CONTENTS_PROBE: Final = """\
import importlib.metadata, importlib.util, json, os, shutil, sys
import llmgateway
print(json.dumps({
    "python": list(sys.version_info[:2]),
    "prefix": sys.prefix,
    "package": llmgateway.__file__,
    "distributions": {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()},
    "pip": importlib.util.find_spec("pip") is not None,
    "tools": [t for t in ("gcc", "cc", "c++", "make", "strip", "ld") if shutil.which(t)],
    "leftovers": [p for p in ("/src", "/root/.cache/pip", "/app/tests") if os.path.exists(p)],
    "tests": [d for d, _, _ in os.walk(os.path.dirname(llmgateway.__file__)) if "test" in d],
    "uid": os.getuid(),
}))
"""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked_requirements() -> dict[str, str]:
    """name -> version of every pin in requirements.txt (the production export of the lock)."""
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        found = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if found:
            pins[_normalise(found[1])] = found[2]
    return pins


def _health_command(image: ImageConfig, port: int) -> list[str]:
    """The image's HEALTHCHECK command, pointed at `port` instead of the default port."""
    kind, *command = image.healthcheck
    assert kind == "CMD"
    return [part.replace(f":{DEFAULT_PORT}/", f":{port}/") for part in command]


def test_the_image_is_configured_as_the_readme_says(image: ImageConfig) -> None:
    """Entry point `llmgateway`, CMD serve, /app, non-root, data volume, port, health check."""
    assert image.entrypoint == ["llmgateway"]
    assert image.cmd == ["serve"]
    assert image.workdir == "/app"
    assert image.user not in ("", "root", "0") and not image.user.startswith("0:")
    assert image.volumes == ["/app/data"]
    assert image.exposed_ports == [f"{DEFAULT_PORT}/tcp"]
    assert "PATH=/opt/venv/bin:" in " ".join(image.env)
    kind, program, *_ = image.healthcheck
    assert (kind, program) == ("CMD", "python")
    assert f"http://127.0.0.1:{DEFAULT_PORT}/-/healthy" in " ".join(image.healthcheck)


async def test_the_image_holds_the_locked_production_requirements_only(
    new_container: NewContainer,
) -> None:
    """/opt/venv has exactly the locked production pins and the package; no pip, compiler, tests."""
    container = await new_container()

    code, output = await container.run_command(["python", "-c", CONTENTS_PROBE])

    assert code == 0, output
    found = json.loads(output.strip().splitlines()[-1])
    assert found["python"] == [3, 13]
    assert found["prefix"] == "/opt/venv"
    assert found["package"].startswith("/opt/venv/lib/python3.13/site-packages/llmgateway/")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    expected = {**_locked_requirements(), "llmgateway": project["tool"]["poetry"]["version"]}
    installed = {_normalise(name): version for name, version in found["distributions"].items()}
    assert installed == expected
    assert found["pip"] is False
    assert found["tools"] == []
    assert found["leftovers"] == []
    assert found["tests"] == []
    assert found["uid"] != 0


async def test_config_create_check_and_status_run_through_the_entry_point(
    new_container: NewContainer, tmp_path: Path
) -> None:
    """`docker run --user … llmgateway config create`, then `config check` and `status`."""
    config_dir, keys_dir = tmp_path / "config", tmp_path / "keys"
    uid, gid = (int(part) for part in HOST_USER.split(":"))
    for folder in (config_dir, keys_dir):
        folder.mkdir()
        os.chown(folder, uid, gid)
    mounts = {config_dir: "/app/config", keys_dir: "/app/keys"}
    container = await new_container()

    code, output = await container.run(
        ["config", "create", "openai_like:openai-main"], mounts=mounts, user=HOST_USER
    )

    assert code == 0, output
    assert "Created config/providers.yaml" in output
    created = config_dir / "providers.yaml"
    assert (created.stat().st_uid, created.stat().st_gid) == (uid, gid)
    assert (keys_dir / "openai-main").is_dir()
    loaded = load_config(created, {"OPENAI_MAIN_TOKEN": "a-client-token-0123456789"})
    assert (loaded.server.host, loaded.server.port) == ("0.0.0.0", DEFAULT_PORT)
    assert loaded.database.url == "sqlite:///data/llmgateway.db"

    (keys_dir / "openai-main" / "keys.txt").write_text("sk-readme-0123456789-abcd\n")
    env = {"OPENAI_MAIN_TOKEN": "a-client-token-0123456789"}
    code, output = await container.run(["config", "check"], mounts=mounts, env=env)
    assert code == 0, output
    assert "OK config/providers.yaml: 1 provider instance (1 enabled), database sqlite" in output

    code, output = await container.run(["status"], mounts=mounts, env=env)
    assert code == 1, output
    assert "no store at" in output and "data/llmgateway.db" in output


async def test_serve_stops_on_sigterm_as_pid_1_and_a_restart_keeps_the_statuses(
    new_container: NewContainer, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Serve, proxy the OpenAI SDK, SIGTERM → exit 0; restarted, the data volume's statuses hold."""
    for key in BAD_KEYS:
        fake_upstream.set_key(key, Behaviour.INVALID_KEY)
    fake_upstream.set_key(GOOD_KEY)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config_dir, keys_dir = tmp_path / "config", tmp_path / "keys" / OPENAI
    config_dir.mkdir()
    keys_dir.mkdir(parents=True)
    (config_dir / "providers.yaml").write_text(
        SERVE_CONFIG.format(
            port=port,
            instance=OPENAI,
            upstream=fake_upstream.url,
            model=MODELS[OPENAI],
            token=TOKENS[OPENAI],
        )
    )
    (keys_dir / "keys.txt").write_text("".join(f"{key}\n" for key in (*BAD_KEYS, GOOD_KEY)))
    mounts = {config_dir: "/app/config", tmp_path / "keys": "/app/keys"}
    container = await new_container()

    first = await container.serve(None, tmp_path / "first.log", mounts=mounts)
    await wait_ready(first, url)
    assert namespace_pids(first.host_pid)[-1] == 1
    assert process_uid(first.host_pid) != 0
    health = _health_command(container.image, port)
    code, output = await container.run_command(health, mounts=mounts)
    assert code == 0, output
    assert await ask_openai(url) == fake_upstream.text_for(MODELS[OPENAI])
    assert fake_upstream.calls_by_key == Counter({BAD_KEYS[0]: 1, BAD_KEYS[1]: 1, GOOD_KEY: 1})
    # The store is the default embedded SQLite file, on the image's /app/data volume.
    assert "/app/data" in mount_points(first.host_pid)
    store_file = Path(f"/proc/{first.host_pid}/root/app/data/llmgateway.db")
    assert await asyncio.to_thread(store_file.is_file)

    os.kill(first.host_pid, signal.SIGTERM)
    code = await asyncio.wait_for(first.process.wait(), timeout=EXIT_TIMEOUT)
    assert code == 0, first.output()
    code, output = await container.run_command(health, mounts=mounts)
    assert code != 0, output

    code, output = await container.run(["status", "--json", "--keys"], mounts=mounts)
    assert code == 0, output
    # Seen on traffic, awaiting the keeper's confirming probe (the keeper is off here).
    expected = {mask_key(key): (Status.VERIFYING.value, "invalid_key") for key in BAD_KEYS}
    expected[mask_key(GOOD_KEY)] = (Status.VALID.value, None)
    document = json.loads(output)
    stored = {k["key"]: (k["status"], k["reason"]) for k in document["providers"][OPENAI]["keys"]}
    assert stored == expected

    fake_upstream.reset()
    second = await container.serve(None, tmp_path / "second.log", mounts=mounts)
    await wait_ready(second, url)
    assert await ask_openai(url) == fake_upstream.text_for(MODELS[OPENAI])
    assert fake_upstream.calls_by_key == Counter({GOOD_KEY: 1})

    os.kill(second.host_pid, signal.SIGTERM)
    code = await asyncio.wait_for(second.process.wait(), timeout=EXIT_TIMEOUT)
    assert code == 0, second.output()
