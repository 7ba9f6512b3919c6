"""`llmgateway keys list|add|remove|disable|enable|recheck|route`: the key admin API in a shell.

Each command goes through the running server when one answers at the
configured address (with `server.admin_token`), else directly to the store,
with the same output either way: the API's JSON with `--json`, else a table.
Keys are addressed by id or selected by filter options (`--instance`,
`--model`, `--status`, `--source`, `--q`); a filter acts on every key it
matches. `keys add` reads keys from a file or from stdin (`-`), never from
the command line, where the shell's history would keep them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TextIO

import click
import orjson

from llmgateway.cli.common import (
    CONFIG_HELP,
    EXIT_FAILURE,
    load_or_exit,
    resolve,
    run_or_exit,
)
from llmgateway.cli.keys_client import (
    KeysBackend,
    KeysCommandError,
    render_add,
    render_changed,
    render_delete,
    render_job,
    render_list,
    render_route,
)
from llmgateway.config.accessor import ConfigAccessor
from llmgateway.core.logs import configure_logging

_FILTER_OPTIONS = ("instance", "model", "status", "source", "q")


def _filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The filter options of a command that selects keys."""
    for name, text in reversed(
        [
            ("instance", "Only keys of this instance."),
            ("model", "Only keys with this model (with --status: this model's status)."),
            ("status", "Only keys with this status on any model (e.g. invalid_key, disabled)."),
            ("source", "Only keys from key files (file) or added here (api)."),
            ("q", "A fingerprint prefix, the mask, or a whole key."),
        ]
    ):
        command = click.option(f"--{name}", name, metavar="TEXT", help=text)(command)
    return command


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")(command)
    return click.option("--config", "config_option", metavar="PATH", help=CONFIG_HELP)(command)


def _print(document: Mapping[str, Any], as_json: bool, text: Callable[[], str]) -> None:
    if as_json:
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(text())


def _run[T](config_option: str | None, work: Callable[[KeysBackend], Awaitable[T]]) -> T:
    """Load the configuration, open a backend, run `work` on it; exit 1 on a refusal."""
    # Read-only: the client tokens' ${VAR}s need not be set to manage keys.
    accessor = ConfigAccessor(load_or_exit(resolve(config_option), read_only=True))
    # Logs go to stderr (stdout is the answer), every key and token masked.
    masker = configure_logging(accessor.logging, accessor.secrets())

    async def go() -> T:
        # Imported here: the other commands start without aiohttp and the application.
        from llmgateway.cli.keys_direct import open_backend

        backend = await open_backend(accessor, masker)
        try:
            return await work(backend)
        finally:
            await backend.close()

    try:
        return run_or_exit(go(), "cannot reach the key store")
    except KeysCommandError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(EXIT_FAILURE) from None


def _selection(ids: tuple[int, ...], filters: Mapping[str, str | None]) -> dict[str, Any]:
    given = {name: value for name, value in filters.items() if value is not None}
    if ids and given:
        raise click.UsageError("give key ids or filter options, not both")
    if ids:
        return {"ids": list(ids)}
    if not given:
        raise click.UsageError("give key ids, or filter options selecting the keys")
    return {"filter": given}


@click.group()
def keys() -> None:
    """Manage the pool's keys: list, add, remove, disable, enable, recheck, route."""


@keys.command("list")
@_filter_options
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--cursor", metavar="CURSOR", help="Where the previous page ended.")
@_common
def list_command(
    config_option: str | None, as_json: bool, limit: int, cursor: str | None, **filters: str | None
) -> None:
    """List keys (masked, with fingerprint, source, statuses and usage), one page at a time."""
    query = {name: value for name, value in filters.items() if value is not None}
    query["limit"] = str(limit)
    if cursor:
        query["cursor"] = cursor
    document = _run(config_option, lambda backend: backend.list_keys(query))
    _print(document, as_json, lambda: render_list(document))


@keys.command("add")
@click.option("--instance", required=True, metavar="NAME", help="The instance the keys serve.")
@click.argument("source", type=click.File("r", encoding="utf-8"))
@_common
def add_command(config_option: str | None, as_json: bool, instance: str, source: TextIO) -> None:
    """Add the keys of SOURCE, a file or - for stdin: one key a line, # comments."""
    text = source.read()
    document = _run(config_option, lambda backend: backend.add_keys(instance, text))
    _print(document, as_json, lambda: render_add(document))


def _action(action: str, help_text: str) -> click.Command:
    @click.argument("ids", nargs=-1, type=click.IntRange(min=1))
    @_filter_options
    @_common
    def command(
        config_option: str | None, as_json: bool, ids: tuple[int, ...], **filters: str | None
    ) -> None:
        body = _selection(ids, filters)
        api_action = "delete" if action == "remove" else action
        document = _run(config_option, lambda backend: backend.act(api_action, body))
        if action == "remove":
            _print(document, as_json, lambda: render_delete(document))
        else:
            _print(document, as_json, lambda: render_changed(action, document))

    command.__doc__ = help_text
    return click.command(action)(command)


keys.add_command(_action("remove", "Remove keys added here (file keys: edit their file)."))
keys.add_command(_action("disable", "Take keys out of the pool until enabled (never probed)."))
keys.add_command(_action("enable", "Put disabled keys back (untested, checked at once)."))


@keys.command("recheck")
@click.argument("ids", nargs=-1, type=click.IntRange(min=1))
@_filter_options
@click.option("--models", "models", multiple=True, metavar="MODEL", help="Only these models.")
@click.option("--wait", is_flag=True, help="Wait for the job to finish and print its results.")
@_common
def recheck_command(
    config_option: str | None,
    as_json: bool,
    ids: tuple[int, ...],
    models: tuple[str, ...],
    wait: bool,
    **filters: str | None,
) -> None:
    """Probe the selected keys now, as a background job (at the keeper's concurrency)."""
    body = _selection(ids, filters)
    if models:
        body["models"] = list(models)

    async def work(backend: KeysBackend) -> dict[str, Any]:
        started = await backend.act("recheck", body)
        if not wait:
            return started
        while True:
            job = await backend.job(int(started["job"]))
            if job["state"] != "running":
                return job
            await asyncio.sleep(0.5)

    document = _run(config_option, work)
    _print(document, as_json, lambda: render_job(document))


@keys.command("route")
@click.option("--instance", required=True, metavar="NAME")
@click.option("--model", required=True, metavar="MODEL")
@_common
def route_command(config_option: str | None, as_json: bool, instance: str, model: str) -> None:
    """Which key would serve INSTANCE/MODEL next, and why the others are skipped."""
    document = _run(config_option, lambda backend: backend.route(instance, model))
    _print(document, as_json, lambda: render_route(document))
