"""Example tasks: `demo.count` (async, one progress event per step), `demo.primes` (CPU-bound,
plain def, runs in a thread) and `demo.fail` (fails, to see retries and the dead-letter list)."""

from __future__ import annotations

import asyncio
import math

import msgspec

from workers import Context, task


class CountArgs(msgspec.Struct, forbid_unknown_fields=True):
    n: int
    delay: float = 0.2


class CountResult(msgspec.Struct):
    total: int


@task("demo.count", max_attempts=3, timeout_s=3600)
async def count(ctx: Context, payload: CountArgs) -> CountResult:
    """Count to n, one progress event per step."""
    for i in range(payload.n):
        await asyncio.sleep(payload.delay)
        await ctx.progress(i + 1, total=payload.n, message=f"step {i + 1}")
    return CountResult(total=payload.n)


class PrimesArgs(msgspec.Struct, forbid_unknown_fields=True):
    limit: int = 2_000_000
    chunks: int = 100


class PrimesResult(msgspec.Struct):
    count: int
    largest: int


@task("demo.primes", max_attempts=2, timeout_s=600)
def primes(ctx: Context, payload: PrimesArgs) -> PrimesResult:
    """Count the primes below `limit` by trial division in chunks, reporting each chunk.
    Plain `def`: it runs in the worker's thread pool and checks `ctx.cancelled`."""
    count, largest = 0, 0
    step = max(1, payload.limit // max(1, payload.chunks))
    for start in range(0, payload.limit, step):
        if ctx.cancelled:
            break
        for n in range(max(start, 2), min(start + step, payload.limit)):
            if n % 2 == 0 and n != 2:
                continue
            r = math.isqrt(n)
            if all(n % d for d in range(3, r + 1, 2)):
                count += 1
                largest = n
        done = min(start + step, payload.limit)
        ctx.progress(done, total=payload.limit, message=f"{count} primes below {done}")
    return PrimesResult(count=count, largest=largest)


class FailArgs(msgspec.Struct, forbid_unknown_fields=True):
    message: str = "this task always fails"


@task("demo.fail", max_attempts=2)
async def fail(ctx: Context, payload: FailArgs) -> None:
    """Always raises: shows retrying events, then failed and the dead-letter list."""
    await ctx.progress(0, total=1, message="about to fail")
    raise RuntimeError(payload.message)
