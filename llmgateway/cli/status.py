"""`llmgateway status`: the stored status of every key, read from the store directly.

No server is needed: the command opens the store named by the configuration
and prints the summary `/-/status` answers, counted in SQL (`--json`: the
same document), or a table of it. `--keys` adds every (key, model) row,
read and printed page by page, so that a pool of any size is never held in
memory whole. Keys are masked as in `/-/status`. No client token is needed
either: the configuration is loaded read-only (an unset `${VAR}` of a client
token is no error).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Final

import click
import orjson

from llmgateway.cli.common import (
    CONFIG_HELP,
    EXIT_FAILURE,
    config_error_exit,
    load_or_exit,
    resolve,
)
from llmgateway.config.accessor import ConfigAccessor
from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.errors import ConfigError, StoreError
from llmgateway.core.masking import Masker
from llmgateway.pool.listing import ModelTally
from llmgateway.store import open_store, sqlite_path
from llmgateway.store.protocol import Store
from llmgateway.web.status import MAX_PAGE, iso_utc, key_row, summary_document

KEY_HEADER: Final = ("KEY", "MODEL", "STATUS", "CODE", "LAST CHECKED", "NEXT CHECK", "MESSAGE")
"""The columns of the per-key rows of the table."""

Write = Callable[[str], None]


@click.command()
@click.option("--config", "config_option", metavar="PATH", help=CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
@click.option("--keys", "show_keys", is_flag=True, help="List every (masked) key.")
def status(config_option: str | None, as_json: bool, show_keys: bool) -> None:
    """Show the stored status of every key (what /-/status shows)."""
    # Reading the store needs no client token: their variables may be unset here.
    accessor = ConfigAccessor(load_or_exit(resolve(config_option), read_only=True))
    for text in accessor.deprecations:
        click.echo(f"Warning: {text}", err=True)
    try:
        asyncio.run(_print_status(accessor, as_json, show_keys, click.echo))
    except ConfigError as exc:
        raise config_error_exit(exc) from None
    except StoreError as exc:
        click.echo(f"cannot read the key store: {exc}", err=True)
        raise SystemExit(EXIT_FAILURE) from None


async def _print_status(
    accessor: ConfigAccessor, as_json: bool, show_keys: bool, echo: Callable[[str], None]
) -> None:
    url = accessor.database.url
    if url.startswith("sqlite:"):
        path = sqlite_path(url)
        if isinstance(path, Path) and not path.exists():
            # Reading must not create an empty database where the gateway has never run.
            raise StoreError(f"no store at {path} yet: start `llmgateway serve` first")
    store = open_store(accessor.database)
    await store.open()
    try:
        document = await stored_summary(accessor, store)
        if as_json and not show_keys:
            echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        elif as_json:
            await _stream_json(accessor, store, document, _writer())
        else:
            echo(render_table(document))
            if show_keys:
                await _stream_table(accessor, store, document, _writer())
    finally:
        await store.close()


def _writer() -> Write:
    """Writes straight to standard output (streamed rows are never gathered first)."""

    def write(text: str) -> None:
        click.echo(text, nl=False)

    return write


async def stored_summary(accessor: ConfigAccessor, store: Store) -> dict[str, Any]:
    """The summary document of the stored statuses, counted by the store."""
    now = datetime.now(UTC)
    tallies: dict[tuple[str, str], dict[Status, int]] = {}
    cooling: dict[tuple[str, str, Status], int] = {}
    counted = await store.stored_counts(now)
    for count in counted.statuses:
        tallies.setdefault((count.instance, count.model), {})[count.status] = count.count
        cooling[(count.instance, count.model, count.status)] = count.cooling
    return summary_document(
        accessor.enabled_providers(),
        [
            ModelTally(
                instance,
                model,
                tally,
                usable=sum(
                    n - cooling.get((instance, model, status), 0)
                    for status, n in tally.items()
                    if status.is_usable
                ),
                rows=sum(tally.values()),
            )
            for (instance, model), tally in tallies.items()
        ],
        keys_total=counted.keys,
    )


async def stored_rows(
    store: Store, instance: str, secrets: tuple[str, ...]
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every stored row of `instance` as status rows, a page at a time (keys masked).

    A page's messages go through a masker knowing the configuration's
    secrets and the page's keys; a page's times are written once each.
    """
    after: tuple[int, str] | None = None
    while True:
        page = await store.records_page(instance, after, MAX_PAGE)
        if not page:
            return
        mask = Masker((*secrets, *(r.key for r in page))).mask_text
        iso = cache(iso_utc)
        yield [key_row(record, mask, iso) for record in page]
        after = (page[-1].key_id, page[-1].model)


async def _stream_json(
    accessor: ConfigAccessor, store: Store, document: dict[str, Any], write: Write
) -> None:
    """The document with every instance's `keys`, written a page at a time."""
    secrets = tuple(accessor.secrets())
    write('{"providers":{')
    for index, (name, section) in enumerate(document["providers"].items()):
        head = orjson.dumps({name: section}).decode()[1:-2]  # `"name":{...` left open
        write(("," if index else "") + head + ',"keys":[')
        first = True
        async for rows in stored_rows(store, name, secrets):
            text = ",".join(orjson.dumps(row).decode() for row in rows)
            write(text if first else "," + text)
            first = False
        write("]}")
    write("}}\n")


async def _stream_table(
    accessor: ConfigAccessor, store: Store, document: dict[str, Any], write: Write
) -> None:
    """Each instance's masked per-key rows, in fixed-width columns, a page at a time."""
    secrets = tuple(accessor.secrets())
    for name in document["providers"]:
        widths = _key_widths(document["providers"][name]["models"])
        write(f"\n{name} keys:\n  {_line(KEY_HEADER, widths)}\n")
        async for rows in stored_rows(store, name, secrets):
            write("".join(f"  {_line(_cells(row), widths)}\n" for row in rows))


def _cells(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The table cells of one status row."""
    return (
        row["key"],
        row["model"],
        _status_text(row),
        "-" if row["status_code"] is None else str(row["status_code"]),
        row["last_checked_at"] or "-",
        row["next_check_at"] or "-",
        (row["message"] or "")[:60],
    )


def _key_widths(models: Mapping[str, Any]) -> tuple[int, ...]:
    """Column widths of the per-key rows, known before any row is read."""
    suspected = (len(f"{Status.VERIFYING.value} ({r.value})") for r in ErrorReason)
    longest_status = max(*suspected, *(len(s.value) for s in Status))
    model = max([len("MODEL"), *(len(m) for m in models)])
    stamp = len(iso_utc(datetime(2026, 1, 1, tzinfo=UTC)) or "")
    return (11, model, longest_status, 4, stamp, stamp, 0)


def _line(cells: tuple[str, ...], widths: tuple[int, ...]) -> str:
    return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()


def render_table(document: dict[str, Any]) -> str:
    """The summary document as a readable text table: one row per instance and model.

    Columns are the keys usable now, then the statuses present anywhere (in
    `Status` order); ongoing incidents follow the table.
    """
    providers: dict[str, Any] = document["providers"]
    seen = {status for p in providers.values() for m in p["models"].values() for status in m}
    statuses = [s.value for s in Status if s.value in seen]
    header = ["INSTANCE", "MODEL", "TOTAL", "USABLE", *(s.upper() for s in statuses)]
    rows: list[list[str]] = []
    for name, instance in providers.items():
        models: dict[str, dict[str, int]] = instance["models"] or {"-": {}}
        usable: dict[str, int] = instance.get("usable", {})
        for model, tally in models.items():
            rows.append(
                [
                    name,
                    model,
                    str(sum(tally.values())),
                    str(usable.get(model, 0)),
                    *(str(tally.get(s, 0)) for s in statuses),
                ]
            )
    lines = _columns([header, *rows])
    lines.append("")
    lines.extend(
        f"{name} ({p['provider_type']}): {p['keys_total']} keys" for name, p in providers.items()
    )
    for instance in providers.values():
        lines.extend(f"INCIDENT: {i['message']}" for i in instance.get("incidents", []))
    return "\n".join(lines)


def _status_text(key: Mapping[str, Any]) -> str:
    """A key row's status, with the suspected reason while it is being verified."""
    status = str(key["status"])
    if status == Status.VERIFYING.value and key.get("reason"):
        return f"{status} ({key['reason']})"
    return status


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
