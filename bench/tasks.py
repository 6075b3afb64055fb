"""Tasks the benchmarks run in real worker processes (`--tasks bench.tasks`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from workers import Context, task


@task("bench.noop")
async def noop(ctx: Context, payload: dict) -> None:  # type: ignore[type-arg]
    return None


class ProgressArgs(msgspec.Struct):
    n: int = 1_000_000
    hold_s: float = 0.0  # stay running this long after the last call (the final value must then
    # land through the writer's coalescing timer, not through the finish that flushes it)


class ProgressResult(msgspec.Struct):
    calls: int
    elapsed_s: float
    calls_per_s: float
    t_last: float  # time.time() right after the last progress call


@task("bench.progress", timeout_s=600)
async def progress_async(ctx: Context, p: ProgressArgs) -> ProgressResult:
    """`await ctx.progress(i, total=n)` in a tight loop."""
    n = p.n
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        await ctx.progress(i, total=n)
    t_last = time.time()
    dt = time.perf_counter() - t0
    if p.hold_s:
        await asyncio.sleep(p.hold_s)
    return ProgressResult(calls=n, elapsed_s=dt, calls_per_s=n / dt, t_last=t_last)


@task("bench.progress_sync", timeout_s=600)
def progress_sync(ctx: Context, p: ProgressArgs) -> ProgressResult:
    """The same from a plain `def` task (runs in the worker's thread pool)."""
    n = p.n
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        ctx.progress(i, total=n)
    t_last = time.time()
    dt = time.perf_counter() - t0
    return ProgressResult(calls=n, elapsed_s=dt, calls_per_s=n / dt, t_last=t_last)


class ChaosArgs(msgspec.Struct):
    ms: int = 200
    steps: int = 0  # progress events, spread over the work


_runs: Any = None


@task("chaos.work", max_attempts=10)
async def chaos_work(ctx: Context, p: ChaosArgs) -> int:
    """bench/chaos.py: records each run of the body (outside Tidings' keys), then works."""
    global _runs
    if _runs is None:
        import os

        import redis.asyncio

        _runs = redis.asyncio.Redis.from_url(os.environ["TIDINGS_REDIS_URL"])
    while True:
        try:  # the record must land, also while Redis is full or frozen
            await _runs.hincrby("chaos:runs", ctx.job_id, 1)
            break
        except Exception:
            await asyncio.sleep(0.2)
    for i in range(p.steps):
        await asyncio.sleep(p.ms / 1000 / p.steps)
        await ctx.progress(i + 1, total=p.steps)
    if not p.steps:
        await asyncio.sleep(p.ms / 1000)
    return ctx.attempt
