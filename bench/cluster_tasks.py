"""The task bench/cluster.py's chaos run executes (`--tasks bench.cluster_tasks`).

Each run of the body is counted in a separate *ledger* server (`BENCH_LEDGER_URL`, a plain
redis-server outside the cluster under test), so a master kill cannot lose the count: duplicates
are counted from what actually ran, not from what Tidings reports.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import msgspec

from workers import Context, task

RUNS = "cluster-bench:runs"  # hash in the ledger: job id -> times the body started


class Work(msgspec.Struct):
    ms: int = 200
    steps: int = 4


_ledger: Any = None


@task("cluster.work", max_attempts=10)
async def work(ctx: Context, p: Work) -> int:
    """Counts its run in the ledger, then reports `steps` progress events over `ms`."""
    global _ledger
    if _ledger is None:
        import redis.asyncio

        _ledger = redis.asyncio.Redis.from_url(os.environ["BENCH_LEDGER_URL"])
    await _ledger.hincrby(RUNS, ctx.job_id, 1)
    for i in range(p.steps):
        await asyncio.sleep(p.ms / 1000 / max(1, p.steps))
        await ctx.progress(i + 1, total=p.steps)
    return ctx.attempt
