"""The application's part of a reload: what each component needs to follow a new configuration.

`AppReload` is the one `Reconfigurable` of the application (see
`llmgateway.config.live`). Preparing does what may wait or fail: the new
tokens and keys are registered with the masker, the provider rows are
written, and the keys of every added or changed instance are synced into
the store and read back (`KeySync.prepare`); adapters are built for those
instances. Putting it into effect neither waits nor fails, so no request
ever sees half of a reload: the pool follows the new configuration, removed
or disabled instances leave it, added and changed ones are reconciled with
their stored keys (a kept key keeps its status, cool-down and schedule),
and the gateway, keeper, follower, summary, admin guard and the failed-token
limit switch over. A request in flight keeps the route it started with.
"""

from __future__ import annotations

from typing import final

from aiohttp import web

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.diff import ConfigDiff
from llmgateway.config.live import Commit
from llmgateway.core.models import KeyRecord
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
    SUMMARY,
)


@final
class AppReload:
    """Prepares `app` for a new configuration, then switches every component to it at once."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def prepare_reload(self, new: ConfigAccessor, diff: ConfigDiff) -> Commit:
        """Sync the keys of added and changed instances, build their adapters (see the module)."""
        app = self._app
        masker = app[MASKER]
        masker.add(new.secrets())
        records: dict[str, list[KeyRecord]] = {}
        key_sync = app.get(KEY_SYNC)
        if key_sync is not None:
            records = await key_sync.prepare(new, [*diff.added, *diff.changed])
        kept = app.get(ADAPTERS, {})
        adapters: dict[str, ProviderAdapter] = {}
        for provider in new.enabled_providers():
            adapter = kept.get(provider.name)
            if adapter is None or provider.name in diff.changed:
                adapter = build_adapter(provider, masker=masker)
            adapters[provider.name] = adapter

        def commit() -> None:
            self._switch(new, adapters, records)

        return commit

    def _switch(
        self,
        new: ConfigAccessor,
        adapters: dict[str, ProviderAdapter],
        records: dict[str, list[KeyRecord]],
    ) -> None:
        app = self._app
        if ADAPTERS in app:  # the same dict the keeper and the key admin read
            app[ADAPTERS].clear()
            app[ADAPTERS].update(adapters)
        if POOL in app:
            app[POOL].use(new)
        if KEY_SYNC in app:
            app[KEY_SYNC].adopt(new, records)
        if GATEWAY in app:
            app[GATEWAY].use(new, adapters)
        if KEEPER in app:
            app[KEEPER].use(new, adapters)
        if FOLLOWER in app:
            app[FOLLOWER].use([p.name for p in new.enabled_providers()])
        if SUMMARY in app:
            app[SUMMARY].use(new)
        if ADMIN_GUARD in app:
            app[ADMIN_GUARD].use(new.server.admin_token)
        app[AUTH_FAILURES].use(new.server.auth_failures_per_minute)
