"""Reading the pool for operators: tallies, pages of rows, and the sliced resync."""

from __future__ import annotations

from llmgateway.core.constants import ErrorReason, Status
from llmgateway.core.models import CheckResult, KeyRecord
from llmgateway.pool.key_pool import KeyPool
from llmgateway.pool.listing import Position
from tests.support.config import accessor_of
from tests.unit.pool.test_pool import MODELS, FakeClock, provider, records


def _pool(*loaded: KeyRecord) -> tuple[KeyPool, FakeClock]:
    clock = FakeClock()
    pool = KeyPool(accessor_of(provider("main"), provider("other")), clock=clock)
    pool.load(loaded)
    return pool, clock


def _walk(pool: KeyPool, limit: int) -> list[list[tuple[str, int, str]]]:
    pages: list[list[tuple[str, int, str]]] = []
    after: Position | None = None
    while True:
        page = [(r.instance, r.key_id, r.model) for r in pool.page(after, limit)]
        if page:
            pages.append(page)
        if len(page) < limit:
            return pages
        after = page[-1]


def test_pages_give_every_row_once_in_instance_key_model_order() -> None:
    """Pages of any size cover every (instance, key, model) once, in the store's order."""
    pool, _ = _pool(*records(7, "other"), *records(5, "main"))
    expected = sorted((r.instance, r.key_id, r.model) for r in pool.records())
    for limit in (1, 3, 4, 1000):
        pages = _walk(pool, limit)
        assert [row for page in pages for row in page] == expected
        assert all(len(page) <= limit for page in pages)


def test_keys_added_or_removed_between_pages_never_repeat_a_row() -> None:
    """A cursor is a position: rows before it are not given again when keys come and go."""
    pool, _ = _pool(*records(10, "main"))
    first = pool.page(None, 6)
    pool.remove_keys("main", [1, 2])
    for record in records(12, "main")[20:]:  # keys 11 and 12
        pool.apply_remote(record)
    rest = pool.page((first[-1].instance, first[-1].key_id, first[-1].model), 1000)
    seen = [(r.key_id, r.model) for r in [*first, *rest]]
    assert len(seen) == len(set(seen))
    assert {(11, m) for m in MODELS} | {(12, m) for m in MODELS} <= set(seen)


def test_tallies_count_statuses_and_what_is_usable_now() -> None:
    """A tally counts each status; a rate-limited key cooling down is not usable until it ends."""
    pool, clock = _pool(*records(4, "main"))
    limited = pool.get("main", "model-a", 1)
    assert limited is not None
    pool.report(limited, CheckResult(reason=ErrorReason.RATE_LIMITED, status_code=429), probe=True)
    tallies = {(t.instance, t.model): t for t in pool.tallies()}
    assert tallies[("main", "model-a")].counts == {Status.UNTESTED: 3, Status.RATE_LIMITED: 1}
    assert tallies[("main", "model-a")].usable == 3
    assert tallies[("main", "model-a")].rows == 4
    assert tallies[("main", "model-b")].usable == 4
    clock.advance(3600)
    assert {(t.model, t.usable) for t in pool.tallies()} == {("model-a", 4), ("model-b", 4)}
