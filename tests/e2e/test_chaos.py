"""Chaos: SDK traffic while the supervisor and its workers are killed or stopped at random moments.

Each round starts `serve --workers 2` (keeper on) on the same database, runs
OpenAI-SDK traffic and `/-/events` listeners against it, changes the key file
once the gateway answers, and at a random moment (start-up included) hits one
process: SIGKILL or SIGTERM, to the supervisor or to a worker. It then waits
for every process to be gone and holds the store against what the gateway said:

- no process of the gateway is left (and, on PostgreSQL, no connection);
- for every (key, model) the store holds the status `/-/events` announced last;
- every key change the gateway acknowledged (every worker's `/-/status`
  showing the key file's keys) is in the store.

Each key behaves the same way all along (valid, invalid, out of quota), so
every announcement of a key names the status it ends in: a store without it
lost a write. The seed is printed at the start and in every failure; set
LLMGATEWAY_CHAOS_SEED to replay a run, LLMGATEWAY_CHAOS_ROUNDS to change the
number of rounds per engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import aiohttp
import asyncpg
import openai
import pytest

from llmgateway.store.postgres import PostgresStore
from llmgateway.store.sqlite import SqliteStore
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import (
    INSTANCES,
    MODELS,
    OPENAI,
    GatewayConfig,
    ServedGateway,
    SpawnGateway,
    openai_client,
)
from tests.support.processes import gateway_pids, workers_of

pytestmark = pytest.mark.slow

SEED_ENV: Final = "LLMGATEWAY_CHAOS_SEED"
ROUNDS_ENV: Final = "LLMGATEWAY_CHAOS_ROUNDS"
ROUNDS: Final = 10
"""Rounds per engine (about 6 s each on a busy two-core machine)."""
SHUTDOWN_TIMEOUT: Final = 2.0
EXIT_BOUND: Final = SHUTDOWN_TIMEOUT + 5.0 + 8.0
"""Seconds the processes get to be gone after the fault: the promise plus slack for a busy host."""
EARLIEST_FAULT: Final = 0.2
"""Seconds after the spawn before which no fault comes: the interpreter itself is starting."""
LATEST_FAULT: Final = 4.5
"""The fault lands uniformly within this many seconds of the start (start-up is about 2 s)."""
BEHAVIOURS: Final = (
    (Behaviour.OK, "valid", 3),
    (Behaviour.INVALID_KEY, "invalid_key", 1),
    (Behaviour.NO_QUOTA, "no_quota", 1),
)
"""How new keys behave, the status each ends in, and the weight of each."""
PG_ADMIN: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
EVENT_PATIENCE: Final = 2.0
"""Seconds past LATEST_FAULT a round waits for its announcements before it hits anyway."""
ON_EVENT_SHARE: Final = 0.4
"""The share of rounds whose fault is a worker's SIGKILL right after an announcement."""
CLIENTS: Final = 3
LISTENERS: Final = 3


def _seed() -> int:
    text = os.environ.get(SEED_ENV)
    return int(text) if text else random.SystemRandom().randrange(2**32)


def _masked(key: str) -> str:
    return key[:4] + "..." + key[-4:]


@dataclass
class Ledger:
    """What the gateway said during the whole run."""

    last_announced: dict[tuple[str, str], tuple[datetime, str]] = field(default_factory=dict)
    """(masked key, model) -> when it was observed and the `new` status, of the newest
    `/-/events` announcement (workers' streams arrive in any order: `at` orders them)."""
    events: int = 0
    requests_ok: int = 0
    requests_failed: int = 0


@dataclass
class Keys:
    """The key file's keys, how each behaves, and the change not yet acknowledged."""

    behaviour: dict[str, tuple[Behaviour, str]] = field(default_factory=dict)
    current: list[str] = field(default_factory=list)
    pending: frozenset[str] | None = None
    made: int = 0
    history: list[frozenset[str]] = field(default_factory=lambda: [frozenset()])
    """Every key set the store may have held, in order: none, then each key file written."""
    acknowledged: int | None = None
    """The index in `history` of the key set last acknowledged by every worker."""

    def may_hold(self) -> list[frozenset[str]]:
        """The key sets the store may hold now: the acknowledged one or a later one."""
        return self.history[self.acknowledged or 0 :]

    def new_key(self, rng: random.Random, fake: FakeUpstream) -> str:
        self.made += 1
        key = f"ck{self.made % 100:02d}-chaos-0123456789-{self.made:04d}"
        weights = [weight for _, _, weight in BEHAVIOURS]
        behaviour, status, _ = rng.choices(BEHAVIOURS, weights)[0]
        fake.set_key(key, behaviour)
        self.behaviour[key] = (behaviour, status)
        return key


class Chaos:
    """One engine's run: the configuration, the fake, the rounds and their checks."""

    def __init__(
        self,
        engine: str,
        config: GatewayConfig,
        fake: FakeUpstream,
        spawn: SpawnGateway,
        seed: int,
        database: str,
    ) -> None:
        self.engine = engine
        self.config = config
        self.fake = fake
        self.spawn = spawn
        self.seed = seed
        self.rng = random.Random(seed)
        self.database = database
        self.ledger = Ledger()
        self.keys = Keys()
        self.config_path = config.tmp_path / "providers.yaml"
        self.round = 0
        self.log: list[str] = []
        self.heard = asyncio.Event()
        self.heard_this_round = 0
        self.after_events = 0

    def fail(self, problem: str) -> None:
        pytest.fail(
            f"{problem}\n[chaos {self.engine}: seed={self.seed} round={self.round}; "
            f"replay with {SEED_ENV}={self.seed}]\n"
            + "\n".join(self.log[-40:])
            + "\n-- warnings and errors of every round --\n"
            + "\n".join(self._troubles()[-60:])
            + f"\n-- the end of round {self.round}'s log --\n"
            + self._round_log(self.round)[-6000:]
        )

    def _round_log(self, number: int) -> str:
        path = self.config.tmp_path / f"round-{number:02d}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def _troubles(self) -> list[str]:
        return [
            f"round {number}: {line}"
            for number in range(1, self.round + 1)
            for line in self._round_log(number).splitlines()
            if "[warning" in line or "[error" in line or "Traceback" in line
        ]

    def note(self, line: str) -> None:
        self.log.append(f"round {self.round}: {line}")

    # -- the key file -------------------------------------------------------------------

    def initial_keys(self) -> None:
        anchor = self.keys.new_key(self.rng, self.fake)
        self.fake.set_key(anchor)  # one key always serves
        self.keys.behaviour[anchor] = (Behaviour.OK, "valid")
        self.keys.current = [anchor] + [self.keys.new_key(self.rng, self.fake) for _ in range(3)]
        self._write_keys()

    def change_keys(self) -> frozenset[str]:
        """Add two to four new keys, remove one or two (never the first); returns the new set."""
        for _ in range(self.rng.randint(1, 2)):
            removable = self.keys.current[1:]
            if removable:
                self.keys.current.remove(self.rng.choice(removable))
        for _ in range(self.rng.randint(2, 4)):
            self.keys.current.append(self.keys.new_key(self.rng, self.fake))
        self._write_keys()
        return frozenset(self.keys.current)

    def _write_keys(self) -> None:
        self.config.keys[OPENAI] = list(self.keys.current)
        self.config.write()
        self.keys.history.append(frozenset(self.keys.current))

    # -- one round ----------------------------------------------------------------------

    async def run_round(self) -> None:
        self.round += 1
        self.heard_this_round = 0
        self.heard = asyncio.Event()
        delay = self.rng.uniform(EARLIEST_FAULT, LATEST_FAULT)
        if self.rng.random() < ON_EVENT_SHARE:
            # Right after an announcement: the moment a change not yet stored would be lost.
            target, signum = "worker", signal.SIGKILL
            self.after_events = self.rng.randint(1, 3)
            self.note(f"SIGKILL to a worker after event {self.after_events} (else {delay:.2f} s)")
        else:
            target = self.rng.choice(["supervisor", "worker"])
            signum = self.rng.choice([signal.SIGKILL, signal.SIGTERM])
            self.after_events = 0
            self.note(f"{signum.name} to the {target} {delay:.2f} s after the start")
        served = await self.spawn(self.config, log_name=f"round-{self.round:02d}.log")
        stop = asyncio.Event()
        tasks = [asyncio.create_task(self._client(served, stop)) for _ in range(CLIENTS)]
        tasks += [asyncio.create_task(self._listener(served, stop)) for _ in range(LISTENERS)]
        tasks.append(asyncio.create_task(self._key_change(served, stop)))
        try:
            hit = await self._fault(served, target, signum, delay)
            code = await self._gone(served)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.note(
            f"hit pid {hit}, serve exited {code}; {self.heard_this_round} events heard, "
            f"{self.ledger.requests_ok} requests served so far"
        )
        expected = {
            ("supervisor", signal.SIGTERM): 0,
            ("supervisor", signal.SIGKILL): -signal.SIGKILL,
            ("worker", signal.SIGTERM): 1,
            ("worker", signal.SIGKILL): 1,
        }[(target, signum)]
        if code != expected:
            self.fail(f"serve exited {code}, expected {expected}:\n{served.output()[-4000:]}")
        await self._check_store()

    async def _fault(
        self, served: ServedGateway, target: str, signum: signal.Signals, delay: float
    ) -> int:
        if self.after_events:
            with contextlib.suppress(TimeoutError):  # too few announcements: hit anyway
                async with asyncio.timeout(LATEST_FAULT + EVENT_PATIENCE):
                    await self.heard.wait()
        else:
            await asyncio.sleep(delay)
        pid = served.process.pid
        if target == "worker":
            deadline = time.monotonic() + EXIT_BOUND
            while not (workers := workers_of(pid, self.config_path)):
                if served.process.returncode is not None or time.monotonic() > deadline:
                    self.fail("no worker started")
                await asyncio.sleep(0.01)
            pid = self.rng.choice(workers)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        return pid

    async def _gone(self, served: ServedGateway) -> int:
        try:
            code = await asyncio.wait_for(served.process.wait(), timeout=EXIT_BOUND)
        except TimeoutError:
            self.fail(f"serve still running {EXIT_BOUND} s after the fault:\n{served.output()}")
        deadline = time.monotonic() + EXIT_BOUND
        while left := gateway_pids(self.config_path):
            if time.monotonic() > deadline:
                self.fail(f"processes left behind: {left}\n{served.output()[-4000:]}")
            await asyncio.sleep(0.02)
        if self.engine == "postgres":
            await self._no_connections()
        return code

    async def _no_connections(self) -> None:
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            deadline = time.monotonic() + EXIT_BOUND
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
            while left := await admin.fetchval(query, self.database):
                if time.monotonic() > deadline:
                    self.fail(f"{left} database connections left behind")
                await asyncio.sleep(0.05)
        finally:
            await admin.close()

    # -- what runs during a round ---------------------------------------------------------

    async def _client(self, served: ServedGateway, stop: asyncio.Event) -> None:
        async with openai_client(served.url) as client:
            while not stop.is_set():
                try:
                    if self.rng.random() < 0.3:
                        stream = await client.chat.completions.create(
                            model=MODELS[OPENAI],
                            messages=[{"role": "user", "content": "hi"}],
                            stream=True,
                            extra_headers={"Connection": "close"},
                        )
                        async for _ in stream:
                            pass
                    else:
                        await client.chat.completions.create(
                            model=MODELS[OPENAI],
                            messages=[{"role": "user", "content": "hi"}],
                            extra_headers={"Connection": "close"},
                        )
                    self.ledger.requests_ok += 1
                except (openai.APIError, aiohttp.ClientError, OSError):
                    self.ledger.requests_failed += 1
                    await asyncio.sleep(0.05)

    async def _listener(self, served: ServedGateway, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not stop.is_set():
                try:
                    async with session.get(served.url + "/-/events") as response:
                        if response.status != 200:
                            await asyncio.sleep(0.05)
                            continue
                        async for line in response.content:
                            self._heard(line)
                except (TimeoutError, aiohttp.ClientError, OSError):
                    pass
                await asyncio.sleep(0.02)

    def _heard(self, line: bytes) -> None:
        if not line.startswith(b"data: "):
            return
        event: dict[str, Any] = json.loads(line[len(b"data: ") :])
        if "new" in event and event.get("instance") == OPENAI:
            at = datetime.fromisoformat(event["at"])
            ledger_key = (event["key"], event["model"])
            known = self.ledger.last_announced.get(ledger_key)
            if known is None or at >= known[0]:
                self.ledger.last_announced[ledger_key] = (at, event["new"])
            self.ledger.events += 1
            self.heard_this_round += 1
            if self.heard_this_round >= self.after_events:
                self.heard.set()

    async def _key_change(self, served: ServedGateway, stop: asyncio.Event) -> None:
        """Once the gateway answers, change the key file (unless a change is still pending)."""
        if self.keys.pending is None:
            while not stop.is_set():
                if await self._statuses(served):
                    self.keys.pending = self.change_keys()
                    self.note(f"key file changed: {len(self.keys.pending)} keys")
                    break
                await asyncio.sleep(0.05)
        wanted = self.keys.pending
        if wanted is None:
            return
        masks = {_masked(k) for k in wanted}
        seen: set[int] = set()
        while not stop.is_set():
            document = await self._statuses(served)
            if document is not None:
                pid = document["process"]["pid"]
                shown = {k["key"] for k in document["providers"][OPENAI]["keys"]}
                (seen.add if shown == masks else seen.discard)(pid)
                if len(seen) == 2:
                    self.keys.acknowledged = len(self.keys.history) - 1
                    self.keys.pending = None
                    self.note("key change acknowledged by both workers")
                    return
            await asyncio.sleep(0.05)

    async def _statuses(self, served: ServedGateway) -> dict[str, Any] | None:
        connector = aiohttp.TCPConnector(force_close=True)
        try:
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.get(served.url + "/-/status?keys=1") as response,
            ):
                if response.status != 200:
                    return None
                document: dict[str, Any] = await response.json()
                return document
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    # -- the checks -------------------------------------------------------------------

    async def _check_store(self) -> None:
        store: SqliteStore | PostgresStore
        if self.engine == "sqlite":
            store = SqliteStore(self.config.tmp_path / "data" / "llmgateway.db")
        else:
            store = PostgresStore(
                f"postgresql://postgres@127.0.0.1:5432/{self.database}", min_size=1, max_size=1
            )
        try:
            await store.open()
            records = await store.load_records(OPENAI)
        finally:
            await store.close()
        stored = {(_masked(r.key), r.model): r for r in records}
        for (mask, model), (at, announced) in self.ledger.last_announced.items():
            record = stored.get((mask, model))
            if record is None or record.status.value == announced:
                continue
            # Another process may have observed a newer status that this stream's worker
            # never heard of before it died: the store keeps the newest observation.
            if record.last_checked_at is not None and record.last_checked_at > at:
                continue
            self.fail(
                f"{mask}/{model}: /-/events last announced {announced} (observed {at}), "
                f"the store holds {record.status.value} (observed {record.last_checked_at})"
            )
        keys = frozenset(r.key for r in records)
        allowed = self.keys.may_hold()
        if keys not in allowed:
            acknowledged = allowed[0] if self.keys.acknowledged is not None else frozenset()
            self.fail(
                f"the store's keys {sorted(map(_masked, keys))} are not the acknowledged "
                f"{sorted(map(_masked, acknowledged))} nor a later key file"
            )


@contextlib.asynccontextmanager
async def _database(engine: str, config: GatewayConfig) -> AsyncIterator[str]:
    if engine == "sqlite":
        yield ""
        return
    name = f"llmgw_chaos_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        config.set("database.url", f"postgresql://postgres@127.0.0.1:5432/{name}")
        config.set("database.pool_max_size", 3)
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _configure(config: GatewayConfig) -> None:
    config.set("server.workers", 2)
    config.set("server.shutdown_timeout", f"{SHUTDOWN_TIMEOUT}s")
    config.set("keeper.enabled", True)
    config.set("keeper.check_interval", "1s")
    config.set("keeper.keys_sync_interval", "1s")
    config.set("logging.level", "info")
    for instance in INSTANCES:
        section = config.provider(instance)
        section["timeouts"] = {"connect": "1s", "first_byte": "3s", "idle": "2s", "total": "10s"}
        section["health_policy"] = {"verification_attempts": 1}


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_chaos_leaves_no_process_and_a_store_matching_what_was_announced(
    engine: str,
    fake_upstream: FakeUpstream,
    gateway_config: GatewayConfig,
    spawn_gateway: SpawnGateway,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Rounds of random SIGKILL/SIGTERM under traffic: nothing left, nothing announced lost."""
    seed = _seed()
    rounds = int(os.environ.get(ROUNDS_ENV, ROUNDS))
    with capsys.disabled():
        print(f"\n[chaos {engine}] seed={seed} rounds={rounds} ({SEED_ENV} replays it)")
    _configure(gateway_config)
    async with _database(engine, gateway_config) as database:
        chaos = Chaos(engine, gateway_config, fake_upstream, spawn_gateway, seed, database)
        chaos.initial_keys()
        for _ in range(rounds):
            await chaos.run_round()
        ledger = chaos.ledger
        with capsys.disabled():
            print(
                f"[chaos {engine}] seed={seed}: {rounds} rounds, {ledger.requests_ok} requests "
                f"served ({ledger.requests_failed} refused or cut during faults), "
                f"{ledger.events} events, {chaos.keys.made} keys made"
            )
        if ledger.requests_ok == 0 or ledger.events == 0:
            chaos.fail("no traffic was served or no event announced: the run proved nothing")
