"""Figures over time and right now: the per-minute trend (throughput by outcome, wait and run
time percentiles, per queue and task) and the live `stats` event of the firehose.

The trend comes from the per-minute hashes the scripts keep (`Keys.trend`, two hours each):
`o|<queue>|<task>|<outcome>` counts finished jobs, `w|...|<bucket>` and `r|...|<bucket>` count
wait and run times per histogram bucket (bounds `BUCKETS_MS`, then +Inf). Percentiles are
estimated from the buckets as Prometheus's histogram_quantile does (linear within a bucket).
A minute that has passed no longer changes, so it is read once per process and kept; a call
reads the current and the previous minute again, nothing more. No web imports here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec

from service.core.keys import Keys
from service.core.scripts import BUCKETS_MS
from service.core.wire import QueueStats, StatsEvent, iso
from service.queries import Queries

OUTCOMES = ("succeeded", "failed", "cancelled")
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
MAX_MINUTES = 120  # the hashes live two hours
Counts = dict[str, int]


class Percentiles(msgspec.Struct):
    p50: int
    p95: int
    p99: int
    count: int


class TrendPoint(msgspec.Struct, kw_only=True):
    at: str  # the start of the minute
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    wait_ms: Percentiles | None = None
    run_ms: Percentiles | None = None


class Trend(msgspec.Struct, kw_only=True):
    """GET /api/stats/trend: one point per minute, oldest first, and the window's totals."""

    minutes: int
    queue: str | None
    task: str | None
    points: list[TrendPoint]
    total: TrendPoint
    queues: list[str]  # names seen in the window (any filter), for pickers
    tasks: list[str]


def percentiles(buckets: dict[int, int]) -> Percentiles | None:
    """p50, p95 and p99 in ms from histogram bucket counts (bucket i: up to BUCKETS_MS[i-1];
    the last one is +Inf, estimated as its lower bound)."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    out: dict[str, int] = {}
    for name, q in QUANTILES:
        rank = q * total
        seen = 0
        for b in range(1, len(BUCKETS_MS) + 2):
            n = buckets.get(b, 0)
            if n and seen + n >= rank:
                lo = BUCKETS_MS[b - 2] if b >= 2 else 0
                if b > len(BUCKETS_MS):
                    out[name] = lo
                else:
                    hi = BUCKETS_MS[b - 1]
                    out[name] = round(lo + (hi - lo) * (rank - seen) / n)
                break
            seen += n
    return Percentiles(p50=out["p50"], p95=out["p95"], p99=out["p99"], count=total)


class _Minute:
    """One minute's counters, merged over partitions and split by kind."""

    __slots__ = ("outcomes", "run", "wait")

    def __init__(self, fields: Counts) -> None:
        # (queue, task) -> outcome -> n; (queue, task) -> bucket -> n
        self.outcomes: dict[tuple[str, str], Counts] = {}
        self.wait: dict[tuple[str, str], dict[int, int]] = {}
        self.run: dict[tuple[str, str], dict[int, int]] = {}
        for name, n in fields.items():
            parts = name.split("|")
            if len(parts) != 4:
                continue
            kind, q, t, last = parts
            if kind == "o":
                self.outcomes.setdefault((q, t), {})[last] = n
            elif kind in ("w", "r") and last.isdigit():
                into = self.wait if kind == "w" else self.run
                into.setdefault((q, t), {})[int(last)] = n


def _match(qt: tuple[str, str], queue: str | None, task: str | None) -> bool:
    return (queue is None or qt[0] == queue) and (task is None or qt[1] == task)


def _add(into: dict[int, int], more: dict[int, int]) -> None:
    for b, n in more.items():
        into[b] = into.get(b, 0) + n


class TrendReader:
    def __init__(self, r: Any, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self._done: dict[int, _Minute] = {}  # minutes that can no longer change

    async def _minutes(self, first: int, last: int) -> dict[int, _Minute]:
        now = int(time.time() // 60)
        want = range(first, last + 1)
        # a minute is final once the next one is over (a write may carry the minute it began in)
        fetch = [m for m in want if m not in self._done or m >= now - 1]
        merged: dict[int, Counts] = {m: {} for m in fetch}
        for k in range(self.keys.partitions):
            if not fetch:
                break
            async with self.r.pipeline(transaction=False) as pipe:
                for m in fetch:
                    pipe.hgetall(self.keys.trend(k, m))
                rows = await pipe.execute()
            for m, h in zip(fetch, rows, strict=True):
                into = merged[m]
                for f, v in h.items():
                    name = f.decode()
                    into[name] = into.get(name, 0) + int(v)
        out = {m: self._done[m] for m in want if m in self._done and m not in merged}
        for m, fields in merged.items():
            minute = _Minute(fields)
            out[m] = minute
            if m < now - 1:
                self._done[m] = minute
        for m in [m for m in self._done if m < now - MAX_MINUTES - 1]:
            del self._done[m]
        return out

    async def trend(self, minutes: int, queue: str | None, task: str | None) -> Trend:
        """The last `minutes` minutes (the current one included), filtered by queue and task."""
        now = int(time.time() // 60)
        data = await self._minutes(now - minutes + 1, now)
        points: list[TrendPoint] = []
        total = TrendPoint(at=iso((now - minutes + 1) * 60_000) or "")
        all_wait: dict[int, int] = {}
        all_run: dict[int, int] = {}
        queues: set[str] = set()
        tasks: set[str] = set()
        for m in range(now - minutes + 1, now + 1):
            p = TrendPoint(at=iso(m * 60_000) or "")
            minute = data[m]
            wait: dict[int, int] = {}
            run: dict[int, int] = {}
            for qt, outs in minute.outcomes.items():
                queues.add(qt[0])
                tasks.add(qt[1])
                if _match(qt, queue, task):
                    p.succeeded += outs.get("succeeded", 0)
                    p.failed += outs.get("failed", 0)
                    p.cancelled += outs.get("cancelled", 0)
            for hist, into in ((minute.wait, wait), (minute.run, run)):
                for qt, buckets in hist.items():
                    queues.add(qt[0])
                    tasks.add(qt[1])
                    if _match(qt, queue, task):
                        _add(into, buckets)
            p.wait_ms, p.run_ms = percentiles(wait), percentiles(run)
            _add(all_wait, wait)
            _add(all_run, run)
            total.succeeded += p.succeeded
            total.failed += p.failed
            total.cancelled += p.cancelled
            points.append(p)
        total.wait_ms, total.run_ms = percentiles(all_wait), percentiles(all_run)
        return Trend(
            minutes=minutes,
            queue=queue,
            task=task,
            points=points,
            total=total,
            queues=sorted(queues),
            tasks=sorted(tasks),
        )

    async def outcomes_by_queue(self, minutes: int = 60) -> dict[str, Counts]:
        """Finished jobs per queue and outcome over the last `minutes` minutes."""
        now = int(time.time() // 60)
        out: dict[str, Counts] = {}
        for minute in (await self._minutes(now - minutes + 1, now)).values():
            for (q, _t), outs in minute.outcomes.items():
                into = out.setdefault(q, dict.fromkeys(OUTCOMES, 0))
                for o, n in outs.items():
                    if o in into:
                        into[o] += n
        return out


async def stats_event(queries: Queries, trend: TrendReader) -> StatsEvent:
    """The figures of the whole deployment now: the queues (as GET /api/queues), unfinished
    jobs per state and failed ones still kept (every failed job is a dead letter until it is
    retried, purged or expires), and the last hour's outcomes per queue."""
    queues = await queries.queues()
    return StatsEvent(
        ts=iso(int(time.time() * 1000)) or "",
        queues=list(queues.values()),
        states=state_counts(queues.values()),
        last_hour=await trend.outcomes_by_queue(60),
    )


def state_counts(queues: Iterable[QueueStats]) -> Counts:
    out = {"queued": 0, "running": 0, "scheduled": 0, "failed": 0}
    for q in queues:
        out["queued"] += q.queued
        out["running"] += q.running
        out["scheduled"] += q.scheduled
        out["failed"] += q.dead
    return out
