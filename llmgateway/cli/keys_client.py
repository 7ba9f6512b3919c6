"""What `llmgateway keys` shares with its backends: the API as a protocol, errors, text output.

`KeysBackend` is the key admin API as the command line uses it: each method
returns the JSON document the HTTP endpoint answers, so the output is the
same whichever backend served it (`keys_server.ServerBackend`, the running
server; `keys_direct.DirectBackend`, the store). Refusals raise
`KeysCommandError` with the API's message. The `render_*` functions turn
the documents into text for people. Nothing here imports aiohttp: the
commands that never serve start without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class KeysCommandError(Exception):
    """A refused or failed key admin operation; `status` is the HTTP status when it has one."""

    def __init__(self, message: str, status: int | None = None, code: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class KeysBackend(Protocol):
    """The key admin API as the command line uses it (answers as the HTTP API's JSON)."""

    @property
    def where(self) -> str:
        """What serves the commands ("server at http://…", "store sqlite:…")."""

    async def list_keys(self, query: Mapping[str, str]) -> dict[str, Any]:
        """`GET /-/api/keys` with `query`."""

    async def add_keys(self, instance: str, text: str) -> dict[str, Any]:
        """`POST /-/api/keys` with one key a line of `text`."""

    async def act(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /-/api/keys/{action}` (delete, disable, enable, recheck) with `body`."""

    async def job(self, job_id: int) -> dict[str, Any]:
        """`GET /-/api/jobs/{job_id}`."""

    async def route(self, instance: str, model: str) -> dict[str, Any]:
        """`GET /-/api/route`."""

    async def close(self) -> None:
        """Release what the backend holds."""


def server_url(host: str, port: int) -> str:
    """The URL a local client reaches the server at (a wildcard address means this host)."""
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _key_status(models: Mapping[str, Mapping[str, Any]]) -> str:
    statuses = sorted({str(m["status"]) for m in models.values()})
    return ",".join(statuses) or "-"


def render_list(document: Mapping[str, Any]) -> str:
    """A page of keys as a table, then the totals and the cursor of the next page."""
    rows = [["ID", "INSTANCE", "KEY", "FINGERPRINT", "SOURCE", "STATUS", "REQUESTS", "FAILURES"]]
    for item in document["items"]:
        usage = item.get("usage", {})
        rows.append(
            [
                str(item["id"]),
                item["instance"],
                item["key"],
                item["fingerprint"],
                item["source"],
                _key_status(item.get("models", {})),
                str(usage.get("requests", 0)),
                str(usage.get("failures", 0)),
            ]
        )
    lines = _columns(rows)
    status_facets = document.get("facets", {}).get("status", {})
    lines.append("")
    tally = ", ".join(f"{n} {s}" for s, n in sorted(status_facets.items()))
    lines.append(f"{document['total']} keys" + (f" ({tally})" if tally else ""))
    if document.get("next_cursor"):
        lines.append(f"more: --cursor {document['next_cursor']}")
    return "\n".join(lines)


def render_add(document: Mapping[str, Any]) -> str:
    """The outcome of an import, one rejected line a row."""
    lines = [f"added {document['added']}, duplicates {document['duplicates']}"]
    lines.extend(f"line {r['line']}: rejected: {r['reason']}" for r in document["rejected"])
    return "\n".join(lines)


def render_delete(document: Mapping[str, Any]) -> str:
    """The outcome of a removal, one refused key a row."""
    lines = [f"deleted {document['deleted']}"]
    lines.extend(f"key {r['id']}: refused: {r['reason']}" for r in document["refused"])
    return "\n".join(lines)


def render_changed(action: str, document: Mapping[str, Any]) -> str:
    """The outcome of disable/enable."""
    return f"{action}d {document['changed']}"


def render_job(document: Mapping[str, Any]) -> str:
    """A recheck job's progress and results."""
    if "queued" in document:
        return f"job {document['job']}: {document['queued']} checks queued"
    results = ", ".join(f"{n} {s}" for s, n in sorted(document.get("results", {}).items()))
    text = f"job {document['id']} ({document['kind']}): {document['state']}, "
    text += f"{document['done']}/{document['total']} done"
    return text + (f" ({results})" if results else "")


def render_route(document: Mapping[str, Any]) -> str:
    """Which key would serve (instance, model) next and why others are skipped."""
    chosen = document.get("next")
    lines = [
        f"{document['instance']}/{document['model']}: {document['usable']} usable",
        f"next: {chosen['key']} (id {chosen['id']})" if chosen else "next: none",
    ]
    counts = document.get("counts", {})
    if counts:
        lines.append("statuses: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    skipped = document.get("skipped", [])
    if skipped:
        lines.append("skipped:")
        lines.extend(f"  {s['key']} (id {s['id']}): {s['why']}" for s in skipped)
    return "\n".join(lines)
