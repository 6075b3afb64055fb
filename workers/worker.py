"""One worker process: a consumer in each queue's group, running up to `concurrency` jobs at once.

Parts: a fetcher per partition (`fetch.py`), the executor (`execute.py`), the single writer
(`writer.py`), the lease thread (`lease.py`) and shared maintenance (`maintenance.py`). If any
of its loops dies anyway, the process exits, so its supervisor starts a fresh one: a worker that
registers as alive must be fetching.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import redis.exceptions
import structlog

from service.core import connect
from service.core.checks import warn_about_server
from service.core.config import Config
from service.core.durable import Durability
from service.core.keys import Keys
from service.core.queues import Queues
from service.core.retry import retrying
from service.core.scripts import GROUP, Entry, Limits, Ops
from service.core.tasks import TaskSpec, publish
from service.core.tracing import NOOP, Tracing
from service.core.wire import iso
from workers.execute import Executor
from workers.fetch import Fetched, Fetcher, Slots
from workers.lease import LeaseThread
from workers.maintenance import Maintenance
from workers.metrics import WorkerMetrics
from workers.writer import Running, Writer

log = structlog.get_logger("tidings.worker")
VERSION = "0.2.0"
DEFER_MS = 1000  # how long a job this worker cannot run waits before it is offered again


class LoopDied(RuntimeError):
    """A worker loop ended with an error it did not handle: the process must restart."""


class Worker:
    def __init__(
        self,
        cfg: Config,
        url: str,
        registry: Mapping[str, TaskSpec],
        *,
        queues: list[str] | None = None,
        concurrency: int | None = None,
        name: str | None = None,
        tracing: Tracing = NOOP,
    ) -> None:
        self.cfg = cfg
        self.url = url
        self.registry = dict(registry)
        self.queues = queues or list(cfg.workers.queues)
        self.concurrency = concurrency or cfg.workers.concurrency
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"
        self.keys = Keys(cfg.redis.prefix, cfg.redis.partitions)
        self.limits = Limits(
            cfg.jobs.firehose_maxlen, cfg.jobs.max_events, int(cfg.jobs.retention_s * 1000)
        )
        self.ops = Ops(self.keys, self.limits)
        self.lease_ms = int(cfg.jobs.lease_s * 1000)
        self.running: dict[str, Running] = {}
        self.log = log.bind(worker=self.name)
        parts = self.keys.partitions
        # blocking reads hold a connection each: one per partition, plus the maintenance loops
        self.r: Any = connect.connect(cfg.redis, url, max_connections=parts + 12)
        # the hot calls (start, the writer's batches, defer) on the lean pipelining client
        self.fast: Any = connect.connect_fast(cfg.redis, url, self.r)
        # each partition's blocking XREADGROUP on a lean connection of its own (single server)
        self.reader = connect.fast_reader(cfg.redis, url)
        self.durability = Durability(self.fast, cfg.redis.wait_replicas, cfg.redis.wait_timeout_ms)
        self.slots = Slots(self.concurrency, parts)
        self._stopping = asyncio.Event()
        self.writer = Writer(
            self.ops,
            self.durability,
            interval=cfg.workers.progress_interval_s,
            on_fenced=self._on_lost,
        )
        self.metrics = WorkerMetrics(
            running=lambda: len(self.running),
            concurrency=self.concurrency,
            worker=self.name,
            version=VERSION,
        )
        self.executor = Executor(
            self.writer,
            cfg.jobs,
            self.concurrency,
            on_done=self._job_done,
            tracing=tracing,
            on_attempt=self.metrics.attempt_ended,
        )
        self._probe: asyncio.Task[None] | None = None
        self.maintenance = Maintenance(
            self.r,
            self.keys,
            self.ops,
            consumer=self.name,
            queues=self.queues,
            poll_s=cfg.workers.poll_s,
            lease_s=cfg.jobs.lease_s,
            retention_ms=self.limits.retention_ms,
            stop=self._stopping,
        )
        self.lease: LeaseThread | None = None
        self.started_at = time.time()

    @property
    def done(self) -> int:
        return self.executor.done

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then shut down gracefully (see `_shutdown`). Raises
        LoopDied if a loop fails for good (the caller exits, and the supervisor restarts us)."""
        self._stopping = stop  # every loop, and start-up itself, gives up once this is set
        self.maintenance.stop = stop
        try:
            await retrying(self._setup, what="worker.start", stop=stop)
        except Exception:
            if stop.is_set():
                await self._close_clients()
                return
            raise
        self.writer.start()
        self.lease = LeaseThread(
            make_client=lambda: connect.connect_sync(self.cfg.redis, self.url),
            keys=self.keys,
            ops=self.ops,
            name=self.name,
            info=self._info(),
            interval=min(1.0, self.cfg.jobs.lease_s / 3),
            running=lambda: list(self.running.values()),
            on_verdict=self._on_lease_verdict,
            loop=asyncio.get_running_loop(),
        )
        self.lease.start()
        self._probe = asyncio.create_task(self.metrics.probe_loop(), name="loop-lag")
        self.log.info(
            "worker.started",
            queues=self.queues,
            concurrency=self.concurrency,
            partitions=self.keys.partitions,
            tasks=sorted(self.registry),
        )
        fetchers = [
            Fetcher(
                self.r,
                self.keys,
                k,
                consumer=self.name,
                queues=self.queues,
                slots=self.slots,
                lease_ms=self.lease_ms,
                paused=lambda: self.maintenance.paused,
                start=self._start,
                ensure_groups=self._ensure_groups,
                stop=stop,
                reader=self.reader,
            )
            for k in range(self.keys.partitions)
        ]
        loops = [asyncio.create_task(f.run(), name=f"fetch-{f.k}") for f in fetchers]
        loops += self.maintenance.tasks()
        assert self.writer.task is not None
        watched: list[asyncio.Task[Any]] = [*loops, self.writer.task]
        stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait([*watched, stopper], return_when=asyncio.FIRST_COMPLETED)
        # a loop that returned because `stop` was set in the same turn did not die
        died = [
            t
            for t in done
            if t is not stopper
            and (t.cancelled() or t.exception() is not None or not stop.is_set())
        ]
        stop.set()
        for t in loops:
            t.cancel()
        # bounded: a loop stuck in a reconnect must not keep the process alive
        await asyncio.wait(loops, timeout=5)
        if died:
            t = died[0]
            exc = t.exception() if not t.cancelled() else None
            self.log.error("worker.loop_died", loop=t.get_name(), error=repr(exc))
            await self._shutdown(grace=0)
            raise LoopDied(f"loop {t.get_name()} died: {exc!r}")
        await self._shutdown(grace=self.cfg.workers.grace_s)

    def _info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queues": self.queues,
            "tasks": sorted(self.registry),
            "concurrency": self.concurrency,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "version": VERSION,
            "started_at": iso(int(self.started_at * 1000)),
        }

    async def _setup(self) -> None:
        await self._ensure_groups()
        await publish(self.r, self.keys, self.registry)
        reg = Queues(self.r, self.keys, self.ops, cap=0)
        for q in self.queues:
            await reg.ensure(q)
        await self.maintenance.refresh_paused()
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await warn_about_server(self.r)

    async def _shutdown(self, grace: float) -> None:
        """Stop fetching (done), let running jobs finish within grace_s, hand the rest back."""
        if self._probe is not None:
            self._probe.cancel()
        if self.running:
            self.log.info("worker.draining", running=len(self.running), grace_s=grace)
            deadline = time.monotonic() + grace
            while self.running and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        for job in list(self.running.values()):
            self.cancel(job, "shutdown")
        # bounded: with Redis away a hand-back cannot land, and the lease takes over instead
        deadline = time.monotonic() + 10
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.writer.close()
        if self.lease is not None:
            self.lease.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._leave_groups(), 3)
        await self._close_clients()
        self.executor.pool.shutdown(wait=False, cancel_futures=True)
        self.log.info("worker.stopped", done=self.done)

    async def _close_clients(self) -> None:
        with contextlib.suppress(Exception):
            await self.r.aclose()
        if self.fast is not self.r:
            with contextlib.suppress(Exception):
                await self.fast.aclose()

    async def _ensure_groups(self) -> None:
        for k in range(self.keys.partitions):
            for q in self.queues:
                try:
                    # from the start of the stream, never "$": it holds only unfinished work
                    await self.r.xgroup_create(self.keys.queue(k, q), GROUP, id="0", mkstream=True)
                except redis.exceptions.ResponseError as e:
                    if "BUSYGROUP" not in str(e):
                        raise

    async def _leave_groups(self) -> None:
        """Remove this consumer from each group if it holds no pending entries."""
        for k in range(self.keys.partitions):
            for q in self.queues:
                stream = self.keys.queue(k, q)
                info = await self.r.xpending_range(
                    stream, GROUP, "-", "+", 1, consumername=self.name
                )
                if not info:
                    await self.r.xgroup_delconsumer(stream, GROUP, self.name)

    # -- starting jobs ------------------------------------------------------------------------

    async def _start(self, k: int, fetched: list[Fetched]) -> int:
        """Start fetched (or reclaimed) entries of partition k; returns how many started."""
        started = 0
        entries: list[Entry] = []
        for queue, eid, fields in fetched:
            if not fields or b"j" not in fields:
                # an entry that is not ours (hand-written garbage): drop it so it cannot loop
                qkey = self.keys.queue(k, queue)
                await self.r.xack(qkey, GROUP, eid)
                await self.r.xdel(qkey, eid)
                self.log.warning("worker.bad_entry", entry=eid, queue=queue)
                continue
            job_id = fields[b"j"].decode()
            task = fields.get(b"t", b"").decode()
            e = Entry(job_id, queue, eid)
            if job_id in self.running:
                continue  # our own entry, reclaimed while we still run it: leave it be
            if task and task not in self.registry:
                # never fail a job for a task we lack: offer it to another worker
                await self._defer(k, e, task)
                continue
            entries.append(e)
        if not entries:
            return 0
        minute = int(time.time() // 60)
        rows = await retrying(
            lambda: self.ops.start(k, self.name, entries, minute).run(self.fast),
            what="start",
            stop=self._stopping,
        )
        queue_of = {e.id: e.queue for e in entries}
        entry_of = {e.id: e.entry for e in entries}
        for row in rows:
            if row.verdict not in ("run", "again") or row.id in self.running:
                continue
            spec = self.registry.get(row.task)
            if spec is None:  # the task changed name under us: cannot happen with the filter
                continue
            job = Running(
                id=row.id,
                run=row.run,
                attempt=row.attempt,
                max_attempts=row.max_attempts,
                task=row.task,
                queue=queue_of[row.id],
                partition=k,
                entry=entry_of[row.id],
                traceparent=row.traceparent,
            )
            self.running[row.id] = job
            started += 1
            timeout = float(row.timeout_s) if row.timeout_s else None
            job.handle = asyncio.create_task(
                self.executor.execute(job, spec, row.payload.encode(), timeout),
                name=f"job:{row.id}",
            )
        return started

    async def _defer(self, k: int, e: Entry, task: str) -> None:
        msg = f"waiting for a worker with task {task!r} (worker {self.name} does not have it)"
        verdict = await retrying(
            lambda: self.ops.defer(k, e, self.name, DEFER_MS, msg).run(self.fast),
            what="defer",
            stop=self._stopping,
        )
        if verdict == "deferred":
            self.log.warning("job.deferred", job_id=e.id, task=task, reason="task unknown here")

    # -- running jobs ---------------------------------------------------------------------------

    def _job_done(self, job: Running) -> None:
        if self.running.pop(job.id, None) is not None:
            self.slots.give_back(1)

    def cancel(self, job: Running, reason: str) -> None:
        if job.cancel_reason is None:
            job.cancel_reason = reason
        for cb in job.on_cancel:
            cb()
        if job.handle is not None and not job.handle.done():
            job.handle.cancel()

    def _on_lost(self, job: Running) -> None:
        """Fencing refused our write: another worker owns this job now. Drop it."""
        job.lost = True
        self.log.warning("job.lost", job_id=job.id, attempt=job.attempt)
        self.cancel(job, "lost")

    def _on_lease_verdict(self, job_id: str, run: int, verdict: str) -> None:
        job = self.running.get(job_id)
        if job is None or job.run != run:
            return
        if verdict == "lost" and job.finishing:
            # the renewal read the job after our own finish landed (with wait_replicas the
            # finish is still waiting for its WAIT): not lost, done; a fenced finish is
            # reported by the writer itself
            return
        if verdict == "cancel":
            self.cancel(job, "cancel")
        elif verdict == "lost":
            self._on_lost(job)
