"""At `logging.level: debug` the database drivers' own lines (SQL parameters) carry no key.

The sync runs in a child process: logging is process-wide (and structlog caches
its loggers), so configuring it at debug here would outlive the test.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path

from tests.fakes.hostile_upstream import key_forms
from tests.support.databases import Database

KEYS = [f"sk-proj-debug-log-{i:04d}-0123456789abcdef" for i in range(20)]

SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    from datetime import UTC, datetime
    from llmgateway.config.accessor import ConfigAccessor
    from llmgateway.config.schemas import AppConfig, LoggingConfig, ModelConfig, ProviderConfig
    from llmgateway.core.constants import ProviderType
    from llmgateway.core.logs import configure_logging
    from llmgateway.keeper.key_sync import KeySync
    from llmgateway.pool.key_pool import KeyPool
    from llmgateway.store.postgres import PostgresStore
    from llmgateway.store.sqlite import SqliteStore

    engine, location, folder = sys.argv[1:4]

    async def main():
        masker = configure_logging(LoggingConfig(level="debug", format="console"), [])
        provider = ProviderConfig(
            name="p", provider_type=ProviderType.OPENAI_LIKE,
            api_base_url="https://api.example.com", default_model="m",
            keys_path=folder, models={"m": ModelConfig()},
        )
        accessor = ConfigAccessor(AppConfig(providers={"p": provider}))
        store = SqliteStore(location) if engine == "sqlite" else PostgresStore(location)
        await store.open()
        try:
            pool = KeyPool(accessor)
            clock = datetime(2026, 1, 1, tzinfo=UTC).timestamp
            await KeySync(accessor, store, pool, masker, clock).initial()
            records = await store.load_records()
        finally:
            await store.close()
        print(json.dumps([len(pool.records()), len(records)]))

    asyncio.run(main())
    """)


async def test_a_key_sync_at_debug_logs_no_key(database: Database, tmp_path: Path) -> None:
    """aiosqlite prints every statement with its parameters at debug: the keys come out masked."""
    folder = tmp_path / "keys" / "p"
    folder.mkdir(parents=True)
    (folder / "keys.txt").write_text("\n".join(KEYS) + "\n")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT,
        database.engine,
        database.location,
        str(folder),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    output = out.decode() + err.decode()

    assert child.returncode == 0, output
    for key in KEYS:
        assert [name for name, form in key_forms(key).items() if form in output] == []
    assert json.loads(out.decode().splitlines()[-1]) == [len(KEYS), len(KEYS)]
    if database.engine == "sqlite":
        # aiosqlite's lines are there; the keys travel in one JSON parameter, shown by its count.
        assert "executing" in output and f"JsonArray(<{len(KEYS)} values>)" in output
