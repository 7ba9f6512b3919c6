"""The `llmgateway` command line: serve, status, keys, config create, config check.

Each command lives in a module of its own; this one assembles the group. Exit
codes are the same for every command (see `llmgateway.cli.common`).
"""

from __future__ import annotations

import importlib.metadata

import click

from llmgateway.cli.config_commands import config
from llmgateway.cli.keys import keys
from llmgateway.cli.keys_crypto import CRYPTO_COMMANDS
from llmgateway.cli.serve import serve
from llmgateway.cli.status import status


def _version() -> str:
    try:
        return importlib.metadata.version("llmgateway")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="llmgateway")
def main() -> None:
    """llmgateway: one endpoint in front of many LLM API keys, each checked and pooled."""


main.add_command(serve)
main.add_command(status)
main.add_command(keys)
main.add_command(config)
for _command in CRYPTO_COMMANDS:
    keys.add_command(_command)
