"""Questions about many jobs: listing and search, queue figures, dead letters, live workers.

Reads only, each split per partition (one slot each), so they work the same on one Redis and
on a cluster.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec

from service.core.errors import Invalid
from service.core.keys import Keys
from service.core.retry import is_transient
from service.core.scripts import GROUP
from service.core.states import STATES
from service.core.store import JobStore
from service.core.wire import (
    JOB_ID_RE,
    JOB_PREFIX_RE,
    QUEUE_RE,
    Job,
    QueueStats,
    job_id_time_ms,
)

_decode = msgspec.json.Decoder().decode
# an id's time and the index entry's time come from different clocks: allow for skew
SKEW_MS = 120_000
_DIGITS = re.compile(r"[0-9]{1,19}")


class WorkerInfo(msgspec.Struct, kw_only=True):
    name: str
    queues: list[str]
    tasks: list[str]
    concurrency: int
    pid: int
    host: str
    version: str = ""
    started_at: str | None = None
    heartbeat_at: str | None = None
    running: list[str] = msgspec.field(default_factory=list)


_worker = msgspec.json.Decoder(WorkerInfo).decode


def _eid(raw: bytes) -> tuple[int, int]:
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq or 0)


class Queries:
    def __init__(self, r: Any, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self.store = JobStore(r, keys)

    # -- listing ------------------------------------------------------------------------------

    async def list_jobs(
        self,
        *,
        state: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        id_prefix: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first, filtered. `cursor` is the `next` of the previous page."""
        if state is not None and state not in STATES:
            raise Invalid("unknown state", path="state")
        limit = max(1, min(limit, 500))
        lo: tuple[int, int] = (since_ms or 0, 0)
        hi: tuple[int, int] = (until_ms if until_ms is not None else (1 << 63) - 1, 1 << 63)
        if id_prefix:
            id_prefix = id_prefix.lower()
            if not JOB_PREFIX_RE.match(id_prefix):
                raise Invalid("a job id prefix is 1-26 characters of [0-9a-z]", path="q")
            if len(id_prefix) == 26:
                found_one = (await self.store.many([id_prefix]))[0]
                return ([found_one] if found_one is not None else []), None
            if len(id_prefix) >= 2:
                # ids carry their creation time in their first 10 characters
                bits = 5 * min(len(id_prefix), 10)
                head = job_id_time_ms(id_prefix[:10].ljust(10, "0"))
                width = 1 << (50 - bits)
                lo = max(lo, (head - SKEW_MS, 0))
                hi = min(hi, (head + width + SKEW_MS, 0))
        before: tuple[tuple[int, int], str] | None = None
        if cursor:
            eid, _, last_id = cursor.partition(":")
            parts = eid.split("-")
            # ASCII digits only: str.isdigit() also says yes to "²" (int() raises) and to
            # full-width digits
            if len(parts) != 2 or not all(_DIGITS.fullmatch(p) for p in parts):
                raise Invalid("bad cursor", path="cursor")
            before = ((int(parts[0]), int(parts[1])), last_id)
        out: list[Job] = []
        page_size = limit * 4
        upper = hi if before is None else min(hi, before[0])
        while len(out) < limit:
            page: list[tuple[tuple[int, int], str]] = []
            # a partition that filled its page may hold more rows above what the others
            # returned: only rows at or above the highest such cut are complete this round
            cut: tuple[int, int] | None = None
            for k in range(self.keys.partitions):
                rows = await self.r.xrevrange(
                    self.keys.index(k),
                    max=f"{upper[0]}-{min(upper[1], (1 << 63) - 1)}",
                    min=f"{lo[0]}-{lo[1]}",
                    count=page_size,
                )
                if len(rows) == page_size:
                    low = _eid(rows[-1][0])
                    cut = low if cut is None else max(cut, low)
                page.extend((_eid(eid), f[b"j"].decode()) for eid, f in rows)
            page.sort(reverse=True)
            if before is not None:
                page = [p for p in page if p < before]
            if cut is not None:
                page = [p for p in page if p[0] >= cut]
            more = cut is not None
            if not page:
                break
            candidates = [jid for _, jid in page if not id_prefix or jid.startswith(id_prefix)]
            found = dict(zip(candidates, await self.store.many(candidates), strict=True))
            for pos in page:
                before = pos
                job = found.get(pos[1])
                if job is None:
                    continue
                if (state and job.state != state) or (task and job.task != task):
                    continue
                if queue and job.queue != queue:
                    continue
                out.append(job)
                if len(out) >= limit:
                    break
            if not more:
                break
            upper = before[0] if before else upper
        nxt = None
        if before is not None and len(out) >= limit:
            nxt = f"{before[0][0]}-{before[0][1]}:{before[1]}"
        return out, nxt

    async def count_by_state(self, queue: str | None = None) -> dict[str, int]:
        """Jobs per state among the retained ones (from the queue figures and the index)."""
        stats = await self.queues()
        out: dict[str, int] = dict.fromkeys(STATES, 0)
        for s in stats.values():
            if queue and s.name != queue:
                continue
            out["queued"] += s.queued
            out["running"] += s.running
            out["scheduled"] += s.scheduled
        return out

    # -- queues ---------------------------------------------------------------------------------

    async def queues(self) -> dict[str, QueueStats]:
        """Per queue: queued, running, scheduled, dead, live workers, paused, oldest queued."""
        names = {n.decode() for n in await self.r.hkeys(self.keys.queues())}
        paused = {n.decode() for n in await self.r.smembers(self.keys.paused())}
        workers = await self.workers()
        for w in workers:
            names.update(w.queues)
        stats = {n: QueueStats(name=n, paused=n in paused) for n in sorted(names)}
        for w in workers:
            for q in w.queues:
                stats[q].workers += 1
        for k in range(self.keys.partitions):
            order = list(stats)
            async with self.r.pipeline(transaction=False) as pipe:
                for n in order:
                    pipe.xlen(self.keys.queue(k, n))
                    pipe.xinfo_groups(self.keys.queue(k, n))
                    pipe.zcard(self.keys.sched(k, n))
                    pipe.zcard(self.keys.dead(k, n))
                res = await pipe.execute(raise_on_error=False)
            # a missing stream or group is a zero; Redis away or failing over is not
            for r in res:
                if isinstance(r, Exception) and is_transient(r):
                    raise r
            oldest_reads: list[tuple[str, bytes]] = []
            for i, n in enumerate(order):
                xlen, groups, sched, dead = res[4 * i : 4 * i + 4]
                pending, last_delivered = 0, None
                if isinstance(groups, list):
                    for g in groups:
                        gname = g.get("name")
                        if gname in (GROUP, GROUP.encode()):
                            pending = int(g.get("pending", 0))
                            last_delivered = g.get("last-delivered-id")
                s = stats[n]
                xlen = xlen if isinstance(xlen, int) else 0
                s.running += pending
                queued = max(0, xlen - pending)
                s.queued += queued
                s.scheduled += sched if isinstance(sched, int) else 0
                s.dead += dead if isinstance(dead, int) else 0
                if queued:
                    ld = last_delivered if isinstance(last_delivered, bytes) else b"0-0"
                    oldest_reads.append((n, ld))
            for n, ld in oldest_reads:
                rows = await self.r.xrange(self.keys.queue(k, n), min=b"(" + ld, count=1)
                if rows:
                    ms = _eid(rows[0][0])[0]
                    s = stats[n]
                    s.oldest_queued_ms = min(s.oldest_queued_ms or ms, ms)
        return stats

    async def unfinished(self, queue: str) -> int:
        """Entries in the queue's streams: queued and running jobs (scheduled ones excluded)."""
        if not QUEUE_RE.match(queue):
            return 0
        total = 0
        for k in range(self.keys.partitions):
            total += int(await self.r.xlen(self.keys.queue(k, queue)))
        return total

    async def dead(self, queue: str, *, limit: int = 100) -> list[Job]:
        """Dead-lettered jobs of a queue, most recent first."""
        if not QUEUE_RE.match(queue):
            raise Invalid("invalid queue name", path="queue")
        ids: list[tuple[float, str]] = []
        for k in range(self.keys.partitions):
            rows = await self.r.zrevrange(self.keys.dead(k, queue), 0, limit - 1, withscores=True)
            ids.extend((s, m.decode()) for m, s in rows)
        ids.sort(reverse=True)
        jobs = await self.store.many([jid for _, jid in ids[:limit]])
        return [j for j in jobs if j is not None]

    # -- workers and limits -----------------------------------------------------------------------

    async def workers(self) -> list[WorkerInfo]:
        """Live worker processes (fresh heartbeat), with what they serve and run."""
        names = await self.r.zrangebyscore(self.keys.workers(), time.time() - 60, "+inf")
        if not names:
            return []
        raw = await self.r.mget([self.keys.worker(n.decode()) for n in names])
        out = []
        for x in raw:
            if not x:
                continue
            try:
                out.append(_worker(x))
            except msgspec.DecodeError:
                continue
        return out

    async def take_rate(self, principal: str, per_second: float) -> bool:
        """Count one call against `principal`'s per-second budget (shared by all processes)."""
        key = self.keys.rate(principal, int(time.time()))
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, 2)
            count, _ = await pipe.execute()
        return int(count) <= per_second


def is_job_id(value: str) -> bool:
    return bool(JOB_ID_RE.match(value))
