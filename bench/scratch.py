"""A scale bench's scratch set-up: a work directory, key files, an empty store, the upstream.

Shared by `scale_bench.py` and `instructions_bench.py`: the directory holds
the key files of the N-key instance and of the one-key instance; the store is
a SQLite file in it or a throw-away PostgreSQL database; the upstream is
`scale_parts.py` on CPU 0. Everything is removed on exit (`BENCH_KEEP=1`
keeps the directory, with the gateways' logs and any callgrind dumps).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import scale_parts as parts
from processes import BENCH_DIR, REPO_DIR, Server, free_port, wait_for_port

ONE_KEY = "sk-one-only-key-0123456789abcdef"
"""The one-key instance's key."""


@dataclass(frozen=True)
class Scratch:
    """What `scratch` set up."""

    workdir: Path
    db_url: str
    upstream_url: str
    upstream: Server
    env: dict[str, str]
    """The environment to start a gateway with (the repository on PYTHONPATH)."""


@asynccontextmanager
async def scratch(engine: str, keys: int, prefix: str) -> AsyncIterator[Scratch]:
    """Set up `keys` keys on `engine` (sqlite or postgres) and the upstream; remove all after."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-{engine}-{keys}-"))
    admin: asyncpg.Connection | None = None
    if engine == "sqlite":
        (workdir / "data").mkdir()
        db_url = f"sqlite:///{workdir / 'data' / 'scale.db'}"
    else:
        name = f"llmgw_{prefix}_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
        await admin.execute(f'CREATE DATABASE "{name}"')
        db_url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    port = free_port()
    upstream = Server(
        "upstream",
        [sys.executable, str(BENCH_DIR / "scale_parts.py"), str(port)],
        0,
        workdir / "upstream.log",
    )
    upstream.start(env=env, cwd=BENCH_DIR)
    print(f"{engine}, {keys:,} keys x 2 models ({workdir})", flush=True)
    try:
        wait_for_port(port, upstream.process, 30)
        parts.write_key_file(workdir, parts.make_keys(keys))
        parts.write_key_file(workdir, [ONE_KEY], parts.ONE)
        yield Scratch(workdir, db_url, f"http://127.0.0.1:{port}", upstream, env)
    finally:
        upstream.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        if admin is not None:
            await admin.execute(
                f'DROP DATABASE IF EXISTS "{db_url.rsplit("/", 1)[1]}" WITH (FORCE)'
            )
            await admin.close()
