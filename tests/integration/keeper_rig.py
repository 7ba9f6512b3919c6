"""A test rig for the keeper: real store, fake upstream, real adapters, injected clock and sleep.

The configuration is written as a YAML file and read by the real loader; keys
come from key files, the source of truth. `open_rig` is what the keeper test
modules' `rig` fixtures wrap.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.loader import load_config
from llmgateway.core.constants import ProviderType, Status
from llmgateway.core.masking import Masker
from llmgateway.core.models import KeyRecord
from llmgateway.keeper.keeper import Keeper, ProbeObserver, Sleep
from llmgateway.keeper.key_sync import KeySync
from llmgateway.pool.key_pool import KeyPool
from llmgateway.providers import build_adapter
from llmgateway.store.protocol import Store
from llmgateway.store.write_queue import WriteQueue
from tests.fakes.upstream import FakeUpstream

START = 1_800_000_000.0
DAY = 86400.0
MODELS = ("model-a", "model-b")


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def at(self) -> datetime:
        """The current time as an aware datetime."""
        return datetime.fromtimestamp(self.now, UTC)


class RecordingSleep:
    """The keeper's sleep: remembers each wait and only yields to the loop."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


def key_for(instance: str, label: str) -> str:
    """A recognisable key value (long enough to be masked as 4...4)."""
    return f"sk-{instance}-{label}-0123456789"


def provider_section(
    fake: FakeUpstream,
    keys_dir: Path,
    provider_type: ProviderType = ProviderType.OPENAI_LIKE,
    *,
    models: Iterable[str] = MODELS,
    shared: bool = False,
    health: Mapping[str, Any] | None = None,
    timeouts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One provider instance of `config/providers.yaml`, pointing at the fake.

    Retryable failures are recorded at once (one probe) unless `health` says otherwise.
    """
    model_names = list(models)
    return {
        "provider_type": provider_type.value,
        "api_base_url": fake.url,
        "keys_path": str(keys_dir),
        "default_model": model_names[0],
        "shared_key_status": shared,
        "models": {m: {} for m in model_names},
        "access_control": {"gateway_access_token": f"tok-{keys_dir.name}-0123456789abcdef"},
        "timeouts": {"connect": "2s", "first_byte": "5s", **(timeouts or {})},
        "health_policy": {"verification_attempts": 1, **(health or {})},
    }


class Rig:
    """Every real part the keeper works with, plus the test's handles on time."""

    def __init__(
        self, store: Store, fake: FakeUpstream, tmp_path: Path, session: aiohttp.ClientSession
    ) -> None:
        self.store = store
        self.fake = fake
        self.tmp_path = tmp_path
        self.session = session
        self.clock = FakeClock()
        self.sleep = RecordingSleep()
        self.queue: WriteQueue | None = None
        self.keeper: Keeper | None = None
        self.masker = Masker()
        self._key_sync: KeySync | None = None
        self._accessor: ConfigAccessor | None = None
        self._pool: KeyPool | None = None

    @property
    def accessor(self) -> ConfigAccessor:
        assert self._accessor is not None, "build() first"
        return self._accessor

    @property
    def key_sync(self) -> KeySync:
        """The key sync of the rig's pool (what start-up and the keeper's periodic sync run)."""
        assert self._key_sync is not None, "build() first"
        return self._key_sync

    @property
    def pool(self) -> KeyPool:
        """The live pool: the object the gateway would pick from."""
        assert self._pool is not None, "build() first"
        return self._pool

    def keys_dir(self, instance: str) -> Path:
        return self.tmp_path / "keys" / instance

    def write_keys(self, instance: str, keys: Iterable[str]) -> None:
        """Write the instance's key file (the source of truth for its keys)."""
        folder = self.keys_dir(instance)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "keys.txt").write_text("".join(f"{k}\n" for k in keys))

    def section(
        self, instance: str, provider_type: ProviderType = ProviderType.OPENAI_LIKE, **options: Any
    ) -> dict[str, Any]:
        """`provider_section` for `instance`, its keys in this rig's key folder."""
        return provider_section(self.fake, self.keys_dir(instance), provider_type, **options)

    async def build(
        self, providers: Mapping[str, Mapping[str, Any]], keeper: Mapping[str, Any] | None = None
    ) -> Keeper:
        """Load the config from a YAML file and wire pool, write queue, adapters and keeper."""
        for name in providers:
            self.keys_dir(name).mkdir(parents=True, exist_ok=True)
        document = {
            "keeper": {"max_concurrent_probes": 10, **(keeper or {})},
            "providers": dict(providers),
        }
        path = self.tmp_path / "providers.yaml"
        path.write_text(json.dumps(document))  # JSON is YAML
        self._accessor = ConfigAccessor(load_config(path, env={}))
        enabled = self.accessor.enabled_providers()
        await self.store.sync_providers([(p.name, p.provider_type) for p in enabled])
        self.queue = WriteQueue(self.store)
        self._pool = KeyPool(self.accessor, sink=self.queue.put, clock=self.clock)
        self._key_sync = self.new_key_sync(self._pool)
        self.keeper = self.new_keeper()
        return self.keeper

    def new_key_sync(self, pool: KeyPool, store: Store | None = None) -> KeySync:
        """A key sync of this rig's configuration into `pool` (and `store`, by default the rig's)."""
        return KeySync(self.accessor, store or self.store, pool, self.masker, self.clock)

    def new_keeper(
        self,
        pool: KeyPool | None = None,
        *,
        store: Store | None = None,
        sleep: Sleep | None = None,
        with_adapters: bool = True,
        observer: ProbeObserver | None = None,
    ) -> Keeper:
        """A keeper on this rig's parts; each can be swapped for the test's own."""
        adapters = (
            {p.name: build_adapter(p, clock=self.clock) for p in self.accessor.enabled_providers()}
            if with_adapters
            else {}
        )
        pool = pool or self.pool
        key_sync = self.key_sync if pool is self.pool else self.new_key_sync(pool, store)
        return Keeper(
            self.accessor,
            store or self.store,
            pool,
            self.session,
            adapters,
            key_sync,
            self.clock,
            sleep or self.sleep,
            observer=observer,
        )

    async def round(self) -> int:
        """Flush what the last round queued, then run one keeper round."""
        assert self.queue is not None and self.keeper is not None
        await self.queue.flush()
        return await self.keeper.run_once()

    def status(self, instance: str, label: str, model: str) -> Status:
        """The live status of key `label` of `instance` for `model`."""
        return self.record(instance, label, model).status

    def record(self, instance: str, label: str, model: str) -> KeyRecord:
        """The live record of key `label` of `instance` for `model`."""
        key = key_for(instance, label)
        found = [r for r in self.pool.records(instance) if r.key == key and r.model == model]
        assert len(found) == 1, f"no single record for {label}/{model}"
        return found[0]


@asynccontextmanager
async def open_rig(store: Store, fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[Rig]:
    """A rig with its own ClientSession; on exit the keeper is stopped and the queue drained."""
    async with aiohttp.ClientSession() as session:
        rig = Rig(store, fake, tmp_path, session)
        try:
            yield rig
        finally:
            if rig.keeper is not None:
                await rig.keeper.stop(1.0)
            if rig.queue is not None:
                await rig.queue.close(5.0)
