"""The key admin's operations: checked input in, the API's JSON out.

`KeyAdmin` is what the `/-/api/` handlers and `llmgateway keys` (when no
server answers) both call, so both give the same answers. It works on the
store and, in a serving process, on that process's live pool: a change is
stored first, then applied to the pool at once (the other processes get it
through the store's change feed). Nothing is applied before the whole
request has been checked: unknown ids or a filter matching nothing are
refused (404) before any change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.core.constants import Status
from llmgateway.core.masking import Masker
from llmgateway.core.memory import RELEASE_SLICE, bulk_load, release
from llmgateway.core.models import KeyRecord
from llmgateway.core.threads import on_thread_when
from llmgateway.core.turns import in_slices
from llmgateway.keeper.recheck import RecheckJobs
from llmgateway.pool.key_pool import Clock, KeyPool
from llmgateway.store.key_admin import HISTORY_KEPT, KeyFilter, StoredKey
from llmgateway.store.key_admin import Selection as StoreSelection
from llmgateway.store.protocol import Store
from llmgateway.web.api import shapes
from llmgateway.web.api.validation import (
    ApiError,
    Selection,
    parse_import,
    parse_list_query,
    parse_recheck,
    parse_route_query,
    parse_selection,
)

MISSING_SHOWN: Final = 10
"""Unknown ids named in a refusal at most."""

KEYS_ON_THREAD: Final = 200
"""Keys of a listing page from which their JSON is made on a thread."""

ADMIN_SLICE: Final = 200
"""Records of a disable or enable the pool takes between two turns of the loop (about
1.5 ms alone; 4 ms and more beside the threads the change frees its rows on)."""


class KeyAdmin:
    """The key admin API's operations on `store` and, when given, the live `pool`.

    `config` returns the configuration in effect (it changes with a reload).
    `jobs` runs rechecks (None: rechecks are refused). `masker` holds every
    secret of the process; keys added here join it before they can be used.
    """

    def __init__(
        self,
        config: Callable[[], ConfigAccessor],
        store: Store,
        masker: Masker,
        clock: Clock,
        *,
        pool: KeyPool | None = None,
        jobs: RecheckJobs | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._masker = masker
        self._clock = clock
        self._pool = pool
        self._jobs = jobs

    @property
    def instances(self) -> tuple[str, ...]:
        """The instances keys may belong to (the enabled ones)."""
        return tuple(p.name for p in self._config().enabled_providers())

    @property
    def statuses(self) -> tuple[str, ...]:
        """Every status a filter may name."""
        return tuple(s.value for s in Status)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- reading ----------------------------------------------------------

    async def list_keys(self, query: Mapping[str, str]) -> dict[str, Any]:
        """`GET /-/api/keys`: one page of the keys the filter matches, with totals and facets."""
        asked = parse_list_query(query, self.instances, self.statuses)
        page = await self._store.list_keys(
            KeyFilter(**asked.filter), after=asked.after, limit=asked.limit
        )
        # A page of 1,000 keys took 15 ms of the event loop to shape.
        many = len(page.items) >= KEYS_ON_THREAD
        items = await on_thread_when(many, self._keys, page.items)
        return shapes.page_json(items, page.total, page.facets, page.next_cursor)

    def _keys(self, stored: Sequence[StoredKey]) -> list[dict[str, Any]]:
        """The JSON of `stored` (from a thread too: the pool's records are immutable)."""
        return [self._key(one) for one in stored]

    async def get_key(self, key_id: int) -> dict[str, Any]:
        """`GET /-/api/keys/{id}`: the key and its status history, newest first."""
        stored = await self._store.get_key(key_id)
        if stored is None:
            raise ApiError(404, "not_found", f"no key with id {key_id}")
        history = await self._store.key_history(key_id, HISTORY_KEPT)
        return {
            **self._key(stored),
            "history": shapes.history_json(history, self._masker.mask_text),
        }

    def _key(self, stored: StoredKey) -> dict[str, Any]:
        live: dict[str, KeyRecord] = {}
        unflushed = None
        if self._pool is not None:
            for model in stored.models:
                record = self._pool.get(stored.instance, model, stored.id)
                if record is not None:
                    live[model] = record
            unflushed = self._pool.usage.pending(stored.id)
        return shapes.key_json(stored, self._masker.mask_text, live, unflushed)

    def route(self, query: Mapping[str, str]) -> dict[str, Any]:
        """`GET /-/api/route`: which key would serve (instance, model) next, and why not the others."""
        instance, model = parse_route_query(query, self.instances)
        if self._pool is None:
            raise ApiError(409, "no_pool", "route inspection needs a running pool")
        return shapes.route_json(self._pool.route(instance, model))

    # -- changing ---------------------------------------------------------

    async def add_keys(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /-/api/keys`: store new keys (source api), untested, in the pool at once."""
        # With the collector held off from the first line, then what lives frozen (see
        # `bulk_load`): checking, storing and loading 100,000 keys makes as many rows and
        # records, and a collection among them, on the loop or on a thread, holds the GIL
        # and so the loop for milliseconds (up to 100 ms once the pool's records are in).
        with bulk_load():
            return await self._add_keys(body)

    async def _add_keys(self, body: Mapping[str, Any]) -> dict[str, Any]:
        # On a thread: 100,000 lines take a while to check.
        request = await asyncio.to_thread(parse_import, body, self.instances)
        provider = self._config().get_provider(request.instance)
        assert provider is not None  # parse_import checked the instance
        # Masked in every log line before anything can use them (the index built off the loop).
        await self._masker.add_off_loop(request.keys)
        report = await self._store.add_keys(
            request.instance,
            request.keys,
            ConfigAccessor.status_models(provider),
            self._now(),
        )
        if self._pool is not None:
            # In slices, so that requests keep being served while 100,000 keys join.
            async for chunk in in_slices(report.added):
                self._pool.add_records(await self._store.load_key_records(chunk))
        return shapes.import_json(
            len(report.added), report.duplicates + request.repeats, request.rejected
        )

    async def delete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /-/api/keys/delete`: delete API keys; file keys are refused with the file."""
        selection = await self._checked(parse_selection(body, self.instances, self.statuses))
        report = await self._store.delete_keys(selection)
        if self._pool is not None:
            async for key_ids in in_slices(report.deleted):
                self._pool.drop_keys(key_ids)
        return shapes.delete_json(len(report.deleted), report.refused)

    async def set_disabled(self, body: Mapping[str, Any], disabled: bool) -> dict[str, Any]:
        """`POST /-/api/keys/disable` and `/enable`: out of the pool, or back in it untested."""
        selection = await self._checked(parse_selection(body, self.instances, self.statuses))
        # 100,000 keys make 200,000 rows and records: no collection among them (see `add_keys`).
        with bulk_load():
            changed = await self._store.set_disabled(selection, disabled, self._now())
            keys: set[int] = set()
            async for records in in_slices(changed, ADMIN_SLICE):  # requests go on between them
                if self._pool is not None:
                    self._pool.apply_admin(records)
                keys.update(record.key_id for record in records)
            # The store's copies (the pool holds its own now), freed off the loop.
            await on_thread_when(len(changed) >= RELEASE_SLICE, release, changed)
        return {"changed": len(keys)}

    async def recheck(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /-/api/keys/recheck`: a background job probing the selected (key, model) rows."""
        request = parse_recheck(body, self.instances, self.statuses)
        selection = await self._checked(request.selection)
        if self._jobs is None:
            raise ApiError(409, "no_prober", "rechecks need a running gateway")
        job_id, queued = await self._jobs.start(selection, request.models)
        return {"job": job_id, "queued": queued}

    async def job(self, job_id: int) -> dict[str, Any]:
        """`GET /-/api/jobs/{id}`: a job's progress and results (any worker's job)."""
        job = await self._store.get_job(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job with id {job_id}")
        return shapes.job_json(job)

    async def _checked(self, selection: Selection) -> StoreSelection:
        """The store's selection for `selection`, once every id exists or the filter matches."""
        if selection.ids is not None:
            missing = await self._store.missing_keys(selection.ids)
            if missing:
                shown = ", ".join(str(i) for i in missing[:MISSING_SHOWN])
                extra = len(missing) - MISSING_SHOWN
                more = f" and {extra} more" if extra > 0 else ""
                raise ApiError(404, "not_found", f"no key with id {shown}{more}; nothing changed")
            return selection.ids
        flt = KeyFilter(**(selection.filter or {}))
        page = await self._store.list_keys(flt, after=None, limit=1)
        if page.total == 0:
            raise ApiError(404, "no_match", "no key matches the filter; nothing changed")
        return flt
