"""Acting on many jobs at once: cancel or retry a list of jobs, retry or purge a queue's dead
letters, purge a queue's finished jobs.

All server-side and bounded: ids are taken BATCH at a time, with at most CONCURRENCY script
calls in flight, and each job changes through the same atomic script as a single cancel, retry
or purge, so an action is safe while workers run (a job that moved on meanwhile is counted, not
harmed). Every action has a dry run that says how many jobs it would touch, which is what a
confirmation needs. No web imports here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import msgspec

from service.core.durable import Durability
from service.core.errors import Invalid
from service.core.keys import Keys
from service.core.scripts import Ops, new_request_id
from service.core.states import CANCELLABLE, RETRYABLE, TERMINAL
from service.core.store import JobStore
from service.core.wire import JOB_ID_RE, QUEUE_RE

BATCH = 200  # ids read and acted on per round
CONCURRENCY = 16  # script calls in flight at once (the fast client pipelines them)
MAX_IDS = 1000  # ids in one POST /api/jobs/bulk
T = TypeVar("T")
R = TypeVar("R")

Action = Literal["cancel", "retry"]


class IdOutcome(msgspec.Struct):
    id: str
    outcome: str


class BulkResult(msgspec.Struct, kw_only=True):
    """What a bulk action did (or, with dry_run, would do). `count`: jobs it changed (cancelled
    or asked to stop, queued again, deleted); `outcomes`: jobs per outcome; `results`: per id,
    for an action on a list of ids."""

    action: str
    dry_run: bool
    count: int
    outcomes: dict[str, int]
    queue: str | None = None
    results: list[IdOutcome] | None = None


# what each outcome means: does it count as done?
_DONE = {"cancelled", "requested", "retried", "purged"}


def _result(action: str, dry_run: bool, outcomes: dict[str, int], **kw: Any) -> BulkResult:
    count = sum(n for o, n in outcomes.items() if o in _DONE)
    return BulkResult(action=action, dry_run=dry_run, count=count, outcomes=outcomes, **kw)


async def _bounded(items: Sequence[T], fn: Callable[[T], Awaitable[R]]) -> list[R]:
    """fn over items, at most CONCURRENCY at once, results in order."""
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(x: T) -> R:
        async with sem:
            return await fn(x)

    return list(await asyncio.gather(*(one(x) for x in items)))


def _tally(outcomes: dict[str, int], outcome: str) -> None:
    outcomes[outcome] = outcomes.get(outcome, 0) + 1


class Bulk:
    """Bulk actions of one deployment. `r` reads (sets, streams); `durability` runs scripts."""

    def __init__(
        self, r: Any, keys: Keys, ops: Ops, store: JobStore, durability: Durability
    ) -> None:
        self.r = r
        self.keys = keys
        self.ops = ops
        self.store = store
        self.durability = durability

    # -- a list of jobs -------------------------------------------------------------------------

    async def jobs(
        self, action: Action, ids: Sequence[str], *, dry_run: bool = False
    ) -> BulkResult:
        """Cancel or retry each job of `ids` (1..MAX_IDS, duplicates counted once), as
        POST /api/jobs/{id}/cancel or retry would: the outcome of each, and the totals."""
        if not 1 <= len(ids) <= MAX_IDS:
            raise Invalid(f"ids: 1 to {MAX_IDS} job ids", path="$.ids")
        for i, job_id in enumerate(ids):
            if not JOB_ID_RE.match(job_id):
                raise Invalid("not a job id", path=f"$.ids[{i}]")
        unique = list(dict.fromkeys(ids))
        results: list[IdOutcome] = []
        for i in range(0, len(unique), BATCH):
            chunk = unique[i : i + BATCH]
            jobs = await self.store.many(chunk)
            if dry_run:
                for job_id, job in zip(chunk, jobs, strict=True):
                    state = job.state if job is not None else None
                    results.append(IdOutcome(job_id, _predict(action, state)))
                continue
            todo = [(j.id, j.queue) for j in jobs if j is not None]
            run = self._cancel if action == "cancel" else self._retry
            done = dict(zip([t[0] for t in todo], await _bounded(todo, run), strict=True))
            results += [IdOutcome(job_id, done.get(job_id, "missing")) for job_id in chunk]
        outcomes: dict[str, int] = {}
        for r in results:
            _tally(outcomes, r.outcome)
        return _result(action, dry_run, outcomes, results=results)

    async def _cancel(self, item: tuple[str, str]) -> str:
        job_id, queue = item
        call = self.ops.cancel(job_id, queue, new_request_id(), int(time.time() // 60))
        res = await self.durability.run(call, retry=True)
        return {"done": "cancelled", "requested": "requested"}.get(res.status, res.status)

    async def _retry(self, item: tuple[str, str]) -> str:
        job_id, queue = item
        res = await self.durability.run(self.ops.retry(job_id, queue, new_request_id()), retry=True)
        return "retried" if res.status == "done" else res.status

    # -- a queue's dead letters -----------------------------------------------------------------

    async def _now_ms(self) -> int:
        sec, usec = await self.r.time()
        return int(sec) * 1000 + int(usec) // 1000

    async def dead_count(self, queue: str) -> int:
        total = 0
        for k in range(self.keys.partitions):
            total += int(await self.r.zcard(self.keys.dead(k, queue)))
        return total

    async def _each_dead(
        self,
        queue: str,
        act: Callable[[int, list[str]], Awaitable[list[str]]],
        left: str,
    ) -> dict[str, int]:
        """`act(partition, ids)` on every job in the queue's dead letters when the call began,
        BATCH at a time; the outcomes tallied. Entries `act` leaves in place (outcome `left`)
        are stepped over."""
        outcomes: dict[str, int] = {}
        upto = await self._now_ms()
        for k in range(self.keys.partitions):
            dead = self.keys.dead(k, queue)
            skip = 0
            while True:
                raw = await self.r.zrangebyscore(dead, "-inf", upto, start=skip, num=BATCH)
                ids = [x.decode() for x in raw]
                if not ids:
                    break
                for outcome in await act(k, ids):
                    _tally(outcomes, outcome)
                    skip += outcome == left
                if len(ids) < BATCH:
                    break
        return outcomes

    async def retry_dead(self, queue: str, *, dry_run: bool = False) -> BulkResult:
        """Queue again every job that was in the queue's dead letters when the call began
        (one that fails again meanwhile is not retried twice)."""
        _check_queue(queue)
        if dry_run:
            n = await self.dead_count(queue)
            return _result("retry_dead", True, {"retried": n}, queue=queue)
        outcomes = await self._each_dead(
            queue, lambda k, ids: _bounded([(i, queue) for i in ids], self._retry), "conflict"
        )
        return _result("retry_dead", False, outcomes, queue=queue)

    async def purge_dead(self, queue: str, *, dry_run: bool = False) -> BulkResult:
        """Delete every job in the queue's dead letters when the call began: its record, its
        events, its dead-letter and index entries."""
        _check_queue(queue)
        if dry_run:
            n = await self.dead_count(queue)
            return _result("purge_dead", True, {"purged": n}, queue=queue)

        async def purge(k: int, ids: list[str]) -> list[str]:
            return await self.durability.run(
                self.ops.purge(k, queue, [(i, "") for i in ids]), retry=True
            )

        outcomes = await self._each_dead(queue, purge, "kept")
        return _result("purge_dead", False, outcomes, queue=queue)

    # -- a queue's finished jobs ----------------------------------------------------------------

    async def purge_finished(
        self, queue: str, before_ms: int, *, dry_run: bool = False
    ) -> BulkResult:
        """Delete the queue's finished jobs (succeeded, failed, cancelled) that finished before
        `before_ms`, found through the index (a job finished before then was created before
        then), BATCH index entries at a time."""
        _check_queue(queue)
        outcomes: dict[str, int] = {}
        for k in range(self.keys.partitions):
            idx = self.keys.index(k)
            start = "-"
            while True:
                rows = await self.r.xrange(idx, min=start, max=before_ms, count=BATCH)
                if not rows:
                    break
                start = "(" + rows[-1][0].decode()
                entries = [(eid.decode(), f[b"j"].decode()) for eid, f in rows if b"j" in f]
                async with self.r.pipeline(transaction=False) as pipe:
                    for _, job_id in entries:
                        pipe.hmget(self.keys.job(job_id), ["q", "s", "f"])
                    found = await pipe.execute()
                picked: list[tuple[str, str]] = []
                for (eid, job_id), (q, s, f) in zip(entries, found, strict=True):
                    if q is None or s is None or q.decode() != queue:
                        continue
                    if s.decode() in TERMINAL and f and int(f) < before_ms:
                        picked.append((job_id, eid))
                if picked and dry_run:
                    outcomes["purged"] = outcomes.get("purged", 0) + len(picked)
                elif picked:
                    call = self.ops.purge(k, queue, picked, before_ms)
                    for outcome in await self.durability.run(call, retry=True):
                        _tally(outcomes, outcome)
                if len(rows) < BATCH:
                    break
        outcomes.setdefault("purged", 0)
        return _result("purge_finished", dry_run, outcomes, queue=queue)


def _predict(action: Action, state: str | None) -> str:
    """The outcome a cancel or retry would have on a job in `state` (None: no such job)."""
    if state is None:
        return "missing"
    if action == "cancel":
        if state == "running":
            return "requested"
        return "cancelled" if state in CANCELLABLE else "finished"
    return "retried" if state in RETRYABLE else "conflict"


def _check_queue(queue: str) -> None:
    if not QUEUE_RE.match(queue):
        raise Invalid("invalid queue name", path="queue")
