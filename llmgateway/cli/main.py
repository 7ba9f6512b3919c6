"""The `llmgateway` command line: serve, status, config create, config check.

Exit codes, the same for every command: 0 success; 2 the configuration cannot
be used (missing or unreadable file, invalid YAML, any problem the validator
finds), and click's usage errors; 1 any other failure (a refused
`config create`, no store yet, the store failing, a worker process dying).
Each command loads the configuration file once and hands it on.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import click

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.fields import INSTANCE_NAME, INSTANCE_NAME_FORM
from llmgateway.config.loader import describe_problems, load_config, resolve_config_path
from llmgateway.config.scaffold import (
    add_provider,
    render_base_file,
    render_provider,
    token_variable,
)
from llmgateway.config.schemas import AppConfig
from llmgateway.core.constants import ProviderType
from llmgateway.core.errors import ConfigError, ProviderNotAdded
from llmgateway.process.stop_signals import process_stop_signals

EXIT_CONFIG_ERROR = 2
"""Exit code of every command when the configuration cannot be used."""

EXIT_FAILURE = 1
"""Exit code of every other failure."""

_CONFIG_HELP = "Configuration file (default: $LLMGW_CONFIG, else config/providers.yaml)."


def _version() -> str:
    try:
        return importlib.metadata.version("llmgateway")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def _report(error: ConfigError) -> str:
    """The full text of a configuration error: the summary, then one line per problem."""
    return f"Error: {describe_problems(error)}"


def _config_error_exit(error: ConfigError) -> SystemExit:
    """Print the whole report of `error` on stderr; the exit of an unusable configuration."""
    click.echo(_report(error), err=True)
    return SystemExit(EXIT_CONFIG_ERROR)


def _load_or_exit(config_path: Path) -> AppConfig:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise _config_error_exit(exc) from None


def _lazy(modules: tuple[str, ...], name: str, what: str) -> Callable[..., Any]:
    """`name` from the first of `modules` that has it (those parts are built separately)."""
    problems: list[str] = []
    for module_name in modules:
        try:
            found = getattr(importlib.import_module(module_name), name, None)
        except ImportError as exc:
            problems.append(str(exc))
            continue
        if callable(found):
            return cast(Callable[..., Any], found)
        problems.append(f"{module_name} has no {name}")
    detail = "; ".join(problems)
    raise click.ClickException(f"{what} is not available yet in this build ({detail})")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="llmgateway")
def main() -> None:
    """llmgateway: one endpoint in front of many LLM API keys, each checked and pooled."""


@main.command()
@click.option("--config", "config_option", metavar="PATH", help=_CONFIG_HELP)
@click.option("--host", default=None, help="Listen address (overrides server.host).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Listen port.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes.")
@click.option("--worker-index", type=click.IntRange(min=0), default=None, hidden=True)
@click.option("--supervisor-pid", type=click.IntRange(min=1), default=None, hidden=True)
def serve(
    config_option: str | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    worker_index: int | None = None,
    supervisor_pid: int | None = None,
) -> None:
    """Run the gateway and the key keeper (in N processes sharing the port with --workers N)."""
    # From here on (from the start of the process when launched as `llmgateway serve`) a
    # SIGTERM or SIGINT stops the server gracefully, whatever it is doing.
    signals = process_stop_signals()
    config_path = resolve_config_path(config_option, os.environ)
    try:
        accessor = ConfigAccessor(_load_or_exit(config_path))
    except SystemExit:  # nothing started: the signals are handled as they were before
        signals.release()
        raise
    run_server = _lazy(
        ("llmgateway.process.server", "llmgateway.web.app"), "run_server", "the server"
    )
    parameters = inspect.signature(run_server).parameters
    extra: dict[str, Any] = {"signals": signals} if "signals" in parameters else {}
    if workers is not None:
        if "workers" in parameters:
            extra["workers"] = workers
        else:
            click.echo(
                "Warning: --workers is not supported by this build; serving in one process",
                err=True,
            )
    if worker_index is not None and "worker_index" in parameters:
        extra["worker_index"] = worker_index
    if supervisor_pid is not None and "supervisor_pid" in parameters:
        extra["supervisor_pid"] = supervisor_pid
    try:
        run_server(config_path, host, port, accessor=accessor, **extra)
    except ConfigError as exc:
        raise _config_error_exit(exc) from None


@main.command()
@click.option("--config", "config_option", metavar="PATH", help=_CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
@click.option("--keys", "show_keys", is_flag=True, help="List every (masked) key.")
def status(config_option: str | None, as_json: bool, show_keys: bool) -> None:
    """Show the stored status of every key (what /-/status shows)."""
    config_path = resolve_config_path(config_option, os.environ)
    accessor = ConfigAccessor(_load_or_exit(config_path))
    for text in accessor.deprecations:
        click.echo(f"Warning: {text}", err=True)
    print_status = _lazy(("llmgateway.web.status",), "print_status", "the status command")
    raise SystemExit(print_status(accessor, as_json, show_keys))


@main.group()
def config() -> None:
    """Create and check the configuration file."""


def _parse_spec(spec: str) -> tuple[ProviderType, str]:
    valid = ", ".join(t.value for t in ProviderType)
    kind, sep, name = spec.partition(":")
    if not sep:
        raise click.ClickException(
            f"expected <type>:<name>, e.g. openai_like:openai-main; valid types: {valid}"
        )
    if kind not in {t.value for t in ProviderType}:
        raise click.ClickException(f"unknown provider type {kind!r}; valid types: {valid}")
    if not INSTANCE_NAME.fullmatch(name):
        raise click.ClickException(f"invalid instance name {name!r}: use {INSTANCE_NAME_FORM}")
    return ProviderType(kind), name


@config.command("create")
@click.argument("spec", metavar="TYPE:NAME")
@click.option("--config", "config_option", metavar="PATH", help=_CONFIG_HELP)
def config_create(spec: str, config_option: str | None) -> None:
    """Add a commented provider section of TYPE called NAME to the configuration.

    TYPE is openai_like, anthropic or gemini. The file is created with its base
    sections when missing; everything already in it is kept exactly.
    """
    provider_type, name = _parse_spec(spec)
    config_path = resolve_config_path(config_option, os.environ)
    try:
        if config_path.exists():
            text = config_path.read_text(encoding="utf-8", newline="")
            updated = add_provider(text, provider_type, name, str(config_path))
            created = False
        else:
            updated = render_base_file(render_provider(provider_type, name))
            created = True
        _write_atomically(config_path, updated)
    except ConfigError as exc:
        raise _config_error_exit(exc) from None
    except ProviderNotAdded as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {config_path}: {exc}") from None
    keys_dir = Path("keys") / name
    keys_dir.mkdir(parents=True, exist_ok=True)
    variable = token_variable(name)
    action = "Created" if created else "Updated"
    click.echo(f"{action} {config_path}: added {provider_type.value} instance {name!r}.")
    click.echo("Next steps:")
    click.echo(f"  1. Put the API keys in {keys_dir}/*.txt (one key per line, '#' comments).")
    click.echo(f"  2. Choose the token clients will send: export {variable}=<a long random secret>")
    click.echo(f"  3. Check the file:  llmgateway config check --config {config_path}")
    click.echo(f"  4. Start:           llmgateway serve --config {config_path}")


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8", newline="")
    temporary.replace(path)


@config.command("check")
@click.option("--config", "config_option", metavar="PATH", help=_CONFIG_HELP)
def config_check(config_option: str | None) -> None:
    """Load and validate the configuration and print every problem found."""
    config_path = resolve_config_path(config_option, os.environ)
    accessor = ConfigAccessor(_load_or_exit(config_path))
    providers = accessor.providers()
    enabled = len(accessor.enabled_providers())
    count = len(providers)
    click.echo(
        f"OK {config_path}: {count} provider instance{'s' if count != 1 else ''} "
        f"({enabled} enabled), database {accessor.database.url.partition(':')[0]}"
    )
    for text in accessor.deprecations:
        click.echo(f"  warning: {text}")
    for provider in providers:
        models = ", ".join(provider.models)
        state = "" if provider.enabled else " (disabled)"
        click.echo(f"  {provider.name}: {provider.provider_type.value}{state}, models: {models}")
        keys_dir = Path(provider.keys_path) if provider.keys_path else None
        if provider.enabled and not provider.keys and (keys_dir is None or not keys_dir.is_dir()):
            where = f"{keys_dir} does not exist" if keys_dir else "no keys_path"
            click.echo(f"  warning: {provider.name} has no keys yet ({where}, no inline keys)")
