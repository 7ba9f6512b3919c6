"""The store suite: every test runs against SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from llmgateway.core.constants import ALL_MODELS_MARKER, ProviderType, Status
from llmgateway.core.errors import SchemaTooNew, StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.protocol import KeySyncReport
from llmgateway.store.sqlite import SqliteStore
from tests.support.databases import Database

type AnyStore = SqliteStore | PostgresStore

NOW = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


async def add_instance(store: AnyStore, name: str = "openai-main") -> str:
    await store.sync_providers([(name, ProviderType.OPENAI_LIKE)])
    return name


def by_key_model(records: list[KeyRecord]) -> dict[tuple[str, str], KeyRecord]:
    return {(r.key, r.model): r for r in records}


class TestMigrations:
    async def test_opening_twice_applies_each_migration_once(self, database: Database) -> None:
        """A second open of a migrated database applies nothing and records nothing new."""
        first = database.new_store()
        await first.open()
        applied = await database.applied_versions()
        await first.close()
        second = database.new_store()
        await second.open()
        try:
            assert await database.applied_versions() == applied
            assert applied[0] == 1
            assert applied == sorted(set(applied))
        finally:
            await second.close()

    async def test_database_newer_than_the_code_is_refused(self, database: Database) -> None:
        """A schema_migrations row above the newest known file raises SchemaTooNew naming both."""
        first = database.new_store()
        await first.open()
        await first.close()
        await database.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) "
            "VALUES (9999, 'from_the_future', CURRENT_TIMESTAMP)"
        )
        with pytest.raises(SchemaTooNew, match="9999"):
            await database.new_store().open()

    async def test_store_not_open_raises_store_error(self, database: Database) -> None:
        """Using a store that is not open is a StoreError, not an AttributeError."""
        with pytest.raises(StoreError, match="not open"):
            await database.new_store().ping()


class TestSyncKeys:
    async def test_ten_thousand_keys_then_exact_resync(self, store: AnyStore) -> None:
        """A re-sync with 100 keys removed and 100 added leaves exactly the new set, others untouched."""
        name = await add_instance(store)
        keys = [f"sk-key-{i:06d}" for i in range(10_000)]
        report = await store.sync_keys(name, keys, ["gpt-4o-mini"], NOW)
        assert report == KeySyncReport(added=10_000, removed=0, total=10_000)
        before = {r.key: r for r in await store.load_records(name)}
        assert set(before) == set(keys)
        assert {r.status for r in before.values()} == {Status.UNTESTED}
        assert {r.next_check_at for r in before.values()} == {NOW}

        kept_key = keys[5000]
        checked = replace(before[kept_key], status=Status.VALID, last_checked_at=NOW)
        await store.record([checked])
        new_keys = keys[100:] + [f"sk-new-{i:06d}" for i in range(100)]
        later = NOW + timedelta(hours=1)
        report = await store.sync_keys(name, new_keys, ["gpt-4o-mini"], later)

        assert report == KeySyncReport(added=100, removed=100, total=10_000)
        after = {r.key: r for r in await store.load_records(name)}
        assert set(after) == set(new_keys)
        assert after[kept_key] == checked
        assert after["sk-new-000000"].status is Status.UNTESTED
        assert after["sk-new-000000"].next_check_at == later
        assert len({r.key_id for r in after.values()}) == 10_000

    async def test_resync_without_change_changes_nothing(self, store: AnyStore) -> None:
        """Syncing the same keys again reports nothing added or removed and keeps the ids."""
        name = await add_instance(store)
        await store.sync_keys(name, ["k-1", "k-2"], ["m"], NOW)
        first = await store.load_records(name)
        report = await store.sync_keys(name, ["k-1", "k-2"], ["m"], NOW + timedelta(days=1))
        assert report == KeySyncReport(added=0, removed=0, total=2)
        assert await store.load_records(name) == first

    async def test_duplicate_and_blank_keys_are_stored_once(self, store: AnyStore) -> None:
        """Repeated keys in one sync become one stored key; blank ones are ignored."""
        name = await add_instance(store)
        report = await store.sync_keys(name, ["k-1", "", "k-1", "k-2"], ["m"], NOW)
        assert report == KeySyncReport(added=2, removed=0, total=2)
        assert sorted(r.key for r in await store.load_records(name)) == ["k-1", "k-2"]

    async def test_shared_status_has_one_row_per_key(self, store: AnyStore) -> None:
        """With the __ALL_MODELS__ marker each key has exactly one status row."""
        name = await add_instance(store)
        await store.sync_keys(name, ["k-1", "k-2"], [ALL_MODELS_MARKER], NOW)
        rows = await store.load_records(name)
        assert sorted((r.key, r.model) for r in rows) == [
            ("k-1", ALL_MODELS_MARKER),
            ("k-2", ALL_MODELS_MARKER),
        ]

    async def test_per_model_status_has_one_row_per_key_and_model(self, store: AnyStore) -> None:
        """Without sharing each key has one untested row per configured model."""
        name = await add_instance(store)
        await store.sync_keys(name, ["k-1", "k-2"], ["m-a", "m-b"], NOW)
        rows = await store.load_records(name)
        assert sorted((r.key, r.model) for r in rows) == [
            ("k-1", "m-a"),
            ("k-1", "m-b"),
            ("k-2", "m-a"),
            ("k-2", "m-b"),
        ]

    async def test_models_added_and_removed_gain_and_lose_rows(self, store: AnyStore) -> None:
        """A model dropped from config loses its rows, a new one gets untested rows, others keep theirs."""
        name = await add_instance(store)
        await store.sync_keys(name, ["k-1"], ["m-a", "m-b"], NOW)
        rows = by_key_model(await store.load_records(name))
        valid = replace(rows[("k-1", "m-a")], status=Status.VALID, status_code=200)
        await store.record([valid])

        later = NOW + timedelta(minutes=5)
        report = await store.sync_keys(name, ["k-1"], ["m-a", "m-c"], later)

        assert report == KeySyncReport(added=0, removed=0, total=1)
        rows = by_key_model(await store.load_records(name))
        assert set(rows) == {("k-1", "m-a"), ("k-1", "m-c")}
        assert rows[("k-1", "m-a")] == valid
        assert rows[("k-1", "m-c")].status is Status.UNTESTED
        assert rows[("k-1", "m-c")].next_check_at == later

    async def test_instances_are_kept_apart(self, store: AnyStore) -> None:
        """The same key in two instances is two keys; syncing one instance leaves the other alone."""
        a = await add_instance(store, "inst-a")
        b = await add_instance(store, "inst-b")
        await store.sync_keys(a, ["shared", "a-only"], ["m"], NOW)
        await store.sync_keys(b, ["shared"], ["m"], NOW)
        await store.sync_keys(a, [], ["m"], NOW)
        assert await store.load_records(a) == []
        assert [(r.instance, r.key) for r in await store.load_records()] == [("inst-b", "shared")]

    async def test_unknown_instance_is_a_store_error(self, store: AnyStore) -> None:
        """Syncing keys of an instance without a provider row raises StoreError naming it."""
        with pytest.raises(StoreError, match="nobody"):
            await store.sync_keys("nobody", ["k"], ["m"], NOW)

    async def test_provider_type_is_updated(self, store: AnyStore, database: Database) -> None:
        """sync_providers twice with a changed type keeps one row and the instance's keys."""
        name = await add_instance(store)
        await store.sync_keys(name, ["k"], ["m"], NOW)
        await store.sync_providers([(name, ProviderType.ANTHROPIC)])
        providers = await database.fetch("SELECT name, provider_type FROM providers")
        assert providers == [(name, ProviderType.ANTHROPIC.value)]
        assert [r.key for r in await store.load_records(name)] == ["k"]


class TestLeaseDue:
    async def test_untested_first_then_oldest_and_stopped_skipped(self, store: AnyStore) -> None:
        """Due rows come untested first, then by next_check_at; NULL and future rows are skipped."""
        name = await add_instance(store)
        await store.sync_keys(name, ["old", "new", "stopped", "future", "untested"], ["m"], NOW)
        rows = {r.key: r for r in await store.load_records(name)}
        await store.record(
            [
                replace(rows["old"], status=Status.VALID, next_check_at=NOW - timedelta(hours=2)),
                replace(
                    rows["new"], status=Status.NO_QUOTA, next_check_at=NOW - timedelta(hours=1)
                ),
                replace(rows["stopped"], status=Status.INVALID_KEY, next_check_at=None),
                replace(
                    rows["future"], status=Status.VALID, next_check_at=NOW + timedelta(hours=1)
                ),
            ]
        )
        first = await store.lease_due([name], NOW, 2, "a", 60.0)
        assert [r.key for r in first] == ["untested", "old"]
        assert [r.key for r in await store.lease_due([name], NOW, 10, "b", 60.0)] == ["new"]

    async def test_only_the_given_instances(self, store: AnyStore) -> None:
        """Rows of instances not asked for are never returned."""
        a = await add_instance(store, "inst-a")
        b = await add_instance(store, "inst-b")
        await store.sync_keys(a, ["ka"], ["m"], NOW)
        await store.sync_keys(b, ["kb"], ["m"], NOW)
        assert [r.key for r in await store.lease_due([b], NOW, 10, "o", 60.0)] == ["kb"]
        assert await store.lease_due([], NOW, 10, "o", 60.0) == []
        assert await store.lease_due(["missing"], NOW, 10, "o", 60.0) == []


class TestRecord:
    async def test_every_field_round_trips(self, store: AnyStore) -> None:
        """Each status field written comes back equal, times as UTC-aware datetimes."""
        name = await add_instance(store)
        await store.sync_keys(name, ["sk-round-trip-key"], ["m"], NOW)
        (row,) = await store.load_records(name)
        plus2 = timezone(timedelta(hours=2))
        written = replace(
            row,
            status=Status.RATE_LIMITED,
            last_checked_at=datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=UTC),
            next_check_at=datetime(2026, 2, 3, 7, 5, 6, 999999, tzinfo=plus2),
            failing_since=datetime(2025, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
            consecutive_failures=7,
            status_code=429,
            message="Rate limit reached — retry later ✓",
            response_ms=1234,
            cooldown_until=datetime(2026, 2, 3, 4, 6, 0, tzinfo=UTC),
        )
        await store.record([written])
        (loaded,) = await store.load_records(name)
        assert loaded == written
        assert loaded.next_check_at == datetime(2026, 2, 3, 5, 5, 6, 999999, tzinfo=UTC)
        for value in (loaded.last_checked_at, loaded.next_check_at, loaded.cooldown_until):
            assert value is not None
            assert value.utcoffset() == timedelta(0)

    async def test_last_record_of_a_batch_wins(self, store: AnyStore) -> None:
        """Two records of the same row in one batch leave the later one stored."""
        name = await add_instance(store)
        await store.sync_keys(name, ["k"], ["m"], NOW)
        (row,) = await store.load_records(name)
        await store.record([replace(row, status=Status.TIMEOUT), replace(row, status=Status.VALID)])
        (loaded,) = await store.load_records(name)
        assert loaded.status is Status.VALID

    async def test_rows_of_removed_keys_are_skipped(self, store: AnyStore) -> None:
        """A record of a key removed meanwhile is ignored; the rest of the batch is written."""
        name = await add_instance(store)
        await store.sync_keys(name, ["gone", "kept"], ["m"], NOW)
        rows = {r.key: r for r in await store.load_records(name)}
        await store.sync_keys(name, ["kept"], ["m"], NOW)
        await store.record(
            [
                replace(rows["gone"], status=Status.VALID),
                replace(rows["kept"], status=Status.VALID),
            ]
        )
        assert [(r.key, r.status) for r in await store.load_records(name)] == [
            ("kept", Status.VALID)
        ]

    async def test_concurrent_writers_lose_no_update(self, database: Database) -> None:
        """Two stores on one database writing interleaved batches leave every update stored."""
        first, second = database.new_store(), database.new_store()
        await first.open()
        await second.open()
        try:
            name = await add_instance(first)
            keys = [f"k-{i:04d}" for i in range(400)]
            await first.sync_keys(name, keys, ["m-a", "m-b"], NOW)
            rows = await first.load_records(name)

            def batch(part: list[KeyRecord], code: int) -> list[KeyRecord]:
                return [replace(r, status=Status.VALID, status_code=code) for r in part]

            chunks = [rows[i : i + 50] for i in range(0, len(rows), 50)]
            writes = [
                (first if i % 2 else second).record(batch(chunk, 200 + i))
                for i, chunk in enumerate(chunks)
            ]
            writes.append(first.sync_keys(name, keys, ["m-a", "m-b"], NOW))
            await asyncio.gather(*writes)

            loaded = await second.load_records(name)
            assert len(loaded) == 800
            expected = {(r.key_id, r.model): 200 + i for i, c in enumerate(chunks) for r in c}
            assert {(r.key_id, r.model): r.status_code for r in loaded} == expected
            assert {r.status for r in loaded} == {Status.VALID}
        finally:
            await first.close()
            await second.close()


class TestPing:
    async def test_ping_answers(self, store: AnyStore) -> None:
        """ping returns on an open store and fails with StoreError after close."""
        await store.ping()
        await store.close()
        with pytest.raises(StoreError):
            await store.ping()


async def test_an_older_status_never_replaces_a_newer_one(store: AnyStore) -> None:
    """Newest wins: a record observed before the stored one (a late queue) is not written."""
    await store.sync_providers([("p", ProviderType.OPENAI_LIKE)])
    await store.sync_keys("p", ["sk-newest-wins-0001"], ["m"], NOW)
    (row,) = await store.load_records()
    confirmed = replace(row, status=Status.NO_QUOTA, last_checked_at=NOW + timedelta(seconds=20))
    suspected = replace(row, status=Status.VERIFYING, last_checked_at=NOW + timedelta(seconds=5))
    await store.record([confirmed])
    await store.record([suspected])
    (stored,) = await store.load_records()
    assert stored.status is Status.NO_QUOTA
