"""The command group: every command is listed, and a command imports only what it needs."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from llmgateway.cli.main import COMMANDS, main


def test_help_lists_every_command_and_keys_has_the_encryption_commands() -> None:
    """`--help` names each command; `keys --help` includes encrypt, decrypt, rotate."""
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    for name in ("serve", "status", "keys", "config"):
        assert name in top.output
    assert sorted(COMMANDS) == ["config", "keys", "serve", "status"]
    keys = runner.invoke(main, ["keys", "--help"])
    assert keys.exit_code == 0
    for name in ("encrypt", "decrypt", "rotate-encryption-key"):
        assert name in keys.output


def test_version_is_printed() -> None:
    """`--version` prints the program name and a version."""
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("llmgateway, version ")


def test_an_unknown_command_is_a_usage_error() -> None:
    """A name that is no command exits 2 naming it."""
    result = CliRunner().invoke(main, ["nope"])
    assert result.exit_code == 2
    assert "nope" in result.output


def test_status_does_not_import_the_server() -> None:
    """Running `status --help` in a fresh interpreter leaves the server and SDK modules out."""
    code = (
        "import sys\n"
        "from llmgateway.cli.main import main\n"
        "try:\n"
        "    main(['status', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('aiohttp', 'uvloop', 'llmgateway.web.app', 'llmgateway.cli.serve',"
        " 'llmgateway.cli.keys', 'importlib.metadata')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
