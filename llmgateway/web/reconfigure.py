"""The application's part of a reload: what each component needs to follow a new configuration.

`AppReload` is the one `Reconfigurable` of the application (see
`llmgateway.config.live`). Preparing does what may wait or fail: the new
tokens are registered with the masker, adapters are built for the added and
changed instances, and, last, the provider rows are written and the keys of
those instances synced into the store and merged into the pool a page at a
time (`KeySync.prepare`): keys new to it join, a kept key keeps its status,
cool-down and schedule (or takes a newer stored one). Putting it into effect
neither waits nor fails, so no request ever sees half of a reload: the pool,
gateway, prober, keeper, follower, key sync, summary, admin guard and the
failed-token limit switch over at once. Then, in slices with the loop
running, the keys no longer stored and every key of a removed or disabled
instance leave the pool. A request in flight keeps the route it started with."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import final

from aiohttp import web

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.diff import ConfigDiff
from llmgateway.config.live import Commit
from llmgateway.pool.sharded import IdSet
from llmgateway.providers import build_adapter
from llmgateway.providers.base import ProviderAdapter
from llmgateway.web.keys import (
    ADAPTERS,
    ADMIN_GUARD,
    AUTH_FAILURES,
    FOLLOWER,
    GATEWAY,
    KEEPER,
    KEY_SYNC,
    MASKER,
    POOL,
    PROBER,
    SUMMARY,
)


@final
class AppReload:
    """Prepares `app` for a new configuration, then switches every component to it at once."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def prepare_reload(self, new: ConfigAccessor, diff: ConfigDiff) -> Commit:
        """Build the adapters of added and changed instances, then sync their keys (see the module)."""
        app = self._app
        masker = app[MASKER]
        masker.add(new.secrets())
        kept = app.get(ADAPTERS, {})
        adapters: dict[str, ProviderAdapter] = {}
        for provider in new.enabled_providers():
            adapter = kept.get(provider.name)
            if adapter is None or provider.name in diff.changed:
                adapter = build_adapter(provider, masker=masker)
            adapters[provider.name] = adapter
        # Last, as nothing may refuse the reload once the keys are merged into the pool.
        missing: dict[str, dict[str, IdSet]] = {}
        key_sync = app.get(KEY_SYNC)
        if key_sync is not None:
            missing = await key_sync.prepare(new, [*diff.added, *diff.changed])

        def commit() -> Awaitable[None] | None:
            return self._switch(new, adapters, missing)

        return commit

    def _switch(
        self,
        new: ConfigAccessor,
        adapters: dict[str, ProviderAdapter],
        missing: dict[str, dict[str, IdSet]],
    ) -> Awaitable[None] | None:
        app = self._app
        if ADAPTERS in app:  # the same dict the keeper and the key admin read
            app[ADAPTERS].clear()
            app[ADAPTERS].update(adapters)
        if POOL in app:
            app[POOL].use(new)
        if GATEWAY in app:
            app[GATEWAY].use(new, adapters)
        if PROBER in app:
            app[PROBER].use(new, adapters)
        if KEEPER in app:
            app[KEEPER].use(new, adapters)
        if FOLLOWER in app:
            app[FOLLOWER].use([p.name for p in new.enabled_providers()])
        if SUMMARY in app:
            app[SUMMARY].use(new)
        if ADMIN_GUARD in app:
            app[ADMIN_GUARD].use(new.server.admin_token)
        app[AUTH_FAILURES].use(new.server.auth_failures_per_minute)
        if KEY_SYNC in app:  # switches at once; the keys that left go in slices afterwards
            return app[KEY_SYNC].adopt(new, missing)
        return None
