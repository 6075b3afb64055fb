"""Tasks the benchmarks run in real worker processes (`--tasks bench.tasks`)."""

from __future__ import annotations

import asyncio
import random
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


class TickArgs(msgspec.Struct):
    steps: int = 10
    every_s: float = 1.0
    gate: str = "latbench:go"  # a Redis key (outside Tidings' keys): the start time, epoch s
    hold_s: float = 0.0  # stay running this long after the last report


_gate: asyncio.Future[float] | None = None
_gate_poller: asyncio.Task[None] | None = None  # held: a task nobody references may be collected


async def _poll_gate(key: str, fut: asyncio.Future[float]) -> None:
    import os

    import redis.asyncio

    r = redis.asyncio.Redis.from_url(os.environ["TIDINGS_REDIS_URL"])
    try:
        while True:
            try:
                v = await r.get(key)
            except Exception:
                v = None
            if v is not None:
                fut.set_result(float(v))
                return
            await asyncio.sleep(0.05)
    finally:
        await r.aclose()


@task("bench.tick")
async def tick(ctx: Context, p: TickArgs) -> int:
    """bench/progress_latency.py: waits for the start time (one GET poller per worker process,
    shared by every job), then after a random phase in [0, every_s) reports progress once per
    `every_s` for `steps` steps, the message carrying time.time() at the call."""
    global _gate, _gate_poller
    if _gate is None:
        loop = asyncio.get_running_loop()
        _gate = loop.create_future()
        _gate_poller = loop.create_task(_poll_gate(p.gate, _gate))
    start = await asyncio.wait_for(asyncio.shield(_gate), 3600)
    t0 = start + random.random() * p.every_s
    for k in range(1, p.steps + 1):
        delay = t0 + (k - 1) * p.every_s - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await ctx.progress(k, total=p.steps, message=f"{time.time():.6f}")
    if p.hold_s:
        await asyncio.sleep(p.hold_s)
    return p.steps
