"""What every `llmgateway` command shares: exit codes, the `--config` option, loading the file.

Exit codes, the same for every command: 0 success; 2 the configuration cannot
be used (missing or unreadable file, invalid YAML, any problem the validator
finds), and click's usage errors; 1 any other failure (a refused
`config create`, no store yet, the store failing, a worker process dying).
Each command loads the configuration file once and hands it on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final

import click

from llmgateway.config.loader import describe_problems, load_config, resolve_config_path
from llmgateway.config.schemas import AppConfig
from llmgateway.core.errors import ConfigError, StoreError

EXIT_CONFIG_ERROR: Final = 2
"""Exit code of every command when the configuration cannot be used."""

EXIT_FAILURE: Final = 1
"""Exit code of every other failure."""

CONFIG_HELP: Final = "Configuration file (default: $LLMGW_CONFIG, else config/providers.yaml)."


def resolve(config_option: str | None) -> Path:
    """The configuration file a command reads: `--config`, else $LLMGW_CONFIG, else the default."""
    return resolve_config_path(config_option, os.environ)


def config_error_exit(error: ConfigError) -> SystemExit:
    """Print the whole report of `error` on stderr; the exit of an unusable configuration."""
    click.echo(f"Error: {describe_problems(error)}", err=True)
    return SystemExit(EXIT_CONFIG_ERROR)


def load_or_exit(config_path: Path, *, read_only: bool = False) -> AppConfig:
    """The configuration at `config_path`, or exit 2 with the whole report of its problems.

    `read_only` is for commands that only look at the store (`status`): a
    client token whose `${VAR}` is unset is then left empty, not an error.
    """
    try:
        return load_config(config_path, read_only=read_only)
    except ConfigError as exc:
        raise config_error_exit(exc) from None


def run_or_exit[T](work: Coroutine[Any, Any, T], store_failure: str) -> T:
    """Run `work` to its end; exit 2 on a ConfigError, 1 on a StoreError.

    The store's failure is printed on stderr after `store_failure` (what the
    command could not do). Any other exception goes on to the caller.
    """
    try:
        return asyncio.run(work)
    except ConfigError as exc:
        raise config_error_exit(exc) from None
    except StoreError as exc:
        click.echo(f"{store_failure}: {exc}", err=True)
        raise SystemExit(EXIT_FAILURE) from None
