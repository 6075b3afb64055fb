"""Submit and follow jobs from Python, with no HTTP hop. The HTTP API is built on this class."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

import msgspec
import redis.asyncio as aioredis

from service import contract
from service.config import Config, JobsConfig
from service.contract import (
    GROUP,
    IDEM_RE,
    JOB_ID_RE,
    QUEUE_RE,
    STATES,
    TASK_RE,
    TERMINAL,
    Event,
    Job,
    Keys,
    Limits,
)
from service.errors import Conflict, Invalid, NotFound
from service.hub import Hub
from workers.registry import REGISTRY, TaskSpec

_encode = msgspec.json.Encoder().encode
MAX_DELAY_S = 366 * 86400.0
MAX_TIMEOUT_S = 7 * 86400.0
BATCH = 100  # jobs per script call in submit_many: short calls, packed while the last one runs


class SubmitRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of POST /api/jobs, and one item of submit_many."""

    task: str
    payload: Any = None
    queue: str = "default"
    delay_s: float = 0.0
    max_attempts: int | None = None
    timeout_s: float | None = None
    idempotency_key: str | None = None


class QueueStats(msgspec.Struct, kw_only=True):
    name: str
    queued: int = 0
    running: int = 0
    scheduled: int = 0
    dead: int = 0
    workers: int = 0


class Submitted(msgspec.Struct, kw_only=True):
    job: Job
    created: bool


def limits_from(cfg: JobsConfig) -> Limits:
    return Limits(
        firehose_maxlen=cfg.firehose_maxlen,
        max_events=cfg.max_events,
        retention_ms=int(cfg.retention_s * 1000),
    )


class Producer:
    """Submit, inspect, wait for, cancel and retry jobs.

    `registry` holds the tasks known in this process: their payloads are validated and normalised
    at submit. With `strict`, a task not in it is refused (the HTTP API is strict); otherwise the
    payload goes through as given and the worker validates it.
    """

    def __init__(
        self,
        r: Any,
        *,
        keys: Keys | None = None,
        jobs: JobsConfig | None = None,
        registry: dict[str, TaskSpec] | None = None,
        strict: bool = False,
        owns_client: bool = False,
    ) -> None:
        # an asyncio redis.Redis with decode_responses=False (typed Any: redis-py's return
        # types are bytes|str unions that do not narrow)
        self.redis: Any = r
        self.keys = keys or Keys()
        self.jobs_config = jobs or JobsConfig()
        self.limits = limits_from(self.jobs_config)
        self.registry = REGISTRY if registry is None else registry
        self.strict = strict
        self._owns_client = owns_client
        self._hub: Hub | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "tidings",
        partitions: int = 1,
        config: Config | None = None,
        **kw: Any,
    ) -> Producer:
        if config is not None:
            prefix, partitions = config.redis.prefix, config.redis.partitions
            kw.setdefault("jobs", config.jobs)
        r = aioredis.Redis.from_url(url, **contract.client_options())
        return cls(r, keys=Keys(prefix, partitions), owns_client=True, **kw)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._hub is not None:
            await self._hub.close()
            self._hub = None
        if self._owns_client:
            await self.redis.aclose()

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            self._hub = Hub(self.redis, self.keys)
        return self._hub

    # -- submit ---------------------------------------------------------------------------

    def _prepare(self, req: SubmitRequest) -> tuple[int, list[Any]]:
        """Validate one submission; return its partition and its 8 script fields."""
        if not TASK_RE.match(req.task):
            raise Invalid("invalid task name", path="$.task")
        if not QUEUE_RE.match(req.queue):
            raise Invalid("invalid queue name", path="$.queue")
        spec = self.registry.get(req.task)
        payload = req.payload
        _check_ints(payload, "$.payload")
        if spec is not None:
            try:
                payload = spec.decode_payload(payload)
            except msgspec.ValidationError as e:
                msg, _, where = str(e).partition(" - at `$")
                raise Invalid(msg, path="$.payload" + where.rstrip("`")) from e
        elif self.strict:
            raise Invalid(f"unknown task {req.task!r}", path="$.task")
        if not (math.isfinite(req.delay_s) and 0 <= req.delay_s <= MAX_DELAY_S):
            raise Invalid(f"delay_s must be between 0 and {MAX_DELAY_S:.0f}", path="$.delay_s")
        max_attempts = req.max_attempts
        if max_attempts is None:
            max_attempts = (spec and spec.max_attempts) or self.jobs_config.max_attempts
        if not 1 <= max_attempts <= 1000:
            raise Invalid("max_attempts must be between 1 and 1000", path="$.max_attempts")
        timeout = req.timeout_s
        if timeout is None:
            timeout = (spec and spec.timeout_s) or self.jobs_config.timeout_s or None
        if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT_S):
            raise Invalid(f"timeout_s must be in (0, {MAX_TIMEOUT_S:.0f}]", path="$.timeout_s")
        if req.idempotency_key is not None:
            if not IDEM_RE.match(req.idempotency_key):
                raise Invalid(
                    "idempotency_key: 1-200 printable ASCII characters", path="$.idempotency_key"
                )
            job_id = contract.idempotent_job_id(self.keys.prefix, req.idempotency_key)
        else:
            job_id = contract.new_job_id()
        try:
            encoded = _encode(payload)
        except (TypeError, ValueError, OverflowError) as e:
            raise Invalid(f"payload is not JSON: {e}", path="$.payload") from e
        fields = [
            job_id,
            req.task,
            req.queue,
            encoded,
            max_attempts,
            "" if timeout is None else repr(float(timeout)),
            int(req.delay_s * 1000),
            req.idempotency_key or "",
        ]
        return self.keys.partition(job_id), fields

    async def submit(
        self,
        task: str,
        payload: Any = None,
        *,
        queue: str = "default",
        delay_s: float = 0.0,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit one job; with an idempotency key already used, return that job instead."""
        req = SubmitRequest(
            task=task,
            payload=payload,
            queue=queue,
            delay_s=delay_s,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            idempotency_key=idempotency_key,
        )
        return (await self.submit_request(req)).job

    async def submit_request(self, req: SubmitRequest) -> Submitted:
        k, fields = self._prepare(req)
        res = await contract.call(
            self.redis, contract.script_args(self.keys, self.limits, k, "submit", 1, *fields)
        )
        created, job_id, state, created_at = res[0]
        if not created:
            return Submitted(job=await self.get(job_id.decode()), created=False)
        return Submitted(job=self._fresh(fields, state.decode(), created_at.decode()), created=True)

    def _fresh(self, fields: list[Any], state: str, created_at: str) -> Job:
        job_id, task, queue, payload, max_attempts, timeout = fields[:6]
        return Job(
            id=job_id,
            task=task,
            queue=queue,
            state=state,
            attempt=0,
            max_attempts=int(max_attempts),
            progress=contract.Progress(),
            payload=msgspec.json.decode(payload),
            created_at=created_at,
            timeout_s=float(timeout) if timeout else None,
        )

    async def submit_many(self, items: Iterable[tuple[str, Any] | SubmitRequest]) -> list[Job]:
        """Submit many jobs in few round trips (one script call per partition and batch)."""
        prepared: list[tuple[int, list[Any]]] = []
        for it in items:
            req = it if isinstance(it, SubmitRequest) else SubmitRequest(task=it[0], payload=it[1])
            prepared.append(self._prepare(req))
        by_part: dict[int, list[list[Any]]] = {}
        for k, fields in prepared:
            by_part.setdefault(k, []).append(fields)
        results: dict[int, list[Any]] = {}
        for k, rows in by_part.items():
            out: list[Any] = []
            # one chunk in flight while the next is packed; chunks land in order (FIFO)
            pending: asyncio.Task[Any] | None = None
            for i in range(0, len(rows), BATCH):
                chunk = rows[i : i + BATCH]
                flat = [x for row in chunk for x in row]
                args = contract.script_args(self.keys, self.limits, k, "submit", len(chunk), *flat)
                if pending is not None:
                    out.extend(await pending)
                pending = asyncio.ensure_future(contract.call(self.redis, args))
                await asyncio.sleep(0)  # let it go out now, then pack the next chunk meanwhile
            if pending is not None:
                out.extend(await pending)
            results[k] = out
        jobs: list[Job] = []
        cursor = dict.fromkeys(by_part, 0)
        for k, fields in prepared:
            created, job_id, state, created_at = results[k][cursor[k]]
            cursor[k] += 1
            if created:
                jobs.append(self._fresh(fields, state.decode(), created_at.decode()))
            else:
                jobs.append(await self.get(job_id.decode()))
        return jobs

    # -- read -----------------------------------------------------------------------------

    def _check_id(self, job_id: str) -> None:
        if not JOB_ID_RE.match(job_id):
            raise NotFound("no such job")

    async def get(self, job_id: str) -> Job:
        """The job's current snapshot (NotFound when it does not exist or has expired)."""
        self._check_id(job_id)
        h = await self.redis.hgetall(self.keys.job(job_id))
        if not h:
            raise NotFound("no such job")
        return contract.job_from_hash(job_id, h)

    async def snapshot(self, job_id: str) -> tuple[Job, list[Event]]:
        """The job and all its retained events, read atomically."""
        self._check_id(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.job(job_id))
            pipe.lrange(self.keys.events(job_id), 0, -1)
            h, raw = await pipe.execute()
        if not h:
            raise NotFound("no such job")
        return contract.job_from_hash(job_id, h), [Event.from_list_item(x) for x in raw]

    async def events(self, job_id: str) -> list[Event]:
        return (await self.snapshot(job_id))[1]

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Follow the job's events until it is finished; return its final snapshot.

        The snapshot is read once, after subscribing, and brought up to date from the events
        that follow, so a wait costs no extra read at the end."""
        self._check_id(job_id)
        hub = self.hub
        await hub.ready()
        waiter = _Follower()
        hub.subscribe(job_id, waiter)
        try:
            job = await self.get(job_id)
            async with asyncio.timeout(timeout):
                while True:
                    for data in waiter.drain():
                        contract.apply_event(job, data)
                    if job.state in TERMINAL:
                        return job
                    if waiter.reset:
                        waiter.reset = False
                        job = await self.get(job_id)
                        continue
                    await waiter.wake()
        finally:
            hub.unsubscribe(job_id, waiter)

    async def list_jobs(
        self,
        *,
        state: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first. `cursor` is the `next` of the previous page."""
        if state is not None and state not in STATES:
            raise Invalid("unknown state", path="state")
        limit = max(1, min(limit, 500))
        before: tuple[float, str] | None = None
        if cursor:
            ms, _, last_id = cursor.partition(":")
            try:
                before = (float(ms), last_id)
            except ValueError as e:
                raise Invalid("bad cursor", path="cursor") from e
        out: list[Job] = []
        scan_max = "+inf" if before is None else repr(before[0])
        while len(out) < limit:
            page: list[tuple[float, str]] = []
            for k in range(self.keys.partitions):
                rows = await self.redis.zrevrangebyscore(
                    self.keys.index(k), scan_max, "-inf", start=0, num=limit * 4, withscores=True
                )
                page.extend((score, m.decode()) for m, score in rows)
            page.sort(reverse=True)
            if before is not None:
                page = [p for p in page if p < before]
            if not page:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, jid in page:
                    pipe.hgetall(self.keys.job(jid))
                hashes = await pipe.execute()
            for (score, jid), h in zip(page, hashes, strict=True):
                before = (score, jid)
                if not h:
                    continue
                job = contract.job_from_hash(jid, h)
                if (state and job.state != state) or (task and job.task != task):
                    continue
                if queue and job.queue != queue:
                    continue
                out.append(job)
                if len(out) >= limit:
                    break
            scan_max = repr(before[0]) if before else "+inf"
            if len(page) < limit * 4:
                break
        nxt = f"{before[0]:.0f}:{before[1]}" if before and len(out) >= limit else None
        return out, nxt

    async def queues(self) -> dict[str, QueueStats]:
        """Per queue: queued, running, scheduled, dead, and live workers consuming it."""
        names: set[str] = set()
        for k in range(self.keys.partitions):
            names.update(m.decode() for m in await self.redis.smembers(self.keys.queue_names(k)))
        workers = await self.live_workers()
        stats = {n: QueueStats(name=n) for n in sorted(names)}
        for w in workers:
            for q in w.get("queues", []):
                stats.setdefault(q, QueueStats(name=q)).workers += 1
        async with self.redis.pipeline(transaction=False) as pipe:
            order: list[tuple[str, int]] = []
            for n in stats:
                for k in range(self.keys.partitions):
                    pipe.xlen(self.keys.queue(k, n))
                    pipe.xinfo_groups(self.keys.queue(k, n))
                    pipe.zcard(self.keys.sched(k, n))
                    pipe.zcard(self.keys.dead(k, n))
                    order.append((n, k))
            res = await pipe.execute(raise_on_error=False)
        for i, (n, _) in enumerate(order):
            xlen, groups, sched, dead = res[4 * i : 4 * i + 4]
            pending = 0
            if isinstance(groups, list):
                for g in groups:
                    if g.get("name") in (GROUP, GROUP.encode()):
                        pending = int(g.get("pending", 0))
            s = stats[n]
            xlen = xlen if isinstance(xlen, int) else 0
            s.running += pending
            s.queued += max(0, xlen - pending)
            s.scheduled += sched if isinstance(sched, int) else 0
            s.dead += dead if isinstance(dead, int) else 0
        return stats

    async def take_rate(self, principal: str, per_second: float) -> bool:
        """Count one submit against `principal`'s per-second budget (shared by all processes)."""
        key = self.keys.rate(principal, int(time.time()))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, 2)
            count, _ = await pipe.execute()
        return int(count) <= per_second

    async def unfinished(self, queue: str) -> int:
        """Entries in the queue's streams: queued and running jobs (scheduled ones excluded)."""
        if not QUEUE_RE.match(queue):
            return 0
        total = 0
        for k in range(self.keys.partitions):
            total += int(await self.redis.xlen(self.keys.queue(k, queue)))
        return total

    async def live_workers(self) -> list[dict[str, Any]]:
        """Workers whose heartbeat is fresh, with the queues and tasks they serve."""
        names = await self.redis.zrangebyscore(self.keys.workers(), "-inf", "+inf")
        if not names:
            return []
        raw = await self.redis.mget([self.keys.worker(n.decode()) for n in names])
        return [msgspec.json.decode(x) for x in raw if x]

    async def dead(self, queue: str, *, limit: int = 100) -> list[Job]:
        """Dead-lettered jobs of a queue, most recent first."""
        if not QUEUE_RE.match(queue):
            raise Invalid("invalid queue name", path="queue")
        ids: list[tuple[float, str]] = []
        for k in range(self.keys.partitions):
            rows = await self.redis.zrevrange(
                self.keys.dead(k, queue), 0, limit - 1, withscores=True
            )
            ids.extend((s, m.decode()) for m, s in rows)
        ids.sort(reverse=True)
        jobs = []
        for _, jid in ids[:limit]:
            try:
                jobs.append(await self.get(jid))
            except NotFound:
                continue
        return jobs

    # -- control --------------------------------------------------------------------------

    async def _control(self, op: str, job_id: str) -> tuple[str, str]:
        self._check_id(job_id)
        k = self.keys.partition(job_id)
        status, state = await contract.call(
            self.redis, contract.script_args(self.keys, self.limits, k, op, job_id)
        )
        status, state = status.decode(), state.decode()
        if status == "missing":
            raise NotFound("no such job")
        return status, state

    async def cancel(self, job_id: str) -> str:
        """'cancelled' when it was stopped at once, 'requested' when running (the worker stops
        it within about a second). Conflict when already finished."""
        status, state = await self._control("cancel", job_id)
        if status == "finished":
            raise Conflict(f"job already {state}")
        return "cancelled" if status == "done" else "requested"

    async def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job back in its queue with fresh attempts."""
        status, state = await self._control("retry", job_id)
        if status == "conflict":
            raise Conflict(f"only failed or cancelled jobs can be retried (job is {state})")
        return await self.get(job_id)


def _check_ints(value: Any, path: str) -> None:
    """Refuse integers beyond 64 bits: most JSON readers elsewhere cannot hold them."""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -(1 << 63) <= value < 1 << 64:
                raise Invalid("integer out of range", path=path)
        elif isinstance(value, dict):
            for k, v in value.items():
                _check_ints(v, f"{path}.{k}")
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                _check_ints(v, f"{path}[{i}]")
    except RecursionError as e:
        raise Invalid("payload nested too deeply", path=path) from e


class _Follower:
    """Collects one job's events from the hub for `wait`."""

    def __init__(self) -> None:
        self._events: list[bytes] = []
        self._wake = asyncio.Event()
        self.reset = False

    def on_event(self, eid: bytes, job: str, typ: bytes, data: bytes) -> None:
        self._events.append(data)
        self._wake.set()

    def on_reset(self) -> None:
        self.reset = True
        self._wake.set()

    def drain(self) -> list[bytes]:
        out, self._events = self._events, []
        return out

    async def wake(self) -> None:
        await self._wake.wait()
        self._wake.clear()


class SyncProducer:
    """The Producer for code without an event loop (Django views, scripts, Celery tasks).

    It runs one private event loop in a daemon thread; every method blocks until done.

        with SyncProducer.from_url("redis://127.0.0.1:6379/0") as p:
            job = p.submit("demo.count", {"n": 5})
            done = p.wait(job.id, timeout=30)
    """

    def __init__(self, make: Any) -> None:
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tidings-producer", daemon=True
        )
        self._thread.start()
        self._async: Producer = self._run(self._build(make))

    async def _build(self, make: Any) -> Producer:
        p: Producer = make()
        return p

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> SyncProducer:
        return cls(lambda: Producer.from_url(url, **kw))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def submit(self, task: str, payload: Any = None, **kw: Any) -> Job:
        job: Job = self._run(self._async.submit(task, payload, **kw))
        return job

    def submit_many(self, items: Iterable[tuple[str, Any] | SubmitRequest]) -> list[Job]:
        jobs: list[Job] = self._run(self._async.submit_many(list(items)))
        return jobs

    def get(self, job_id: str) -> Job:
        job: Job = self._run(self._async.get(job_id))
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        job: Job = self._run(self._async.wait(job_id, timeout))
        return job

    def queues(self) -> dict[str, QueueStats]:
        stats: dict[str, QueueStats] = self._run(self._async.queues())
        return stats

    def cancel(self, job_id: str) -> str:
        out: str = self._run(self._async.cancel(job_id))
        return out

    def retry(self, job_id: str) -> Job:
        job: Job = self._run(self._async.retry(job_id))
        return job
