"""Key sync: the one owner of bringing keys from the configuration into store, masker and pool.

Key files and inline `keys:` are the source of truth. `KeySync` reads them,
makes the store match them (one process at a time, under the store's
`keysync` lock), registers every key with the process's `Masker` before
anything else handles it, and applies the change to the live pool. Start-up
(`initial`), the keeper's periodic re-read (`sync`) and the follower (keys
other processes' syncs added, `register` and `reconcile`) all go through it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, final

import structlog

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.errors import StoreError
from llmgateway.core.masking import Masker
from llmgateway.core.memory import bulk_load
from llmgateway.core.models import KeyRecord
from llmgateway.keeper.keyfiles import KeyFileRead, load_keys, warn_if_keyless
from llmgateway.pool.key_pool import Clock, KeyPool
from llmgateway.pool.sharded import IdSet
from llmgateway.store.protocol import KeySyncReport, Store

log = structlog.get_logger(__name__)

RECONCILE_PAGE: Final = 2000
"""Records `reconcile` reads and merges at a time (the event loop runs between pages)."""

MERGE_SLICE: Final = 500
"""Records of a page merged into the pool between two turns of the event loop."""


@final
class KeySync:
    """Syncs the configured keys into the store, the masker and the live pool.

    `cwd` is where a relative `keys_path` is taken from (default: the
    working directory).
    """

    def __init__(
        self,
        accessor: ConfigAccessor,
        store: Store,
        pool: KeyPool,
        masker: Masker,
        clock: Clock = time.time,
        *,
        cwd: Path | None = None,
    ) -> None:
        self._accessor = accessor
        self._store = store
        self._pool = pool
        self._masker = masker
        self._clock = clock
        self._cwd = cwd
        self._loaded: set[str] = set()
        self._synced: dict[str, tuple[int, tuple[str, ...]]] = {}
        """Per instance, the digest of the keys and the models this process last made the
        store match: a periodic sync of unchanged key files writes nothing."""
        self._reads: dict[str, KeyFileRead] = {}
        """Per instance, what its last synced read of the key files was read from (no keys,
        `KeyFileRead.without_keys`): files found as they were then are not read again."""

    async def initial(self) -> None:
        """Start-up: provider rows, then every enabled instance's keys, then the pool from the store.

        The keys are synced under the `keysync` lock, waited for (workers
        starting together sync one at a time; the later ones find nothing to
        change). A store failure raises.
        """
        enabled = self._accessor.enabled_providers()
        now = self._now()
        await self._store.sync_providers(
            [(p.name, p.provider_type) for p in self._accessor.providers()]
        )
        with bulk_load(collect_first=True):
            async with self._store.exclusive("keysync", wait=True):
                records = await self._synced_records(enabled, now)
            await self.register_off_loop(r.key for r in records)
            self._pool.load(records)
        self._loaded = {p.name for p in enabled}
        with_keys = {r.instance for r in records}
        for provider in enabled:
            warn_if_keyless(provider, int(provider.name in with_keys), self._cwd)
        log.info("key_pool_loaded", instances=len(enabled), records=len(records))

    async def _synced_records(
        self, enabled: Sequence[ProviderConfig], now: datetime
    ) -> list[KeyRecord]:
        """Sync every enabled instance's keys; every stored record afterwards.

        The store is read first: a restart whose key files did not change
        writes nothing and reads once.
        """
        records = await self._store.load_records()
        by_instance: dict[str, list[KeyRecord]] = {p.name: [] for p in enabled}
        for record in records:
            by_instance.get(record.instance, []).append(record)
        changed = False
        for provider in enabled:
            report = await self._sync_instance(provider, now, by_instance[provider.name])
            changed = changed or report is not _UNCHANGED
        return await self._store.load_records() if changed else records

    async def sync(self) -> dict[str, KeySyncReport | None]:
        """Re-read every enabled instance's keys, unless another process is syncing right now.

        An instance is reloaded from the store into the pool on its first
        sync and whenever keys were added or removed. A store failure for one
        instance is logged and the others go on. Returns each synced
        instance's report (None: its key files could not be read); empty when
        another process held the lock.
        """
        reports: dict[str, KeySyncReport | None] = {}
        async with self._store.exclusive("keysync") as got:
            if not got:
                return reports
            now = self._now()
            for provider in self._accessor.enabled_providers():
                name = provider.name
                try:
                    report = reports[name] = await self._sync_instance(provider, now)
                    changed = report is not None and (report.added > 0 or report.removed > 0)
                    if name in self._loaded and not changed:
                        continue
                    with bulk_load():
                        async for _ in self.reconcile((name,)):
                            pass
                except StoreError as exc:
                    log.error("keeper_key_sync_failed", instance=name, error=str(exc))
                    continue
                self._loaded.add(name)
        return reports

    async def prepare(
        self, accessor: ConfigAccessor, instances: Iterable[str]
    ) -> dict[str, dict[str, IdSet]]:
        """A reload's store and pool work: provider rows, the keys of `instances`, their merge.

        Each of `instances` enabled in `accessor` has its keys synced (under
        the `keysync` lock, waited for), then its stored rows merged into the
        pool page by page, as a reconciliation does: keys new to it join (a
        model added to an instance gets its slot), newer statuses are taken,
        and the loop runs between slices. Nothing leaves the pool yet: the
        answer is, per instance, the key ids per model the store no longer
        has, which `adopt` drops once the new configuration is in effect. A
        store failure raises (the pool keeps what it merged: stored keys).
        """
        wanted = set(instances)
        providers = [p for p in accessor.enabled_providers() if p.name in wanted]
        now = self._now()
        await self._store.sync_providers([(p.name, p.provider_type) for p in accessor.providers()])
        async with self._store.exclusive("keysync", wait=True):
            for provider in providers:
                await self._sync_instance(provider, now)
        missing = {p.name: await self._pool.key_ids(p.name) for p in providers}
        if missing:
            with bulk_load():
                async for _ in self._merge_stored(missing):
                    pass
        return missing

    def adopt(
        self, accessor: ConfigAccessor, missing: dict[str, dict[str, IdSet]]
    ) -> Awaitable[None]:
        """Put a prepared reload into effect at once; return the tidying of the pool to await.

        From now on `accessor` is followed. The tidying (awaited by the
        reload, after every part has switched) drops, a slice at a time with
        the loop running in between, the keys `prepare` found no longer
        stored, then every key of the instances no longer served. Neither
        step fails.
        """
        self._accessor = accessor
        gone = [name for name in self._loaded if not accessor.serves(name)]
        self._loaded -= set(gone)
        self._loaded |= set(missing)
        return self._tidy(missing, gone)

    async def _tidy(self, missing: dict[str, dict[str, IdSet]], gone: Sequence[str]) -> None:
        for name, models in missing.items():
            await self._pool.drop_missing(name, models)
        for name in gone:
            await self._pool.drop_instance(name)

    def register(self, keys: Iterable[str]) -> None:
        """Make `keys` known to the masker (before anything logs, stores or picks them)."""
        self._masker.add(keys)

    async def register_off_loop(self, keys: Iterable[str]) -> None:
        """`register`, the masker's index rebuilt on a thread (100,000 keys: no stall)."""
        await self._masker.add_off_loop(keys)

    async def reconcile(self, instances: Sequence[str]) -> AsyncIterator[int]:
        """Bring `instances` in the pool in step with the store; yield the newer statuses per page.

        The store is read a page (`RECONCILE_PAGE` rows) at a time and each
        page merged at once (`KeyPool.merge_stored`, keys masked first): keys
        new to the pool join it, newer statuses replace the pool's, and at the
        end the keys no longer stored leave it. Only one page of records
        is held at a time (not a second copy of the pool), and the event loop
        runs between pages. Each page's count is yielded as soon as it is
        merged. Raises StoreError when the store fails (the pool then keeps
        what it merged, and drops nothing).
        """
        # What the pool holds now; each stored row crosses its key out: what is left, the
        # store no longer has. (The pool's own ids: no new object per row is kept.)
        missing = {name: await self._pool.key_ids(name) for name in instances}
        async for taken in self._merge_stored(missing):
            yield taken
        for name, models in missing.items():
            await self._pool.drop_missing(name, models)

    async def _merge_stored(self, missing: dict[str, dict[str, IdSet]]) -> AsyncIterator[int]:
        """Merge the stored rows of `missing`'s instances into the pool; yield the newer per page.

        Each row read crosses its key id out of `missing` (what is left, the
        store no longer has). Keys are registered with the masker first.
        """
        only = next(iter(missing)) if len(missing) == 1 else None  # one instance: its rows only
        merge = self._pool.merge_stored
        after: tuple[int, str] | None = None
        while True:
            page = await self._store.records_page(only, after, RECONCILE_PAGE)
            if not page:
                break
            after = (page[-1].key_id, page[-1].model)
            mine = [r for r in page if r.instance in missing]
            await self.register_off_loop(r.key for r in mine)
            taken = 0
            for index, record in enumerate(mine):
                if index and not index % MERGE_SLICE:
                    await asyncio.sleep(0)  # let requests through between slices of the page
                ids = missing[record.instance].get(record.model)
                if ids is not None:
                    ids.discard(record.key_id)
                taken += merge(record)
            yield taken
            if len(page) < RECONCILE_PAGE:
                break

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _sync_instance(
        self,
        provider: ProviderConfig,
        now: datetime,
        current: Sequence[KeyRecord] | None = None,
    ) -> KeySyncReport | None:
        """Read `provider`'s keys and make the store match them.

        Returns the sync report, or None when a key file or the folder could
        not be read: that is logged as an error naming the path, and the
        stored keys are left as they are (a missing folder must not wipe an
        instance). With `current` (the instance's records, just read) a store
        already matching the keys is not written to: `_UNCHANGED` is returned;
        so it is when the files read exactly as at this process's last sync of
        the instance, with the same models (a periodic sync of 100,000
        unchanged keys writes nothing). Raises StoreError when the store fails.
        """
        models = ConfigAccessor.status_models(provider)
        previous = self._reads.pop(provider.name, None)
        read = await load_keys(provider, self._cwd, previous)
        if read is previous:  # the files are as they were at the last sync
            if self._synced.get(provider.name) == (read.digest, tuple(models)):
                self._reads[provider.name] = read
                return _UNCHANGED
            read = await load_keys(provider, self._cwd)  # the models changed: the keys are needed
        await self.register_off_loop(read.keys)
        keys = read.keys
        if read.missing and len(read.errors) == 1:
            # No folder (yet): the inline keys still load. Keys stored earlier stay, since a
            # folder that vanished (an unmounted volume) must not wipe the instance.
            stored = [r.key for r in await self._store.load_records(provider.name)]
            kept = set(stored) - set(read.keys)
            if kept:
                log.warning(
                    "keys_folder_missing",
                    instance=provider.name,
                    problem=read.errors[0],
                    kept=len(kept),
                )
            keys = tuple(dict.fromkeys((*read.keys, *stored)))
        elif not read.ok:
            for problem in read.errors:
                log.error("keys_not_synced", instance=provider.name, problem=problem)
            return None
        signature = (read.digest, tuple(models))
        if not read.missing and self._synced.get(provider.name) == signature:
            self._remember(provider.name, read, signature)
            return _UNCHANGED  # the files read as they were at this process's last sync
        if current is not None and _matches(current, keys, models):
            self._remember(provider.name, read, signature)
            return _UNCHANGED
        with bulk_load():  # 100,000 rows made on a thread: no collection runs among them
            report = await self._store.sync_keys(provider.name, keys, models, now, files=read.files)
        if not read.missing:
            self._remember(provider.name, read, signature)
        if report.added or report.removed:
            log.info(
                "keys_synced",
                instance=provider.name,
                added=report.added,
                removed=report.removed,
                total=report.total,
            )
        return report

    def _remember(
        self, instance: str, read: KeyFileRead, signature: tuple[int, tuple[str, ...]]
    ) -> None:
        """The store matches `read` now: a later sync finding the same files writes nothing."""
        self._synced[instance] = signature
        if read.source is not None:
            self._reads[instance] = read.without_keys()


_UNCHANGED: Final = KeySyncReport(added=0, removed=0, total=-1)
"""What `_sync_instance` returns when the store already held exactly the keys."""


def _matches(stored: Sequence[KeyRecord], keys: Sequence[str], models: Sequence[str]) -> bool:
    """Whether `stored` is one row per key of `keys` and model of `models`, nothing else.

    (key, model) rows are unique in the store, so equal key sets, known
    models and the right number of rows mean every key has every model.
    """
    wanted = {k for k in keys if k}
    known = set(models)
    return (
        len(stored) == len(wanted) * len(known)
        and all(r.model in known for r in stored)
        and {r.key for r in stored} == wanted
    )
