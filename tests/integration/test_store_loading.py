"""Loading the pool and counting statuses: every test runs against SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from llmgateway.core.constants import ErrorReason, ProviderType, Status
from llmgateway.core.errors import StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.store import engine, rows
from llmgateway.store.postgres import PostgresStore
from llmgateway.store.protocol import StatusCount, StoredCounts
from llmgateway.store.sqlite import SqliteStore

type AnyStore = SqliteStore | PostgresStore

NOW = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
MODELS = ["m-a", "m-b"]


async def two_instances(store: AnyStore) -> None:
    """`one` with keys 0..6 and `two` with keys 0..2, synced alternately (interleaved ids)."""
    await store.sync_providers(
        [("one", ProviderType.OPENAI_LIKE), ("two", ProviderType.OPENAI_LIKE)]
    )
    for upto in range(1, 4):
        await store.sync_keys("one", [f"sk-one-{i}" for i in range(upto * 2)], MODELS, NOW)
        await store.sync_keys("two", [f"sk-two-{i}" for i in range(upto)], MODELS, NOW)
    await store.sync_keys("one", [f"sk-one-{i}" for i in range(7)], MODELS, NOW)


async def walk(store: AnyStore, instance: str | None, limit: int) -> list[list[KeyRecord]]:
    """Every page of `records_page`, each after the last (key_id, model) of the one before."""
    pages: list[list[KeyRecord]] = []
    after: tuple[int, str] | None = None
    while page := await store.records_page(instance, after, limit):
        pages.append(page)
        after = (page[-1].key_id, page[-1].model)
    return pages


class TestLoading:
    async def test_pages_follow_each_other_in_key_and_model_order(self, store: AnyStore) -> None:
        """Pages of 3 give every row once, in (key_id, model) order, only the instance's."""
        await two_instances(store)
        pages = await walk(store, "one", 3)
        rows = [r for page in pages for r in page]
        assert [len(page) for page in pages] == [3, 3, 3, 3, 2]
        assert {r.instance for r in rows} == {"one"}
        assert sorted({r.key for r in rows}) == [f"sk-one-{i}" for i in range(7)]
        assert [(r.key_id, r.model) for r in rows] == sorted((r.key_id, r.model) for r in rows)
        assert len(set((r.key_id, r.model) for r in rows)) == 14
        everything = [r for page in await walk(store, None, 4) for r in page]
        assert len(everything) == 20
        assert [r for r in everything if r.instance == "one"] == rows

    async def test_load_records_reads_page_after_page(
        self, store: AnyStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With pages of 4 rows, load_records still returns every row of each instance, in order."""
        await two_instances(store)
        whole = await store.load_records()
        monkeypatch.setattr(engine, "LOAD_PAGE", 4)
        assert await store.load_records() == whole
        assert await store.load_records("two") == [r for r in whole if r.instance == "two"]
        assert len(whole) == 20

    async def test_pages_decoded_on_threads_while_the_next_is_read_come_in_order(
        self, store: AnyStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every page decoded on a thread (as a large pool's are), overlapping the next read."""
        await two_instances(store)
        whole = await store.load_records()
        monkeypatch.setattr(engine, "LOAD_PAGE", 3)
        monkeypatch.setattr(rows, "RECORDS_ON_THREAD", 1)
        assert await store.load_records() == whole
        assert await store.load_records("one") == [r for r in whole if r.instance == "one"]

    async def test_a_read_failing_amid_a_load_raises_and_leaves_no_decoding_behind(
        self, store: AnyStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The third page's read fails: StoreError, and the page being decoded is not left running."""
        await two_instances(store)
        monkeypatch.setattr(engine, "LOAD_PAGE", 3)
        monkeypatch.setattr(rows, "RECORDS_ON_THREAD", 1)
        reads = 0
        real = store._page_rows

        async def failing(
            instance: str | None, after: tuple[int, str] | None, limit: int
        ) -> list[engine.Row]:
            nonlocal reads
            reads += 1
            if reads == 3:
                raise StoreError("loading records: connection lost")
            return await real(instance, after, limit)

        monkeypatch.setattr(store, "_page_rows", failing)
        with pytest.raises(StoreError, match="connection lost"):
            await store.load_records()
        assert reads == 3
        assert asyncio.all_tasks() == {asyncio.current_task()}

    async def test_loaded_records_equal_what_was_recorded(self, store: AnyStore) -> None:
        """Times keep their microseconds (read as UTC), texts, codes and reasons come back as written."""
        await two_instances(store)
        first, second = (await store.load_records("two"))[:2]
        elsewhere = timezone(timedelta(hours=5, minutes=30))
        failed = replace(
            first,
            status=Status.RATE_LIMITED,
            last_checked_at=datetime(2026, 3, 4, 5, 6, 7, 999_999, tzinfo=elsewhere),
            next_check_at=datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
            failing_since=NOW - timedelta(microseconds=1),
            consecutive_failures=3,
            status_code=429,
            message="slow down",
            response_ms=1234,
            cooldown_until=NOW + timedelta(hours=1, microseconds=7),
            reason=ErrorReason.RATE_LIMITED,
        )
        valid = replace(second, status=Status.VALID, last_checked_at=NOW, status_code=200)
        await store.record([failed, valid])
        loaded = {(r.key_id, r.model): r for r in await store.load_records("two")}
        got = loaded[(first.key_id, first.model)]
        assert got == replace(failed, last_checked_at=failed.last_checked_at.astimezone(UTC))
        assert got.last_checked_at is not None and got.last_checked_at.tzinfo == UTC
        assert got.last_checked_at.microsecond == 999_999
        assert loaded[(second.key_id, second.model)] == valid

    async def test_a_key_is_one_string_for_all_its_models(self, store: AnyStore) -> None:
        """The records of one key share its text; equal times share one object."""
        await two_instances(store)
        records = await store.load_records("one")
        for first, second in zip(records[::2], records[1::2], strict=True):
            assert first.key_id == second.key_id
            assert first.key is second.key
            assert first.next_check_at is second.next_check_at


class TestStatusCounts:
    async def test_counts_match_the_rows(self, store: AnyStore) -> None:
        """Per instance, model and status: the rows, and those still cooling down at `now`."""
        await two_instances(store)
        records = await store.load_records()
        now = NOW + timedelta(minutes=1)
        changed: list[KeyRecord] = []
        for index, record in enumerate(records):
            if record.instance != "one":
                continue
            if index % 4 == 0:
                changed.append(replace(record, status=Status.VALID, last_checked_at=now))
            elif index % 4 == 1:
                cool = now + timedelta(hours=1) if index % 8 == 1 else now - timedelta(seconds=1)
                changed.append(
                    replace(
                        record,
                        status=Status.RATE_LIMITED,
                        last_checked_at=now,
                        cooldown_until=cool,
                        reason=ErrorReason.RATE_LIMITED,
                    )
                )
            elif index % 4 == 2:
                changed.append(
                    replace(record, status=Status.INVALID_KEY, last_checked_at=now, status_code=401)
                )
        await store.record(changed)
        rows = await store.load_records()
        expected: dict[tuple[str, str, Status], list[int]] = {}
        for r in rows:
            tally = expected.setdefault((r.instance, r.model, r.status), [0, 0])
            tally[0] += 1
            tally[1] += int(r.cooldown_until is not None and r.cooldown_until > now)
        counted = await store.stored_counts(now)
        counts = counted.statuses
        assert sorted(counts, key=lambda c: (c.instance, c.model, c.status)) == sorted(
            (StatusCount(i, m, s, n, c) for (i, m, s), (n, c) in expected.items()),
            key=lambda c: (c.instance, c.model, c.status),
        )
        assert sum(c.cooling for c in counts) > 0
        assert {c.status for c in counts} >= {Status.RATE_LIMITED, Status.INVALID_KEY}
        assert counted.keys == {"one": 7, "two": 3}

    async def test_an_empty_store_counts_nothing(self, store: AnyStore) -> None:
        """No keys: no counts."""
        assert await store.stored_counts(NOW) == StoredCounts([], {})
