"""`llmgateway config create` and `llmgateway config check`."""

from __future__ import annotations

from pathlib import Path

import click

from llmgateway.cli.common import CONFIG_HELP, config_error_exit, load_or_exit, resolve
from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.fields import INSTANCE_NAME, INSTANCE_NAME_FORM
from llmgateway.config.scaffold import (
    add_provider,
    render_base_file,
    render_provider,
    token_variable,
)
from llmgateway.core.constants import ProviderType
from llmgateway.core.errors import ConfigError, ProviderNotAdded


@click.group()
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
@click.option("--config", "config_option", metavar="PATH", help=CONFIG_HELP)
def config_create(spec: str, config_option: str | None) -> None:
    """Add a commented provider section of TYPE called NAME to the configuration.

    TYPE is openai_like, anthropic or gemini. The file is created with its base
    sections when missing; everything already in it is kept exactly.
    """
    provider_type, name = _parse_spec(spec)
    config_path = resolve(config_option)
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
        raise config_error_exit(exc) from None
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
@click.option("--config", "config_option", metavar="PATH", help=CONFIG_HELP)
def config_check(config_option: str | None) -> None:
    """Load and validate the configuration and print every problem found."""
    config_path = resolve(config_option)
    accessor = ConfigAccessor(load_or_exit(config_path))
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
