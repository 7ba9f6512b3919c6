"""`llmgateway keys` without a server: the key admin's operations run on the store directly.

`open_backend` asks the configured address first (`ServerBackend`); when no
server answers, `DirectBackend` opens the store and runs the same
`KeyAdmin` operations the API runs, so the output is the same. There is no
live pool then: route inspection reads a pool loaded from the store (its
rotation starts with the lowest id), and a recheck probes in this process
and returns when its job is done (the process must not exit before).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from llmgateway.cli.keys_client import KeysBackend, KeysCommandError, server_url
from llmgateway.cli.keys_server import ServerBackend
from llmgateway.config.accessor import ConfigAccessor
from llmgateway.core.errors import StoreError
from llmgateway.core.masking import Masker
from llmgateway.keeper.prober import Prober
from llmgateway.keeper.recheck import RecheckJobs
from llmgateway.pool.key_pool import KeyPool
from llmgateway.providers import build_adapter
from llmgateway.store import open_store, sqlite_path
from llmgateway.store.protocol import Store
from llmgateway.store.write_queue import WriteQueue
from llmgateway.web.api.operations import KeyAdmin
from llmgateway.web.api.validation import ApiError


async def open_backend(accessor: ConfigAccessor, masker: Masker) -> KeysBackend:
    """The running server's API when it answers at the configured address, else the store's.

    `masker` is the logging's: every key the direct backend reads joins it.
    """
    server = accessor.server
    remote = ServerBackend(server_url(server.host, server.port), server.admin_token)
    if await remote.answers():
        return remote
    await remote.close()
    direct = DirectBackend(accessor, masker)
    await direct.open()
    return direct


class DirectBackend:
    """The key admin's operations on the store, in this process."""

    def __init__(self, accessor: ConfigAccessor, masker: Masker) -> None:
        self._accessor = accessor
        self._store: Store | None = None
        self._masker = masker

    @property
    def where(self) -> str:
        """The store's engine."""
        return "store " + self._accessor.database.url.split(":", 1)[0]

    async def open(self) -> None:
        """Open the store (never create an SQLite file where no gateway ever ran)."""
        url = self._accessor.database.url
        if url.startswith("sqlite:"):
            path = sqlite_path(url)
            if isinstance(path, Path) and not path.exists():
                raise StoreError(f"no store at {path} yet: start `llmgateway serve` first")
        store = open_store(self._accessor.database)
        await store.open()
        self._store = store

    def _admin(self, pool: KeyPool | None = None, jobs: RecheckJobs | None = None) -> KeyAdmin:
        assert self._store is not None
        accessor = self._accessor
        return KeyAdmin(
            lambda: accessor, self._store, self._masker, time.time, pool=pool, jobs=jobs
        )

    async def list_keys(self, query: Mapping[str, str]) -> dict[str, Any]:
        """The listing, from the store."""
        return await _refused_as_error(self._admin().list_keys(query))

    async def add_keys(self, instance: str, text: str) -> dict[str, Any]:
        """The import, into the store (a running gateway's follower or start-up loads them)."""
        return await _refused_as_error(self._admin().add_keys({"instance": instance, "text": text}))

    async def act(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """delete, disable, enable on the store; recheck probing here until the job is done."""
        admin = self._admin()
        if action == "delete":
            return await _refused_as_error(admin.delete(body))
        if action in ("disable", "enable"):
            return await _refused_as_error(admin.set_disabled(body, action == "disable"))
        if action == "recheck":
            return await self._recheck(body)
        raise KeysCommandError(f"unknown action {action}")

    async def job(self, job_id: int) -> dict[str, Any]:
        """A job's row."""
        return await _refused_as_error(self._admin().job(job_id))

    async def route(self, instance: str, model: str) -> dict[str, Any]:
        """Route inspection of a pool loaded from the store."""
        assert self._store is not None
        pool = KeyPool(self._accessor)
        pool.load(await self._store.load_records())
        admin = self._admin(pool=pool)
        try:
            return admin.route({"instance": instance, "model": model})
        except ApiError as exc:
            raise KeysCommandError(exc.message, exc.status, exc.code) from None

    async def _recheck(self, body: Mapping[str, Any]) -> dict[str, Any]:
        assert self._store is not None
        store = self._store
        queue = WriteQueue(store)
        pool = KeyPool(self._accessor, sink=queue.put)
        records = await store.load_records()
        self._masker.add(r.key for r in records)
        pool.load(records)
        adapters = {
            p.name: build_adapter(p, masker=self._masker)
            for p in self._accessor.enabled_providers()
        }
        async with (
            aiohttp.ClientSession(auto_decompress=False, trust_env=False) as session,
            queue.running(),
        ):
            prober = Prober(self._accessor, session, adapters)
            jobs = RecheckJobs(
                store, pool, prober, stored=lambda: queue.written_through(queue.mark())
            )
            started = await _refused_as_error(self._admin(pool, jobs).recheck(body))
            await jobs.join()
        return started

    async def close(self) -> None:
        """Close the store."""
        if self._store is not None:
            await self._store.close()
            self._store = None


async def _refused_as_error(work: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = await work
    except ApiError as exc:
        raise KeysCommandError(exc.message, exc.status, exc.code) from None
    return result
