"""Fixtures of the configuration tests: writing YAML files into a temporary directory."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from llmgateway.config.loader import load_config
from llmgateway.config.schemas import AppConfig
from llmgateway.core.errors import ConfigError

MINIMAL = """\
providers:
  openai-main:
    provider_type: openai_like
    api_base_url: "https://api.openai.com"
    keys: ["sk-test-0123456789abcdef"]
    access_control:
      gateway_access_token: "tok-openai-main-123"
"""

WriteConfig = Callable[[str], Path]
LoadText = Callable[..., AppConfig]
Problems = Callable[..., list[str]]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write dedented YAML text to a fresh file and return its path."""
    counter = iter(range(1_000_000))

    def write(text: str) -> Path:
        path = tmp_path / f"config-{next(counter)}.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def load_text(write_config: WriteConfig) -> LoadText:
    """Load YAML text through the real loader with an explicit environment."""

    def load(text: str, env: dict[str, str] | None = None) -> AppConfig:
        return load_config(write_config(text), env=env or {})

    return load


@pytest.fixture
def problems_of(write_config: WriteConfig) -> Problems:
    """The problem lines the loader reports for YAML text (fails the test when it loads)."""

    def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
        with pytest.raises(ConfigError) as caught:
            load_config(write_config(text), env=env or {})
        return caught.value.problems

    return problems
