"""The `llmgateway` command line: serve, status, keys, config create, config check.

Each command lives in a module of its own; this one assembles the group. A
command's module is imported only when that command runs (or help lists it):
`llmgateway status` does not pay for the server, the key admin or the
package metadata. Exit codes are the same for every command (see
`llmgateway.cli.common`).
"""

from __future__ import annotations

import importlib
from typing import Final

import click

COMMANDS: Final = {
    "serve": "llmgateway.cli.serve:serve",
    "status": "llmgateway.cli.status:status",
    "keys": "llmgateway.cli.keys:keys",
    "config": "llmgateway.cli.config_commands:config",
}
"""Each command's name and where it is defined (`module:attribute`)."""


def _version() -> str:
    import importlib.metadata  # only `--version` needs it

    try:
        return importlib.metadata.version("llmgateway")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"llmgateway, version {_version()}")
        ctx.exit()


class _LazyGroup(click.Group):
    """A group whose commands are imported when looked up (see `COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        if cmd_name == "keys" and isinstance(command, click.Group):
            from llmgateway.cli.keys_crypto import CRYPTO_COMMANDS

            for crypto in CRYPTO_COMMANDS:
                command.add_command(crypto)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def main() -> None:
    """llmgateway: one endpoint in front of many LLM API keys, each checked and pooled."""
