"""Background duties every worker shares (each is idempotent, so any worker may do them):
promote due scheduled jobs, drop expired index and dead-letter entries, forget gone consumers,
and keep the set of paused queues fresh. Each tick costs the same however many queues are idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import structlog

from service.core.keys import Keys
from service.core.retry import Backoff, is_transient
from service.core.scripts import GROUP, Ops

log = structlog.get_logger("tidings.worker")
PROMOTE_BATCH = 500


class Maintenance:
    def __init__(
        self,
        r: Any,
        keys: Keys,
        ops: Ops,
        *,
        consumer: str,
        queues: list[str],
        poll_s: float,
        lease_s: float,
        retention_ms: int,
        stop: asyncio.Event,
    ) -> None:
        self.r = r
        self.keys = keys
        self.ops = ops
        self.consumer = consumer
        self.queues = queues
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.retention_ms = retention_ms
        self.stop = stop
        self.paused: set[str] = set()

    async def _every(self, period: float, what: str, fn: Any) -> None:
        backoff = Backoff(0.1, 5.0)
        while not self.stop.is_set():
            try:
                wait = await fn()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                wait = backoff.next()
                if is_transient(e):
                    log.warning(f"{what}.redis_unavailable", error=str(e)[:200])
                else:
                    log.exception(f"{what}.error")
            delay = period if wait is None else wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.stop.wait(), max(0.01, delay) * random.uniform(0.9, 1.1)
                )

    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._every(self.poll_s, "promote", self.promote), name="promote"),
            asyncio.create_task(self._every(60.0, "sweep", self.sweep), name="sweep"),
            asyncio.create_task(
                self._every(self.lease_s, "cleanup", self.cleanup_consumers), name="cleanup"
            ),
            asyncio.create_task(self._every(0.25, "paused", self.refresh_paused), name="paused"),
        ]

    async def refresh_paused(self) -> None:
        self.paused = {n.decode() for n in await self.r.smembers(self.keys.paused())}

    async def promote(self) -> float | None:
        """Move due scheduled jobs to their queues; the wait until the next one is due."""
        now_ms = int(time.time() * 1000)
        wait = self.poll_s
        for k in range(self.keys.partitions):
            due = await self.r.zrangebyscore(
                self.keys.due(k), "-inf", now_ms, start=0, num=50, withscores=False
            )
            for raw in due:
                queue = raw.decode()
                ids = await self.r.zrangebyscore(
                    self.keys.sched(k, queue), "-inf", now_ms, start=0, num=PROMOTE_BATCH
                )
                moved = await self.ops.promote(k, queue, [i.decode() for i in ids]).run(self.r)
                if moved >= PROMOTE_BATCH:
                    wait = 0.0
            nxt = await self.r.zrange(self.keys.due(k), 0, 0, withscores=True)
            if nxt:
                wait = min(wait, max(0.0, nxt[0][1] / 1000 - time.time()))
        return wait

    async def sweep(self) -> None:
        """Drop index entries and dead letters older than the retention (their jobs expired)."""
        cutoff = int(time.time() * 1000) - self.retention_ms
        names = [n.decode() for n in await self.r.hkeys(self.keys.queues())]
        for k in range(self.keys.partitions):
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.xtrim(self.keys.index(k), minid=str(cutoff), approximate=True)
                for q in names:
                    pipe.zremrangebyscore(self.keys.dead(k, q), "-inf", cutoff)
                await pipe.execute()

    async def cleanup_consumers(self) -> None:
        """Remove consumers that are gone (no heartbeat) and hold nothing."""
        live = {n.decode() for n in await self.r.zrange(self.keys.workers(), 0, -1)}
        for k in range(self.keys.partitions):
            for q in self.queues:
                stream = self.keys.queue(k, q)
                for c in await self.r.xinfo_consumers(stream, GROUP):
                    name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                    if name == self.consumer or name in live:
                        continue
                    if (
                        int(c.get("pending", 0)) == 0
                        and int(c.get("idle", 0)) > 2000 * self.lease_s
                    ):
                        await self.r.xgroup_delconsumer(stream, GROUP, name)
