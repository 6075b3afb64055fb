"""A task only some workers have (a mixed fleet), with its own limits and queue, which a
producer that does not import this module learns from the task catalog."""

from __future__ import annotations

import asyncio
import os

from workers import Context, task


@task("x.only_b", max_attempts=5, timeout_s=30, queue="xq")
async def only_b(ctx: Context, p: dict[str, object]) -> int:
    await asyncio.sleep(0.01)
    return os.getpid()
