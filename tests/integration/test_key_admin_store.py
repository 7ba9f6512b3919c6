"""The key admin's store operations on SQLite and PostgreSQL: sources, listing, bulk edits, jobs."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from llmgateway.core.constants import ProviderType, Status
from llmgateway.core.errors import StoreError
from llmgateway.store.key_admin import (
    INLINE_SOURCE,
    HistoryEntry,
    JobState,
    KeyFilter,
    KeySource,
    StoredKey,
    UsageDelta,
)
from llmgateway.store.key_codec import PLAIN
from llmgateway.store.key_reads import KEYS_PER_FETCH
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.rows import RECORDS_ON_THREAD
from llmgateway.store.sqlite import SqliteStore

type AnyStore = SqliteStore | PostgresStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MODELS = ["gpt", "mini"]
FILE_A = "keys/openai/a.txt"
FILE_B = "keys/openai/b.txt"


def _key(name: str) -> str:
    return f"sk-test-{name:0>24}"


async def _instance(store: AnyStore, name: str = "openai") -> None:
    await store.sync_providers([(name, ProviderType.OPENAI_LIKE)])


async def _ids(store: AnyStore, flt: KeyFilter) -> list[int]:
    page = await store.list_keys(flt, after=None, limit=1000)
    return [k.id for k in page.items]


async def _by_key(store: AnyStore) -> dict[str, int]:
    page = await store.list_keys(KeyFilter(), after=None, limit=1000)
    return {k.key: k.id for k in page.items}


class TestSources:
    async def test_file_keys_record_their_file(self, store: AnyStore) -> None:
        """A synced key knows its file as configured, or `inline`."""
        await _instance(store)
        files = {_key("a"): FILE_A, _key("b"): FILE_B, _key("c"): INLINE_SOURCE}
        await store.sync_keys("openai", list(files), MODELS, NOW, files=files)
        page = await store.list_keys(KeyFilter(), after=None, limit=10)
        assert {k.key: (k.source, k.source_file) for k in page.items} == {
            key: (KeySource.FILE, file) for key, file in files.items()
        }

    async def test_a_key_moved_to_another_file_follows_it(self, store: AnyStore) -> None:
        """The next sync records the file that holds the key now, keeping the key's id."""
        await _instance(store)
        await store.sync_keys("openai", [_key("a")], MODELS, NOW, files={_key("a"): FILE_A})
        before = await _by_key(store)
        await store.sync_keys("openai", [_key("a")], MODELS, NOW, files={_key("a"): FILE_B})
        stored = await store.get_key(before[_key("a")])
        assert stored is not None and stored.source_file == FILE_B

    async def test_api_keys_survive_every_file_sync(self, store: AnyStore) -> None:
        """A key added through the key admin is never removed by a sync, even an empty one."""
        await _instance(store)
        await store.sync_keys("openai", [_key("file")], MODELS, NOW, files={_key("file"): FILE_A})
        added = await store.add_keys("openai", [_key("api")], MODELS, NOW)
        report = await store.sync_keys("openai", [], MODELS, NOW)
        assert report.removed == 1
        assert list((await _by_key(store)).values()) == added.added

    async def test_a_key_in_both_sources_is_one_key_and_stays_when_its_file_drops_it(
        self, store: AnyStore
    ) -> None:
        """Adding a file key counts a duplicate; removed from the file, it becomes an api key."""
        await _instance(store)
        await store.sync_keys("openai", [_key("both")], MODELS, NOW, files={_key("both"): FILE_A})
        report = await store.add_keys("openai", [_key("both")], MODELS, NOW)
        assert (report.added, report.duplicates) == ([], 1)
        [key_id] = (await _by_key(store)).values()
        await store.sync_keys("openai", [], MODELS, NOW)
        stored = await store.get_key(key_id)
        assert stored is not None
        assert (stored.source, stored.source_file) == (KeySource.API, None)
        await store.sync_keys("openai", [_key("both")], MODELS, NOW, files={_key("both"): FILE_B})
        again = await store.get_key(key_id)
        assert again is not None and (again.source, again.source_file) == (KeySource.FILE, FILE_B)

    async def test_file_keys_are_refused_deletion_with_their_file(self, store: AnyStore) -> None:
        """Deleting refuses file keys, naming what to edit, and deletes api keys."""
        await _instance(store)
        files = {_key("a"): FILE_A, _key("i"): INLINE_SOURCE}
        await store.sync_keys("openai", list(files), MODELS, NOW, files=files)
        added = await store.add_keys("openai", [_key("api")], MODELS, NOW)
        ids = await _by_key(store)
        report = await store.delete_keys(KeyFilter())
        assert report.deleted == added.added
        assert sorted(report.refused) == sorted(
            [
                (ids[_key("a")], f"remove it from {FILE_A}"),
                (ids[_key("i")], "remove it from providers.openai.keys in the configuration"),
            ]
        )
        assert sorted(await _by_key(store)) == sorted(files)

    async def test_deleting_unknown_ids_deletes_nothing(self, store: AnyStore) -> None:
        """Ids that are not stored are neither deleted nor refused."""
        await _instance(store)
        added = await store.add_keys("openai", [_key("api")], MODELS, NOW)
        report = await store.delete_keys((added.added[0] + 1000,))
        assert (report.deleted, report.refused) == ([], [])
        assert await _ids(store, KeyFilter()) == added.added


class TestImport:
    async def test_new_keys_are_untested_and_due_for_every_model(self, store: AnyStore) -> None:
        """Added keys get one untested row per model, due now, and count no duplicates."""
        await _instance(store)
        report = await store.add_keys("openai", [_key("1"), _key("2")], MODELS, NOW)
        assert len(report.added) == 2 and report.duplicates == 0
        records = await store.load_key_records(report.added)
        assert len(records) == 4
        assert {(r.status, r.next_check_at) for r in records} == {(Status.UNTESTED, NOW)}

    async def test_repeats_and_stored_keys_are_duplicates(self, store: AnyStore) -> None:
        """A key given twice, or stored already, is one key; blanks are not keys."""
        await _instance(store)
        await store.add_keys("openai", [_key("1")], MODELS, NOW)
        report = await store.add_keys("openai", [_key("1"), _key("2"), _key("2"), ""], MODELS, NOW)
        assert len(report.added) == 1 and report.duplicates == 2
        assert sorted(await _by_key(store)) == [_key("1"), _key("2")]

    async def test_unknown_instance_is_refused(self, store: AnyStore) -> None:
        """Nothing is stored for an instance without a provider row."""
        with pytest.raises(StoreError, match="unknown instance"):
            await store.add_keys("nobody", [_key("1")], MODELS, NOW)

    async def test_the_same_key_in_two_instances_is_two_keys(self, store: AnyStore) -> None:
        """Keys are unique per instance."""
        await _instance(store, "one")
        await _instance(store, "two")
        first = await store.add_keys("one", [_key("1")], MODELS, NOW)
        second = await store.add_keys("two", [_key("1")], MODELS, NOW)
        assert len(first.added) == len(second.added) == 1


class TestListing:
    async def test_pages_cover_every_match_once_with_total_and_facets(
        self, store: AnyStore
    ) -> None:
        """Keyset pages walk all matches; total and facets describe all of them."""
        await _instance(store, "one")
        await _instance(store, "two")
        one = await store.add_keys("one", [_key(f"1-{i}") for i in range(25)], MODELS, NOW)
        await store.add_keys("two", [_key(f"2-{i}") for i in range(5)], MODELS, NOW)
        await store.set_disabled(tuple(one.added[:3]), True, NOW)
        seen: list[int] = []
        after = None
        while True:
            page = await store.list_keys(KeyFilter(), after=after, limit=7)
            assert page.total == 30
            assert page.facets == {
                "status": {"disabled": 3, "untested": 27},
                "instance": {"one": 25, "two": 5},
            }
            seen += [k.id for k in page.items]
            if page.next_cursor is None:
                break
            after = page.next_cursor
        assert len(seen) == 30 and seen == sorted(set(seen))

    async def test_a_page_decoded_on_a_thread_equals_small_pages(self, store: AnyStore) -> None:
        """A page of many keys (decoded off the loop) holds what small pages (decoded on it) do."""
        await _instance(store)
        report = await store.add_keys("openai", [_key(f"t-{i}") for i in range(400)], MODELS, NOW)
        await store.record_usage([UsageDelta(report.added[7], 3, 1, NOW.timestamp())])
        large = await store.list_keys(KeyFilter(), after=None, limit=1000)
        assert len(large.items) * len(MODELS) >= RECORDS_ON_THREAD  # the thread's path
        small: list[StoredKey] = []
        after = None
        while True:
            page = await store.list_keys(KeyFilter(), after=after, limit=50)
            small += page.items
            if page.next_cursor is None:
                break
            after = page.next_cursor
        assert large.items == small
        assert large.items[7].usage.requests == 3

    async def test_filters_narrow_items_total_and_facets(self, store: AnyStore) -> None:
        """Every filter field applies to the items, the total and the facets alike."""
        await _instance(store)
        added = await store.add_keys("openai", [_key(str(i)) for i in range(6)], MODELS, NOW)
        invalid = [
            dataclasses.replace(r, status=Status.INVALID_KEY, last_checked_at=NOW)
            for r in await store.load_key_records(added.added[:2])
            if r.model == "mini"
        ]
        await store.record(invalid)
        page = await store.list_keys(KeyFilter(status="invalid_key"), after=None, limit=100)
        assert [k.id for k in page.items] == added.added[:2]
        assert page.total == 2
        assert page.facets["status"] == {"invalid_key": 2, "untested": 2}
        gpt = await store.list_keys(
            KeyFilter(model="gpt", status="invalid_key"), after=None, limit=100
        )
        assert gpt.items == [] and gpt.total == 0 and gpt.next_cursor is None
        assert await _ids(store, KeyFilter(source="api", instance="openai")) == added.added

    async def test_a_key_is_found_by_mask_fingerprint_or_itself(self, store: AnyStore) -> None:
        """q accepts the mask as shown, the 12 hex shown, or the whole key."""
        await _instance(store)
        key = "sk-live-findme-0123456789abcdef"
        added = await store.add_keys("openai", [key, _key("other")], MODELS, NOW)
        for q in (key, "sk-l...cdef", PLAIN.fingerprint(key)[:12]):
            assert await _ids(store, KeyFilter(q=q)) == added.added[:1], q

    async def test_one_key_shows_its_models_usage_and_fingerprint(self, store: AnyStore) -> None:
        """get_key gives the clear key (callers mask it), its rows and counters; None if absent."""
        await _instance(store)
        added = await store.add_keys("openai", [_key("1")], MODELS, NOW)
        stored = await store.get_key(added.added[0])
        assert stored is not None
        assert stored.key == _key("1") and stored.fingerprint == PLAIN.fingerprint(_key("1"))
        assert sorted(stored.models) == MODELS
        assert (stored.usage.requests, stored.usage.failures) == (0, 0)
        assert await store.get_key(added.added[0] + 99) is None

    async def test_an_unknown_source_is_refused(self, store: AnyStore) -> None:
        """Only file and api are sources."""
        with pytest.raises(ValueError, match="file or api"):
            await store.list_keys(KeyFilter(source="ui"), after=None, limit=10)


class TestDisable:
    async def test_disabled_rows_leave_checking_and_enabled_ones_are_due(
        self, store: AnyStore
    ) -> None:
        """Disable stops checking every model; enable makes them untested and due at once."""
        await _instance(store)
        added = await store.add_keys("openai", [_key("1"), _key("2")], MODELS, NOW)
        later = NOW + timedelta(minutes=5)
        changed = await store.set_disabled((added.added[0],), True, later)
        assert {(r.key_id, r.model, r.status, r.next_check_at) for r in changed} == {
            (added.added[0], m, Status.DISABLED, None) for m in MODELS
        }
        assert await store.set_disabled((added.added[0],), True, later) == []
        due = await store.lease_due(["openai"], later, 10, "keeper", 30.0)
        assert {r.key_id for r in due} == {added.added[1]}
        enabled = await store.set_disabled(KeyFilter(status="disabled"), False, later)
        assert {(r.status, r.next_check_at, r.last_checked_at) for r in enabled} == {
            (Status.UNTESTED, later, later)
        }

    async def test_a_probe_recorded_late_never_enables_a_disabled_key(
        self, store: AnyStore
    ) -> None:
        """Only the key admin enables a key: a newer status from elsewhere is not written."""
        await _instance(store)
        added = await store.add_keys("openai", [_key("1")], MODELS, NOW)
        [record, _] = await store.set_disabled(tuple(added.added), True, NOW)
        await store.record(
            [dataclasses.replace(record, status=Status.VALID, last_checked_at=NOW + timedelta(1))]
        )
        [after] = [r for r in await store.load_key_records(added.added) if r.model == record.model]
        assert after.status is Status.DISABLED

    async def test_disabled_keys_stay_disabled_through_syncs_and_new_models(
        self, store: AnyStore
    ) -> None:
        """A sync keeps a disabled key disabled, and a model added later starts disabled."""
        await _instance(store)
        await store.sync_keys("openai", [_key("1")], ["gpt"], NOW, files={_key("1"): FILE_A})
        await store.set_disabled(KeyFilter(), True, NOW)
        await store.sync_keys("openai", [_key("1")], MODELS, NOW, files={_key("1"): FILE_A})
        records = await store.load_records("openai")
        assert {(r.model, r.status) for r in records} == {(m, Status.DISABLED) for m in MODELS}

    async def test_each_change_is_in_the_history_newest_first(self, store: AnyStore) -> None:
        """Disable and enable each leave a row per model, with the old and new status."""
        await _instance(store)
        added = await store.add_keys("openai", [_key("1")], ["gpt"], NOW)
        await store.set_disabled(tuple(added.added), True, NOW)
        await store.set_disabled(tuple(added.added), False, NOW + timedelta(seconds=1))
        history = await store.key_history(added.added[0])
        assert [(h.old, h.new, h.message) for h in history] == [
            (Status.DISABLED, Status.UNTESTED, "enabled by hand"),
            (Status.UNTESTED, Status.DISABLED, "disabled by hand"),
        ]


class TestBulk:
    async def test_filters_act_on_more_keys_than_sqlite_binds_variables(
        self, store: AnyStore
    ) -> None:
        """35,000 keys (SQLite binds at most 32,766 variables) disabled, then deleted, by filter."""
        await _instance(store)
        keys = [_key(f"bulk-{i}") for i in range(35_000)]
        report = await store.add_keys("openai", keys, ["gpt"], NOW)
        assert len(report.added) == 35_000
        changed = await store.set_disabled(KeyFilter(instance="openai"), True, NOW)
        assert len(changed) == 35_000
        deleted = await store.delete_keys(KeyFilter(status="disabled"))
        assert len(deleted.deleted) == 35_000
        assert (await store.list_keys(KeyFilter(), after=None, limit=10)).total == 0

    async def test_records_of_more_keys_than_one_read_holds_come_whole_and_in_order(
        self, store: AnyStore
    ) -> None:
        """Ids in any order, repeated or gone: every stored key's records, by key then model."""
        await _instance(store)
        count = 2 * KEYS_PER_FETCH + 7
        added = await store.add_keys(
            "openai", [_key(f"many-{i}") for i in range(count)], MODELS, NOW
        )
        gone = max(added.added) + 1000
        asked = [gone, *reversed(added.added), *added.added[:5]]
        records = await store.load_key_records(asked)
        assert [(r.key_id, r.model) for r in records] == [
            (key_id, model) for key_id in sorted(added.added) for model in MODELS
        ]
        assert {(r.status, r.next_check_at, r.last_checked_at) for r in records} == {
            (Status.UNTESTED, NOW, None)
        }
        assert {r.key for r in records} == {_key(f"many-{i}") for i in range(count)}

    async def test_missing_keys_are_the_given_ids_no_key_has(self, store: AnyStore) -> None:
        """Only the ids not stored come back, in the order given, for few ids or many."""
        await _instance(store)
        added = await store.add_keys("openai", [_key(str(i)) for i in range(3)], MODELS, NOW)
        first, deleted, last = added.added
        await store.delete_keys((deleted,))
        unknown = last + 1000
        assert await store.missing_keys([last, unknown, first, deleted]) == [unknown, deleted]
        assert await store.missing_keys([first, last]) == []
        assert await store.missing_keys([]) == []
        many = [*range(unknown, unknown + 12_000), first]  # sent by COPY on PostgreSQL
        assert await store.missing_keys(many) == many[:-1]

    async def test_a_recheck_walks_the_selection_page_by_page(self, store: AnyStore) -> None:
        """Pages of keys (their rows of the asked models, disabled ones left out) cover all."""
        await _instance(store)
        added = await store.add_keys("openai", [_key(str(i)) for i in range(7)], MODELS, NOW)
        await store.set_disabled((added.added[3],), True, NOW)
        seen: list[tuple[int, str]] = []
        after = None
        while page := await store.select_for_recheck(KeyFilter(), ["mini"], after, 3):
            seen += [(r.key_id, r.model) for r in page]
            after = page[-1].key_id
        assert seen == [(i, "mini") for i in added.added if i != added.added[3]]


class TestActivity:
    async def test_usage_adds_up_and_skips_deleted_keys(self, store: AnyStore) -> None:
        """Increments accumulate; the latest use wins; a deleted key's counts are dropped."""
        await _instance(store)
        added = await store.add_keys("openai", [_key("1")], MODELS, NOW)
        key_id = added.added[0]
        later = NOW + timedelta(hours=1)
        await store.record_usage(
            [UsageDelta(key_id, 5, 1, later.timestamp()), UsageDelta(key_id + 9, 1, 1)]
        )
        await store.record_usage([UsageDelta(key_id, 2, 0, NOW.timestamp())])
        stored = await store.get_key(key_id)
        assert stored is not None
        assert (stored.usage.requests, stored.usage.failures) == (7, 1)
        assert stored.usage.last_used_at == later

    async def test_usage_of_a_large_batch_reaches_every_key(self, store: AnyStore) -> None:
        """A batch of 300 keys (several statements on SQLite, the last padded) writes each key once."""
        await _instance(store)
        added = (
            await store.add_keys("openai", [_key(f"u-{i}") for i in range(300)], MODELS, NOW)
        ).added
        gone = max(added) + 1
        at = NOW.timestamp()
        await store.record_usage(
            [UsageDelta(k, i + 1, i % 3, at + i) for i, k in enumerate(added)]
            + [UsageDelta(gone, 1)]
        )
        await store.record_usage([UsageDelta(k, 1) for k in added[:5]])
        page = await store.list_keys(KeyFilter(), after=None, limit=1000)
        usage = {
            k.id: (k.usage.requests, k.usage.failures, k.usage.last_used_at) for k in page.items
        }
        assert usage == {
            k: (i + 1 + (i < 5), i % 3, NOW + timedelta(seconds=i)) for i, k in enumerate(added)
        }

    async def test_history_keeps_the_newest_fifty_per_key(self, store: AnyStore) -> None:
        """Older changes are pruned as new ones arrive; the newest come first."""
        await _instance(store)
        added = await store.add_keys("openai", [_key("1")], MODELS, NOW)
        key_id = added.added[0]
        entries = [
            HistoryEntry(
                key_id,
                "gpt",
                Status.VALID,
                Status.RATE_LIMITED,
                "rate_limited",
                f"change {i}",
                NOW + timedelta(seconds=i),
            )
            for i in range(60)
        ]
        await store.record_history(entries[:30])
        await store.record_history(entries[30:])
        history = await store.key_history(key_id, limit=100)
        assert [h.message for h in history] == [f"change {i}" for i in range(59, 9, -1)]

    async def test_a_job_records_its_progress(self, store: AnyStore) -> None:
        """A job starts running, takes progress and results, and ends done."""
        job = await store.create_job("recheck", 10, NOW)
        assert (job.state, job.done, job.total) == (JobState.RUNNING, 0, 10)
        later = NOW + timedelta(seconds=3)
        await store.update_job(job.id, later, done=4, results={"valid": 3, "invalid_key": 1})
        await store.update_job(job.id, later, done=10, state=JobState.DONE)
        stored = await store.get_job(job.id)
        assert stored is not None
        assert (stored.state, stored.done, stored.total) == (JobState.DONE, 10, 10)
        assert stored.results == {"valid": 3, "invalid_key": 1}
        assert (stored.created_at, stored.updated_at) == (NOW, later)
        assert await store.get_job(job.id + 1) is None
