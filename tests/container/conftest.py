"""Container fixtures: the image built once per session, containers started per test (helpers: tests/support/container.py)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.container import (
    COMMAND_TIMEOUT,
    Container,
    ImageConfig,
    NewContainer,
    build_image,
    make_base_image,
    run_command,
    skip_reason,
)


@pytest.fixture(scope="session")
def base_image() -> str:
    """The local Python 3.13 base image (made once per machine, then reused by tag)."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    return make_base_image()


@pytest.fixture(scope="session")
def image(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageConfig]:
    """The repository's image, built on the local base for this test session, removed after."""
    tag = f"localhost/llmgateway-test:{os.getpid()}-{secrets.token_hex(4)}"
    build_image(base_image, tag, tmp_path_factory.mktemp("build") / "build.log")
    try:
        yield ImageConfig.inspect(tag)
    finally:
        subprocess.run(["buildah", "rmi", tag], capture_output=True, check=False, timeout=120)


@pytest.fixture
async def new_container(image: ImageConfig) -> AsyncIterator[NewContainer]:
    """A factory of working containers of the image, stopped and removed after the test."""
    made: list[Container] = []

    async def make() -> Container:
        created = await asyncio.to_thread(
            run_command,
            ["buildah", "from", image.name],
            timeout=COMMAND_TIMEOUT,
            what="buildah from",
        )
        container = Container(created.stdout.strip().splitlines()[-1], image)
        made.append(container)
        return container

    yield make
    for container in made:
        await container.stop_all()
        await asyncio.to_thread(
            subprocess.run,
            ["buildah", "rm", container.id],
            capture_output=True,
            check=False,
            timeout=COMMAND_TIMEOUT,
        )
