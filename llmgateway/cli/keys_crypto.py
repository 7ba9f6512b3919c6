"""`llmgateway keys encrypt | decrypt | rotate-encryption-key`: migrate the stored keys' encryption.

- `encrypt` seals the keys stored in clear with `database.encryption_key`;
- `decrypt` stores them in clear again (the key set is the one they are sealed with);
- `rotate-encryption-key` re-seals them from `database.encryption_key` (the
  current key) to a new key, read from $LLMGW_NEW_ENCRYPTION_KEY or asked for
  (never from the command line, where other users and shell history see it).

They read the configuration as `status` does (a client token whose `${VAR}`
is unset is left empty: they never serve). Each runs in batches, one transaction each, and resumes where it stopped when
run again. Stop the gateway first; afterwards, set `database.encryption_key`
to the key the store now expects (unset it after `decrypt`). Exit codes as
every command: 2 when the configuration or the keys given do not fit the
store, 1 when the store fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import click

from llmgateway.cli.common import (
    CONFIG_HELP,
    config_error_exit,
    load_or_exit,
    resolve,
    run_or_exit,
)
from llmgateway.config.schemas import DatabaseConfig
from llmgateway.core.errors import ConfigError, StoreError
from llmgateway.core.key_material import ENCRYPTION_KEY_FORMS, decode_encryption_key
from llmgateway.store import open_store, sqlite_path
from llmgateway.store.key_codec import PLAIN, KeyCodec
from llmgateway.store.key_crypto import codec_for
from llmgateway.store.key_encryption import NEW_KEY_VARIABLE
from llmgateway.store.key_rekey import BATCH, Rekeying, RekeyReport, rekey

_BATCH_HELP = f"Keys rewritten per transaction (default {BATCH})."


def _configured_key(database: DatabaseConfig, command: str) -> str:
    """`database.encryption_key`, or exit 2 saying it must be set for `command`."""
    if not database.encryption_key:
        raise config_error_exit(
            ConfigError(
                f"`llmgateway keys {command}` needs database.encryption_key: set it "
                '(e.g. encryption_key: "${LLMGW_ENCRYPTION_KEY}") to '
                + ("the key to encrypt with" if command == "encrypt" else "the current key")
            )
        )
    return database.encryption_key


def _new_key() -> str:
    """The new key, from $LLMGW_NEW_ENCRYPTION_KEY or a hidden prompt; exit 2 when malformed."""
    text = os.environ.get(NEW_KEY_VARIABLE) or click.prompt(
        "New encryption key", hide_input=True, confirmation_prompt=True, err=True
    )
    try:
        decode_encryption_key(text)
    except ValueError:
        raise config_error_exit(
            ConfigError(f"the new encryption key is not {ENCRYPTION_KEY_FORMS}")
        ) from None
    return str(text)


def _migrate(database: DatabaseConfig, run: Rekeying, batch: int) -> RekeyReport:
    """Run `run` on the configured store; exit 2 or 1 with the reason when it cannot."""

    async def go() -> RekeyReport:
        if database.url.startswith("sqlite:"):
            path = sqlite_path(database.url)
            if isinstance(path, Path) and not path.exists():
                raise StoreError(f"no store at {path} yet: nothing to {run.command}")
        store = open_store(database, verify_codec=False)
        await store.open()
        try:
            return await rekey(store, run, batch=batch, progress=_progress)
        finally:
            await store.close()

    return run_or_exit(go(), f"Error: cannot {run.command} the stored keys")


def _progress(done: int) -> None:
    click.echo(f"{done} keys rewritten", err=True)


@dataclass(frozen=True, slots=True)
class _Migration:
    """One command: from which codec to which, and what it says when done."""

    name: str
    help: str
    codecs: Callable[[DatabaseConfig], tuple[KeyCodec, KeyCodec]]
    done: str
    already: str
    then: str


def _command(migration: _Migration) -> click.Command:
    """The click command that runs `migration` on the configured store."""

    @click.command(migration.name, help=migration.help)
    @click.option("--config", "config_option", metavar="PATH", help=CONFIG_HELP)
    @click.option("--batch", type=click.IntRange(min=1), default=BATCH, help=_BATCH_HELP)
    def command(config_option: str | None, batch: int) -> None:
        database = load_or_exit(resolve(config_option), read_only=True).database
        source, target = migration.codecs(database)
        report = _migrate(database, Rekeying(migration.name, source, target), batch)
        if report.already_done:
            click.echo(migration.already)
        else:
            click.echo(f"{report.rewritten} keys {migration.done}; {migration.then}")

    return command


def _configured(database: DatabaseConfig, command: str) -> KeyCodec:
    return codec_for(_configured_key(database, command))


CRYPTO_COMMANDS: Final = tuple(
    _command(m)
    for m in (
        _Migration(
            "encrypt",
            "Encrypt the keys stored in clear with database.encryption_key (gateway stopped).",
            lambda db: (PLAIN, _configured(db, "encrypt")),
            "encrypted",
            "the stored keys are already encrypted with database.encryption_key",
            "start the gateway with this database.encryption_key",
        ),
        _Migration(
            "decrypt",
            "Store the keys in clear again; database.encryption_key is their key "
            "(gateway stopped).",
            lambda db: (_configured(db, "decrypt"), PLAIN),
            "decrypted",
            "the stored keys are already in clear",
            "unset database.encryption_key before starting the gateway",
        ),
        _Migration(
            "rotate-encryption-key",
            "Re-encrypt the keys with a new key from $LLMGW_NEW_ENCRYPTION_KEY or a prompt.",
            lambda db: (_configured(db, "rotate-encryption-key"), codec_for(_new_key())),
            "re-encrypted",
            "the stored keys are already encrypted with the new key",
            "set database.encryption_key to the new key before starting the gateway",
        ),
    )
)
"""The commands of this module, for the `llmgateway keys` group."""
