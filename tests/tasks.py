"""Tasks the tests run in real worker processes."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import msgspec

from workers import Context, task


class Steps(msgspec.Struct):
    n: int = 3
    delay: float = 0.05


@task("t.steps", max_attempts=3)
async def steps(ctx: Context, p: Steps) -> dict[str, int]:
    for i in range(p.n):
        await asyncio.sleep(p.delay)
        await ctx.progress(i + 1, total=p.n, message=f"step {i + 1}")
    return {"n": p.n, "attempt": ctx.attempt}


@task("t.noop")
async def noop(ctx: Context, p: dict[str, object]) -> None:
    return None


class Marked(msgspec.Struct):
    """Runs `seconds` long, appending a line per start to `marker` (so a test can count runs)."""

    marker: str
    seconds: float = 0.0
    crash_first: int = 0  # os._exit() in the first N attempts (a poison job if >= max_attempts)


@task("t.marked", max_attempts=3)
async def marked(ctx: Context, p: Marked) -> int:
    with open(p.marker, "a") as f:
        f.write(f"{ctx.job_id} {ctx.attempt} {os.getpid()}\n")
    if ctx.attempt <= p.crash_first:
        os._exit(3)
    deadline = time.monotonic() + p.seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return ctx.attempt


class Fail(msgspec.Struct):
    message: str = "boom"
    succeed_on: int = 0  # attempt that succeeds; 0 = never


@task("t.fail", max_attempts=3)
async def fail(ctx: Context, p: Fail) -> str:
    if p.succeed_on and ctx.attempt >= p.succeed_on:
        return "ok"
    raise ValueError(p.message)


class Sleep(msgspec.Struct):
    seconds: float = 60.0


@task("t.sleep", max_attempts=1)
async def sleep(ctx: Context, p: Sleep) -> str:
    await ctx.progress(0, message="sleeping")
    await asyncio.sleep(p.seconds)
    return "woke"


@task("t.sync_sleep", max_attempts=1)
def sync_sleep(ctx: Context, p: Sleep) -> str:
    """A plain def task that polls ctx.cancelled."""
    ctx.progress(0, message="sleeping")
    deadline = time.monotonic() + p.seconds
    while time.monotonic() < deadline:
        if ctx.cancelled:
            return "noticed"
        time.sleep(0.01)
    return "woke"


class Spin(msgspec.Struct):
    seconds: float = 1.0


@task("t.hog", max_attempts=1)
async def hog(ctx: Context, p: Spin) -> str:
    """Blocks the event loop without yielding: leases must still be renewed."""
    deadline = time.monotonic() + p.seconds
    while time.monotonic() < deadline:
        pass
    return "done"


class Spam(msgspec.Struct):
    calls: int = 100_000


@task("t.spam")
async def spam(ctx: Context, p: Spam) -> float:
    t = time.perf_counter()
    for i in range(1, p.calls + 1):
        await ctx.progress(i, total=p.calls)
    return p.calls / (time.perf_counter() - t)


def touch(path: str) -> None:
    Path(path).touch()


class Breaks(msgspec.Struct):
    """Ends one of its worker's own loops (as a bug would), the first time only (per marker)."""

    marker: str
    loop: str = "fetch-0"


@task("t.break_loop", max_attempts=3)
async def break_loop(ctx: Context, p: Breaks) -> int:
    if not os.path.exists(p.marker):
        Path(p.marker).write_text(str(os.getpid()))
        (loop,) = [t for t in asyncio.all_tasks() if t.get_name() == p.loop]
        while not loop.done():
            # again until it ends: Python 3.11's wait_for (inside redis-py's writes) swallows
            # a cancel that lands as the write completes
            loop.cancel()
            await asyncio.sleep(0.05)
        await asyncio.sleep(5)  # the worker stops and hands this job back meanwhile
    return os.getpid()
