"""Recheck jobs: probe chosen (key, model) rows now, in the background, at the keeper's limits.

`RecheckJobs.start` selects the rows (every key a filter matches, page by
page; disabled keys are never probed), records a job in the store and
returns at once; the job's task probes the rows with the keeper's probe
machinery (`Prober`, whose concurrency limits are `keeper.max_concurrent_probes`
and `max_concurrent_probes_per_instance`, shared with the keeper when it
runs), whether or not the periodic keeper is enabled. Each result is applied
to the pool as a probe result. Progress goes to the job's row and to
`/-/events` as `{"job", "done", "total", "state"}` about once a second and
at the end. Requests are never blocked: everything runs in tasks of its
own, and the probes wait for the same slots as the keeper's.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Final, final

import structlog

from llmgateway.core.constants import Status
from llmgateway.core.errors import StoreError
from llmgateway.core.models import KeyRecord
from llmgateway.keeper.prober import Prober
from llmgateway.pool.key_pool import Clock, KeyPool
from llmgateway.store.key_admin import JobState, Selection
from llmgateway.store.key_reads import KEYS_PER_FETCH
from llmgateway.store.protocol import Store

log = structlog.get_logger(__name__)

PROGRESS_INTERVAL: Final = 1.0
"""Seconds between two progress updates of a running job."""

STORED_WAIT: Final = 10.0
"""Seconds a finished job waits for its results to be stored before it says done anyway."""

JOB_KIND: Final = "recheck"


@final
class RecheckJobs:
    """Starts recheck jobs and runs each in a task until it is done or the process stops.

    `stored` returns once every result reported so far is in the store (the
    write queue's `written_through`); a job is marked done only after it.
    """

    def __init__(
        self,
        store: Store,
        pool: KeyPool,
        prober: Prober,
        clock: Clock = time.time,
        *,
        stored: Callable[[], Awaitable[None]] | None = None,
        progress_interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self._stored = stored
        self._store = store
        self._pool = pool
        self._prober = prober
        self._clock = clock
        self._interval = progress_interval
        self._tasks: set[asyncio.Task[None]] = set()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def start(self, selection: Selection, models: Sequence[str] | None) -> tuple[int, int]:
        """Record a job for the rows of `selection` (only `models`, if given) and start it.

        Returns the job's id and the number of (key, model) checks queued.
        """
        rows: list[KeyRecord] = []
        after: int | None = None
        while True:
            page = await self._store.select_for_recheck(selection, models, after, KEYS_PER_FETCH)
            if not page:
                break
            rows.extend(page)
            after = page[-1].key_id
        job_id = (await self._store.create_job(JOB_KIND, len(rows), self._now())).id
        log.info("recheck_started", job=job_id, checks=len(rows))
        task = asyncio.create_task(self._run(job_id, rows), name=f"llmgateway-recheck-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job_id, len(rows)

    async def join(self) -> None:
        """Wait until every job started so far has finished."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """For the body of an `async with`; on exit every running job is stopped (failed)."""
        try:
            yield
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job_id: int, rows: list[KeyRecord]) -> None:
        todo = deque(rows)
        results: Counter[str] = Counter()
        total = len(rows)
        state = JobState.FAILED
        workers = max(1, min(self._prober.concurrency, total))
        progress = asyncio.create_task(self._report_progress(job_id, results, total))
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(self._work(todo, results))
            state = JobState.DONE
        except Exception:  # the job task's outermost guard: the job fails, the process goes on
            log.exception("recheck_crashed", job=job_id)
        finally:
            progress.cancel()
            with suppress(asyncio.CancelledError):
                await progress
            done = results.total()
            if done < total and state is JobState.DONE:
                state = JobState.FAILED  # stopped before the end
            if state is JobState.DONE and self._stored is not None:
                # Done means stored: a listing filtered by status shows what the job found.
                with suppress(TimeoutError):
                    async with asyncio.timeout(STORED_WAIT):
                        await self._stored()
            await self._save(job_id, state, done, total, results)
            log.info("recheck_finished", job=job_id, state=state.value, done=done, total=total)

    async def _work(self, todo: deque[KeyRecord], results: Counter[str]) -> None:
        while todo:
            row = todo.popleft()
            record = self._pool.get(row.instance, row.model, row.key_id)
            if record is None or record.status is Status.DISABLED:
                results["skipped"] += 1  # deleted or disabled since the job started
                continue
            result = await self._prober.probe(record)
            if result is None:
                results["skipped"] += 1
                continue
            self._pool.report(record, result, probe=True)
            results[result.status.value] += 1

    async def _report_progress(self, job_id: int, results: Counter[str], total: int) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._save(job_id, JobState.RUNNING, results.total(), total, results)

    async def _save(
        self, job_id: int, state: JobState, done: int, total: int, results: Counter[str]
    ) -> None:
        """Store the job's progress (a failure is logged: the next update retries) and announce it."""
        self._pool.announce_job(job_id, done, total, state.value)
        try:
            await self._store.update_job(
                job_id, self._now(), done=done, state=state, results=dict(results)
            )
        except StoreError as exc:
            log.warning("recheck_progress_not_stored", job=job_id, error=str(exc))
