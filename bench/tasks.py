"""Tasks the benchmarks run in real worker processes (`--tasks bench.tasks`)."""

from __future__ import annotations

import asyncio
import time

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
