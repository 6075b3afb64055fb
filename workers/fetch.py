"""Fetching work: one blocking read per partition, each reserving free slots before it reads.

A fetched entry that is not started gets no lease renewal, is taken over after the lease and
runs twice; so no reader asks for more entries than it holds free slots for, and all readers
together never hold more than the worker's concurrency. Entries whose lease ran out (their
worker died) are taken over first (XAUTOCLAIM), before new work is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions
import structlog

from service.core import connect
from service.core.connect import BLOCK_MS
from service.core.keys import Keys
from service.core.retry import Backoff, is_transient
from service.core.scripts import GROUP

log = structlog.get_logger("tidings.worker")

# (queue, entry id, fields) as read from a queue stream
Fetched = tuple[str, str, dict[bytes, bytes] | None]


class Slots:
    """The worker's free capacity, shared by its readers: taken before a read, given back for
    what the read did not bring, and handed over to the running jobs for the rest.

    Readers are served in turn: one that gives its slots back and asks again queues behind the
    readers already waiting. (Without the queue, with fewer slots than readers times `per_read`, the
    readers that got slots first kept re-taking them the instant they gave them back, and the
    other partitions were never read: their jobs waited until some timing accident.)"""

    def __init__(self, capacity: int, readers: int) -> None:
        self.capacity = capacity
        self.used = 0  # running jobs + reservations of readers in flight
        self.per_read = max(1, math.ceil(capacity / max(1, readers)))
        self._waiting: deque[asyncio.Future[int]] = deque()

    @property
    def free(self) -> int:
        return self.capacity - self.used

    def _reserve(self) -> int:
        n = min(self.free, self.per_read)
        self.used += n
        return n

    async def take(self, stop: asyncio.Event, wake_s: float) -> int:
        """Reserve up to `per_read` slots, waiting (up to `wake_s`, in turn) while none is
        free; 0 if none came."""
        if stop.is_set():
            return 0
        if self.free > 0 and not self._waiting:
            return self._reserve()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        try:
            async with asyncio.timeout(wake_s):
                return await fut
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.give_back(fut.result())  # granted as we were cancelled
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiting.remove(fut)
        # granted in the same instant as the timeout: keep it
        return fut.result() if fut.done() and not fut.cancelled() else 0

    def give_back(self, n: int) -> None:
        if n > 0:
            self.used -= n
        while self._waiting and self.free > 0:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(self._reserve())


class Fetcher:
    """Reads one partition's queues for a worker."""

    def __init__(
        self,
        r: Any,
        keys: Keys,
        k: int,
        *,
        consumer: str,
        queues: list[str],
        slots: Slots,
        lease_ms: int,
        paused: Callable[[], set[str]],
        start: Callable[[int, list[Fetched]], Awaitable[int]],
        ensure_groups: Callable[[], Awaitable[None]],
        stop: asyncio.Event,
        reader: Callable[[], Any] | None = None,
    ) -> None:
        self.r = r
        self.reader = reader  # makes this reader's own lean connection (single server)
        self.conn: Any = r  # what it reads with: that connection, else the shared client
        self.keys = keys
        self.k = k
        self.consumer = consumer
        self.queues = queues
        self.slots = slots
        self.lease_ms = lease_ms
        self.paused = paused
        self.start = start
        self.ensure_groups = ensure_groups
        self.stop = stop
        self.reclaim_every = max(0.2, min(lease_ms / 4000, 5.0))
        self._next_reclaim = 0.0
        self.block_ms = min(BLOCK_MS, 500)  # a paused queue is seen within about a second
        self.held = 0  # slots reserved by this reader and not yet taken by a started job

    async def run(self) -> None:
        async with connect.own_connection(self.reader) as own:
            self.conn = own or self.r
            await self._loop()

    async def _loop(self) -> None:
        backoff = Backoff(0.1, 5.0)
        while not self.stop.is_set():
            self.held = await self.slots.take(self.stop, self.reclaim_every)
            if self.held <= 0:
                continue
            try:
                await self._once()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # never let the fetch loop die: Redis away, full, read-only, failing over...
                delay = backoff.next()
                if isinstance(e, redis.exceptions.ResponseError) and "NOGROUP" in str(e):
                    log.warning("worker.group_missing", partition=self.k, error=str(e))
                    await self.ensure_groups()
                elif is_transient(e):
                    log.warning(
                        "worker.redis_unavailable",
                        partition=self.k,
                        error=str(e)[:200],
                        retry_in=round(delay, 2),
                    )
                else:
                    log.exception("worker.fetch_error", partition=self.k, retry_in=round(delay, 2))
                await asyncio.sleep(delay)
            finally:
                self.slots.give_back(self.held)
                self.held = 0

    async def _started(self, fetched: list[Fetched]) -> None:
        # each started job keeps one reserved slot until it ends
        self.held -= await self.start(self.k, fetched)

    async def _once(self) -> None:
        """One turn: take over abandoned entries, else read new ones."""
        active = [q for q in self.queues if q not in self.paused()]
        if time.monotonic() >= self._next_reclaim:
            self._next_reclaim = time.monotonic() + self.reclaim_every * random.uniform(0.8, 1.2)
            for q in active:
                if self.held <= 0:
                    break
                # on the reader's own connection too: it is idle between reads
                entries = await connect.xautoclaim(
                    self.conn,
                    self.keys.queue(self.k, q),
                    GROUP,
                    self.consumer,
                    self.lease_ms,
                    self.held,
                )
                if entries:
                    log.info("worker.reclaimed", queue=q, partition=self.k, count=len(entries))
                    await self._started([(q, eid.decode(), f) for eid, f in entries])
            if self.held <= 0:
                return
        if not active:
            await asyncio.sleep(self.block_ms / 1000)
            return
        resp = await connect.xreadgroup(
            self.conn,
            GROUP,
            self.consumer,
            {self.keys.queue(self.k, q): ">" for q in active},
            count=self.held,
            block=self.block_ms,
        )
        if resp:
            names = {self.keys.queue(self.k, q).encode(): q for q in active}
            fetched = [
                (names[_b(stream)], eid.decode(), fields)
                for stream, entries in resp
                for eid, fields in entries
            ]
            await self._started(fetched)


def _b(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()
