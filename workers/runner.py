"""One worker process: a consumer in each queue's group, running up to `concurrency` jobs at once.

Loops: fetch (XREADGROUP of new entries), reclaim (XAUTOCLAIM of entries whose lease ran out, and
promotion of due scheduled jobs), the writer (workers/writer.py), and a lease thread that renews
the leases of running jobs on its own connection, so a task that hogs the CPU cannot starve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import redis
import redis.asyncio as aioredis
import redis.exceptions
import structlog

from service import contract
from service.checks import warn_about_server
from service.config import Config
from service.contract import GROUP, Keys, Limits
from service.producer import limits_from
from workers.context import Context
from workers.registry import TaskSpec
from workers.writer import Running, Writer

log = structlog.get_logger("tidings.worker")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
MAX_ERROR_CHARS = 4000


def error_fragment(kind: str, message: str, tb: str | None = None) -> bytes:
    body: dict[str, str] = {"type": kind, "message": message[:MAX_ERROR_CHARS]}
    if tb:
        body["traceback"] = tb[-MAX_ERROR_CHARS:]
    return _encode(body)


class Worker:
    def __init__(
        self,
        cfg: Config,
        url: str,
        registry: dict[str, TaskSpec],
        *,
        queues: list[str] | None = None,
        concurrency: int | None = None,
        name: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.url = url
        self.registry = registry
        self.queues = queues or list(cfg.workers.queues)
        self.concurrency = concurrency or cfg.workers.concurrency
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"
        self.keys = Keys(cfg.redis.prefix, cfg.redis.partitions)
        self.limits: Limits = limits_from(cfg.jobs)
        self.lease_ms = int(cfg.jobs.lease_s * 1000)
        self.running: dict[str, Running] = {}
        self.log = log.bind(worker=self.name)
        self.r: Any = aioredis.Redis.from_url(url, **contract.client_options())
        self._streams = {
            self.keys.queue(k, q).encode(): (k, q)
            for k in range(self.keys.partitions)
            for q in self.queues
        }
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="task")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lease_thread: threading.Thread | None = None
        self._lease_stop = threading.Event()
        self.writer = Writer(
            self.r,
            self.keys,
            self.limits,
            interval=cfg.workers.progress_interval_s,
            on_fenced=self._on_lost,
        )
        self.done = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then shut down gracefully (see `_shutdown`)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = stop  # every loop, and start-up itself, gives up once this is set
        await self._ensure_groups()
        with contextlib.suppress(*_REDIS_DOWN):
            await warn_about_server(self.r)
        self.writer.start()
        self._lease_thread = threading.Thread(target=self._lease_main, name="lease", daemon=True)
        self._lease_thread.start()
        self.log.info(
            "worker.started",
            queues=self.queues,
            concurrency=self.concurrency,
            tasks=sorted(self.registry),
        )
        loops = [
            asyncio.create_task(self._fetch_loop(), name="fetch"),
            asyncio.create_task(self._cleanup_loop(), name="cleanup"),
            asyncio.create_task(self._promote_loop(), name="promote"),
        ]
        await stop.wait()
        for t in loops:
            t.cancel()
        # bounded: a loop stuck in a reconnect must not keep the process alive; each loop also
        # checks _stopping, in case a client library swallowed the cancellation
        await asyncio.wait(loops, timeout=5)
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop fetching (done), let running jobs finish within grace_s, hand the rest back."""
        grace = self.cfg.workers.grace_s
        if self.running:
            self.log.info("worker.draining", running=len(self.running), grace_s=grace)
            deadline = time.monotonic() + grace
            while self.running and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        for job in list(self.running.values()):
            self._cancel(job, "shutdown")
        # bounded: with Redis away a hand-back cannot land, and the lease takes over instead
        deadline = time.monotonic() + 10
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.writer.close()
        self._lease_stop.set()
        with contextlib.suppress(*_REDIS_DOWN):
            await self._leave_groups()
        await self.r.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.log.info("worker.stopped", done=self.done)

    async def _ensure_groups(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                for stream in self._streams:
                    try:
                        # from the start of the stream, never "$": it holds only unfinished work
                        await self.r.xgroup_create(stream, GROUP, id="0", mkstream=True)
                    except redis.exceptions.ResponseError as e:
                        if "BUSYGROUP" not in str(e):
                            raise
                return
            except _REDIS_DOWN as e:
                self.log.warning("worker.redis_unavailable", error=str(e), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _leave_groups(self) -> None:
        """Remove this consumer from each group if it holds no pending entries."""
        for stream in self._streams:
            info = await self.r.xpending_range(stream, GROUP, "-", "+", 1, consumername=self.name)
            if not info:
                await self.r.xgroup_delconsumer(stream, GROUP, self.name)

    # -- fetching ----------------------------------------------------------------------------

    def free_slots(self) -> int:
        return self.concurrency - len(self.running)

    async def _fetch_loop(self) -> None:
        delay = 0.1
        reclaim_every = max(0.2, min(self.cfg.jobs.lease_s / 4, 5.0))
        next_reclaim = 0.0
        while not self._stopping.is_set():
            free = self.free_slots()
            if free <= 0:
                self._slot_free.clear()
                with contextlib.suppress(TimeoutError):
                    # wake for reclaims even while busy: slots free up at a job's end
                    await asyncio.wait_for(self._slot_free.wait(), reclaim_every)
                continue
            try:
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + reclaim_every * random.uniform(0.8, 1.2)
                    await self._reclaim()
                    free = self.free_slots()
                    if free <= 0:
                        continue
                resp = await self.r.xreadgroup(
                    GROUP,
                    self.name,
                    {s: ">" for s in self._streams},
                    count=free,
                    block=int(min(1.0, reclaim_every) * 1000),
                )
                delay = 0.1
            except redis.exceptions.ResponseError as e:
                if "NOGROUP" in str(e):
                    self.log.warning("worker.group_missing", error=str(e))
                    await self._ensure_groups()
                    continue
                # e.g. OOM or a read-only replica: never let the fetch loop die silently
                self.log.error("worker.redis_error", error=str(e), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except _REDIS_DOWN as e:
                self.log.warning("worker.redis_unavailable", error=str(e), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if resp:
                await self._start(
                    [
                        (self._streams[stream], eid.decode(), fields)
                        for stream, entries in resp
                        for eid, fields in entries
                    ]
                )

    async def _start(
        self, entries: list[tuple[tuple[int, str], str, dict[bytes, bytes] | None]]
    ) -> None:
        """Run the start transition for fetched or reclaimed entries, then launch the jobs."""
        by_part: dict[int, list[Any]] = {}
        queue_of: dict[str, str] = {}
        for (k, q), eid, fields in entries:
            if not fields or b"j" not in fields:
                # an entry that is not ours (hand-written garbage): drop it so it cannot loop
                await self.r.xack(self.keys.queue(k, q), GROUP, eid)
                await self.r.xdel(self.keys.queue(k, q), eid)
                self.log.warning("worker.bad_entry", entry=eid, queue=q)
                continue
            job_id = fields[b"j"].decode()
            queue_of[job_id] = q
            by_part.setdefault(k, []).extend([job_id, q, eid])
        for k, flat in by_part.items():
            args = contract.script_args(
                self.keys, self.limits, k, "start", self.name, len(flat) // 3, *flat
            )
            delay = 0.05
            while True:
                try:
                    res = await contract.call(self.r, args)
                    break
                except _REDIS_DOWN as e:
                    if self._stopping.is_set():
                        return
                    # the entries stay pending under our name; if we never get through, their
                    # lease runs out and another worker takes them
                    self.log.warning("worker.redis_unavailable", error=str(e), retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            for row in res:
                if row[1] != b"run":
                    continue
                _, _, run, attempt, task, payload, timeout, _max, entry = row
                job_id = row[0].decode()
                t = task.decode()
                job = Running(
                    id=job_id,
                    run=int(run),
                    attempt=int(attempt),
                    task=t,
                    queue=queue_of[job_id],
                    partition=k,
                    entry=entry.decode(),
                )
                self.running[job_id] = job
                job.handle = asyncio.create_task(
                    self._execute(job, payload, float(timeout) if timeout else None),
                    name=f"job:{job_id}",
                )

    # -- running one job ------------------------------------------------------------------------

    async def _execute(self, job: Running, raw_payload: bytes, timeout: float | None) -> None:
        spec = self.registry.get(job.task)
        outcome, fragment = "fail", b""
        ctx: Context | None = None
        try:
            if spec is None:
                fragment = error_fragment("UnknownTask", f"no task {job.task!r} in this worker")
                return
            try:
                payload = spec.decode_payload(_decode(raw_payload))
            except (msgspec.ValidationError, msgspec.DecodeError) as e:
                fragment = error_fragment("InvalidPayload", str(e))
                return
            ctx = self._context(job, spec)
            timer = asyncio.timeout(timeout) if timeout else None
            try:
                if timer is None:
                    result = await self._call(spec, ctx, payload)
                else:
                    async with timer:
                        result = await self._call(spec, ctx, payload)
            except TimeoutError:
                if timer is None or not timer.expired():
                    raise
                ctx._set_cancelled()
                outcome, fragment = (
                    "error",
                    error_fragment("Timeout", f"timeout: attempt exceeded {timeout:g}s"),
                )
                return
            try:
                outcome, fragment = "succeeded", _encode(result)
            except (TypeError, ValueError, OverflowError) as e:
                outcome, fragment = "fail", error_fragment("ResultNotJSON", str(e))
        except asyncio.CancelledError:
            if ctx is not None:
                ctx._set_cancelled()
            reason = job.cancel_reason or "shutdown"
            if reason == "lost":
                outcome = ""
            elif reason == "cancel":
                outcome, fragment = "cancelled", b""
            else:
                outcome, fragment = "handback", b""
        except Exception as e:
            outcome = "error"
            fragment = error_fragment(type(e).__name__, str(e) or repr(e), traceback.format_exc())
            self.log.info(
                "job.error", job_id=job.id, task=job.task, attempt=job.attempt, error=str(e)
            )
        finally:
            await self._finish(job, outcome, fragment)

    async def _call(self, spec: TaskSpec, ctx: Context, payload: Any) -> Any:
        if spec.is_async:
            return await spec.fn(ctx, payload)
        return await asyncio.get_running_loop().run_in_executor(self._pool, spec.fn, ctx, payload)

    async def _finish(self, job: Running, outcome: str, fragment: bytes) -> None:
        try:
            if outcome and not job.lost:
                backoff = 0
                if outcome == "error":
                    base, cap = self.cfg.jobs.backoff_base_s, self.cfg.jobs.backoff_cap_s
                    backoff = int(
                        min(cap, base * 2 ** (job.attempt - 1)) * random.uniform(0.5, 1.0) * 1000
                    )
                # shielded: a shutdown must not lose the finish of a job that already ran
                await asyncio.shield(self.writer.finish(job, outcome, fragment, backoff))
                self.done += 1
        finally:
            self.running.pop(job.id, None)
            self._slot_free.set()

    def _context(self, job: Running, spec: TaskSpec) -> Context:
        loop = asyncio.get_running_loop()
        writer = self.writer

        def from_thread(j: Running) -> None:
            j.progress_queued = False
            writer.progress(j)

        def report(cur: float, tot: float | None, msg: str | None) -> bool:
            job.pending_progress = (cur, tot, msg)
            if not spec.is_async:
                if not job.progress_queued:
                    job.progress_queued = True
                    loop.call_soon_threadsafe(from_thread, job)
                return False
            writer.progress(job)
            return time.monotonic() >= job.next_progress_at

        def log_line(message: str) -> None:
            if spec.is_async:
                writer.log(job, str(message))
            else:
                loop.call_soon_threadsafe(writer.log, job, str(message))

        ctx = Context(
            job_id=job.id,
            task=job.task,
            queue=job.queue,
            attempt=job.attempt,
            progress=report,
            log=log_line,
        )
        job.on_cancel.append(ctx._set_cancelled)
        return ctx

    def _cancel(self, job: Running, reason: str) -> None:
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
        self._cancel(job, "lost")

    def _on_lease_verdict(self, job_id: str, run: int, verdict: str) -> None:
        job = self.running.get(job_id)
        if job is None or job.run != run:
            return
        if verdict == "cancel":
            self._cancel(job, "cancel")
        elif verdict == "lost":
            self._on_lost(job)

    # -- leases (thread) ------------------------------------------------------------------------

    def _lease_main(self) -> None:
        """Renew the leases of running jobs every `interval`, on a connection of its own; also
        learn of cancellation requests and lost jobs, and keep the worker registry fresh."""
        interval = min(1.0, self.cfg.jobs.lease_s / 3)
        r = redis.Redis.from_url(
            self.url, decode_responses=False, socket_timeout=max(interval, 1.0) * 2
        )
        info = _encode(
            {
                "name": self.name,
                "queues": self.queues,
                "tasks": sorted(self.registry),
                "concurrency": self.concurrency,
                "pid": os.getpid(),
                "host": socket.gethostname(),
            }
        )
        try:
            while not self._lease_stop.wait(interval):
                try:
                    self._renew(r)
                    with r.pipeline(transaction=False) as pipe:
                        now = time.time()
                        pipe.zadd(self.keys.workers(), {self.name: now})
                        pipe.set(self.keys.worker(self.name), info, px=int(interval * 3000) + 2000)
                        pipe.zremrangebyscore(self.keys.workers(), "-inf", now - interval * 3 - 2)
                        pipe.execute()
                except _REDIS_DOWN as e:
                    self.log.warning("lease.redis_unavailable", error=str(e))
                except Exception:
                    self.log.exception("lease.error")
        finally:
            with contextlib.suppress(*_REDIS_DOWN):
                r.zrem(self.keys.workers(), self.name)
                r.delete(self.keys.worker(self.name))
            r.close()

    def _renew(self, r: Any) -> None:
        jobs = [j for j in list(self.running.values()) if not j.lost]
        by_part: dict[int, list[Running]] = {}
        for j in jobs:
            by_part.setdefault(j.partition, []).append(j)
        loop = self._loop
        assert loop is not None
        for k, group in by_part.items():
            flat = [x for j in group for x in (j.id, j.run)]
            res = contract.call_sync(
                r,
                contract.script_args(
                    self.keys, self.limits, k, "renew", self.name, len(group), *flat
                ),
            )
            for j, verdict in zip(group, res, strict=True):
                v = verdict.decode()
                if v != "ok":
                    loop.call_soon_threadsafe(self._on_lease_verdict, j.id, j.run, v)

    # -- reclaim, promote -----------------------------------------------------------------------

    async def _reclaim(self) -> None:
        """Take over entries whose lease ran out (XAUTOCLAIM), up to our free slots. Called by
        the fetch loop before it reads new work, so abandoned jobs go first."""
        for stream, (k, q) in self._streams.items():
            free = self.free_slots()
            if free <= 0:
                return
            res = await self.r.xautoclaim(
                stream, GROUP, self.name, self.lease_ms, "0-0", count=free
            )
            entries = res[1] if len(res) > 1 else []
            if entries:
                self.log.info("worker.reclaimed", queue=q, count=len(entries))
                await self._start([((k, q), eid.decode(), fields) for eid, fields in entries])

    async def _cleanup_loop(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self.cfg.jobs.lease_s * random.uniform(0.8, 1.2))
            try:
                await self._cleanup_consumers()
            except redis.exceptions.ResponseError as e:
                self.log.warning("cleanup.error", error=str(e))
            except _REDIS_DOWN as e:
                self.log.warning("worker.redis_unavailable", error=str(e))

    async def _cleanup_consumers(self) -> None:
        """Remove consumers that are gone (no heartbeat) and hold nothing."""
        live = {n.decode() for n in await self.r.zrange(self.keys.workers(), 0, -1)}
        for stream in self._streams:
            for c in await self.r.xinfo_consumers(stream, GROUP):
                name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                if name == self.name or name in live:
                    continue
                if int(c.get("pending", 0)) == 0 and int(c.get("idle", 0)) > 2 * self.lease_ms:
                    await self.r.xgroup_delconsumer(stream, GROUP, name)

    async def _promote_loop(self) -> None:
        poll = self.cfg.workers.poll_s
        sweep_at = 0.0
        while not self._stopping.is_set():
            wait = poll
            try:
                for k in range(self.keys.partitions):
                    moved, next_ms = await contract.call(
                        self.r, contract.script_args(self.keys, self.limits, k, "promote", 500)
                    )
                    if int(next_ms) >= 0:
                        wait = min(wait, int(next_ms) / 1000)
                    if int(moved) >= 500:
                        wait = 0
                    if time.monotonic() > sweep_at:
                        await contract.call(
                            self.r, contract.script_args(self.keys, self.limits, k, "sweep")
                        )
                if time.monotonic() > sweep_at:
                    sweep_at = time.monotonic() + 60
            except (*_REDIS_DOWN, redis.exceptions.ResponseError) as e:
                self.log.warning("worker.redis_unavailable", error=str(e))
            await asyncio.sleep(max(wait, 0.01) * random.uniform(0.9, 1.1))
