"""The worker's single writer: progress, logs and finishes, batched into one script call per
partition and loop turn, in the order they happened.

Progress is coalesced per job: at most one write per `interval` seconds, always the newest value,
and a job's pending progress is written before its finish. Writes that fail because Redis is away,
full or failing over are retried until they land (each carries a sequence number, so a re-sent
batch is not applied twice); nothing a task reported is dropped, except what fencing refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import structlog

from service.core.durable import Durability
from service.core.retry import Backoff, is_transient
from service.core.scripts import Ops, Write
from service.core.wire import SLog, SProgress, encode_stored

log = structlog.get_logger("tidings.worker")
PARALLEL = 4  # partitions written at once (each holds a connection for its call)
_encode = msgspec.json.Encoder().encode


@dataclass(eq=False)
class Running:
    """One attempt this worker is running."""

    id: str
    run: int
    attempt: int
    max_attempts: int
    task: str
    queue: str
    partition: int
    entry: str
    traceparent: str = ""
    seq: int = 0  # writes sent for this run (the script applies each once)
    pending_progress: tuple[float, float | None, str | None] | None = None
    next_progress_at: float = 0.0
    progress_queued: bool = False
    lost: bool = False
    finishing: bool = False  # its finish was handed to the writer (see Worker._on_lease_verdict)
    cancel_reason: str | None = None  # 'cancel' | 'lost' | 'shutdown'
    handle: asyncio.Task[None] | None = None
    on_cancel: list[Callable[[], None]] = field(default_factory=list)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


def _num(v: float | None) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


Item = tuple[Running, Write, "asyncio.Future[str] | None"]


class Writer:
    def __init__(
        self,
        ops: Ops,
        durability: Durability,
        *,
        interval: float,
        on_fenced: Callable[[Running], None],
    ) -> None:
        self._ops = ops
        self._durable = durability
        self._interval = interval
        self._on_fenced = on_fenced
        self._progress: dict[str, Running] = {}
        self._ops_queue: list[Item] = []
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self.failures = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="tidings-writer")

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def close(self, timeout: float = 10.0) -> None:
        """Flush what is pending (for up to `timeout` while Redis is away), then stop. What cannot
        be written is not lost: those jobs' leases run out and another worker takes them."""
        deadline = time.monotonic() + timeout
        while (self._ops_queue or self._progress or self._busy) and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- called by jobs (progress may come from a worker thread through call_soon_threadsafe) --

    def progress(self, job: Running) -> None:
        if job.lost:
            return
        self._progress[job.id] = job
        now = time.monotonic()
        if now >= job.next_progress_at:
            self._wake.set()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(job.next_progress_at, self._tick)

    def log(self, job: Running, message: str) -> None:
        if job.lost:
            return
        body = encode_stored(SLog(job.attempt, message))
        w = Write("l", job.id, job.queue, job.run, -1, body)
        self._ops_queue.append((job, w, None))
        self._wake.set()

    def finish(
        self, job: Running, outcome: str, fragment: bytes, backoff_ms: int = 0
    ) -> asyncio.Future[str]:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        job.finishing = True
        w = Write("f", job.id, job.queue, job.run, -1, fragment, outcome, backoff_ms)
        self._ops_queue.append((job, w, fut))
        self._wake.set()
        return fut

    def _tick(self) -> None:
        self._timer = None
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------------

    def _collect(self) -> list[Item]:
        now = time.monotonic()
        finishing = {job.id for job, w, _ in self._ops_queue if w.kind == "f"}
        batch: list[Item] = []
        earliest: float | None = None
        for jid, job in list(self._progress.items()):
            if job.lost:
                del self._progress[jid]
                continue
            if jid in finishing or now >= job.next_progress_at:
                del self._progress[jid]
                value = job.pending_progress
                if value is None:
                    continue
                job.pending_progress = None
                job.next_progress_at = now + self._interval
                cur, tot, msg = value
                body = encode_stored(
                    SProgress(job.attempt, _number(cur), None if tot is None else _number(tot), msg)
                )
                w = Write(
                    "p",
                    job.id,
                    job.queue,
                    job.run,
                    job.next_seq(),
                    body,
                    _num(cur),
                    _num(tot),
                    "" if msg is None else msg,
                )
                batch.append((job, w, None))
            elif earliest is None or job.next_progress_at < earliest:
                earliest = job.next_progress_at
        for job, w, fut in self._ops_queue:
            # numbered now, in batch order: the script skips any number it has already applied
            w = msgspec.structs.replace(w, seq=job.next_seq())
            batch.append((job, w, fut))
        self._ops_queue = []
        if earliest is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(earliest, self._tick)
        return batch

    async def _loop(self) -> None:
        backoff = Backoff(0.05, 2.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch = self._collect()
            if not batch:
                continue
            self._busy = True
            while True:
                try:
                    await self._write(batch)
                    self._busy = False
                    backoff.reset()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    # transient (Redis away, full, failing over) or not: never drop a finish;
                    # a re-sent batch is applied once (sequence numbers)
                    self.failures += 1
                    delay = backoff.next()
                    if is_transient(e):
                        log.warning("writer.redis_unavailable", error=str(e)[:200], retry_in=delay)
                    else:
                        log.error("writer.error", error=str(e)[:500], retry_in=delay)
                    await asyncio.sleep(delay)

    async def _write(self, batch: list[Item]) -> None:
        """One script call per partition, up to `PARALLEL` at once: with `redis.wait_replicas`,
        a partition whose master has no replica left (just after a failover) holds its call
        for the WAIT timeout, and the other partitions' writes must not queue behind it. A
        partition's writes stay in order (one call); partitions are independent."""
        by_part: dict[int, list[Item]] = {}
        for item in batch:
            by_part.setdefault(item[0].partition, []).append(item)
        minute = int(time.time() // 60)
        gate = asyncio.Semaphore(PARALLEL)

        async def one(k: int, items: list[Item]) -> None:
            async with gate:
                call = self._ops.apply(k, [w for _, w, _ in items], minute)
                if any(w.kind == "f" for _, w, _ in items):
                    res = await self._durable.run(call, retry=False)
                else:
                    res = await call.run(self._durable.client)
            for (job, _w, fut), verdict in zip(items, res, strict=True):
                if verdict == "fenced" and not job.lost:
                    job.lost = True
                    self._on_fenced(job)
                if fut is not None and not fut.done():
                    fut.set_result(verdict)

        parts = list(by_part)
        results = await asyncio.gather(*(one(k, by_part[k]) for k in parts), return_exceptions=True)
        # what landed is not sent again when the batch is retried for the rest
        landed = {k for k, r in zip(parts, results, strict=True) if r is None}
        batch[:] = [it for it in batch if it[0].partition not in landed]
        for r in results:
            if isinstance(r, BaseException):
                raise r
