"""`llmgateway status`: the stored status of every key, read from the store directly.

No server is needed: the command opens the store named by the configuration,
builds the same document `/-/status` answers (`--json`) or a table of it, and
closes the store. Keys are masked as in `/-/status`. No client token is
needed either: the configuration is loaded read-only (an unset `${VAR}` of a
client token is no error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
from llmgateway.core.constants import Status
from llmgateway.core.errors import ConfigError, StoreError
from llmgateway.core.masking import Masker
from llmgateway.store import open_store, sqlite_path
from llmgateway.web.status import build_status_document


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
        document = asyncio.run(_load_document(accessor))
    except ConfigError as exc:
        raise config_error_exit(exc) from None
    except StoreError as exc:
        click.echo(f"cannot read the key store: {exc}", err=True)
        raise SystemExit(EXIT_FAILURE) from None
    if as_json:
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render_table(document, show_keys))


def render_table(document: dict[str, Any], show_keys: bool = False) -> str:
    """The status document as a readable text table: one row per instance and model.

    Columns are the keys usable now, then the statuses present anywhere (in
    `Status` order); ongoing incidents follow the table; with `show_keys`
    each instance is followed by its masked per-key list, a key being
    verified showing its suspected reason.
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
    if show_keys:
        for name, instance in providers.items():
            lines.extend(["", f"{name} keys:"])
            key_rows = [["KEY", "MODEL", "STATUS", "CODE", "LAST CHECKED", "NEXT CHECK", "MESSAGE"]]
            key_rows.extend(
                [
                    k["key"],
                    k["model"],
                    _status_text(k),
                    "-" if k["status_code"] is None else str(k["status_code"]),
                    k["last_checked_at"] or "-",
                    k["next_check_at"] or "-",
                    (k["message"] or "")[:60],
                ]
                for k in instance["keys"]
            )
            lines.extend("  " + line for line in _columns(key_rows))
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


async def _load_document(accessor: ConfigAccessor) -> dict[str, Any]:
    url = accessor.database.url
    if url.startswith("sqlite:"):
        path = sqlite_path(url)
        if isinstance(path, Path) and not path.exists():
            # Reading must not create an empty database where the gateway has never run.
            raise StoreError(f"no store at {path} yet: start `llmgateway serve` first")
    store = open_store(accessor.database)
    await store.open()
    try:
        records = await store.load_records()
    finally:
        await store.close()
    # What is printed goes through a masker holding every key and token, like /-/status.
    masker = Masker(accessor.secrets())
    masker.add(r.key for r in records)
    return build_status_document(accessor.enabled_providers(), records, mask=masker.mask_text)
