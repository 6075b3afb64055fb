"""Submit and follow jobs from Python, with no HTTP hop. The HTTP API is built on this class.

async with Producer.from_url("redis://127.0.0.1:6379/0") as p:
    job = await p.submit("demo.count", {"n": 5})
    async for event in p.watch(job.id):
        print(event.type, event.data)
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import msgspec

from service.bulk import Bulk
from service.core import connect, follow
from service.core.config import Config, JobsConfig, RedisConfig
from service.core.durable import Durability
from service.core.errors import Conflict, Invalid, NotFound, TooMany
from service.core.hub import Hub
from service.core.keys import Keys
from service.core.queues import Queues
from service.core.resp import FastRedis
from service.core.scripts import Call, Limits, NewJob, Ops, SubmitRow, new_request_id
from service.core.store import JobStore, check_id
from service.core.tasks import REGISTRY, Catalog, TaskSpec
from service.core.tracing import current_traceparent, valid_traceparent
from service.core.wire import (
    IDEM_RE,
    QUEUE_RE,
    TASK_RE,
    Job,
    Progress,
    QueueStats,
    StoredEvent,
    SubmitRequest,
    WatchEvent,
    idempotent_job_id,
    iso,
    new_job_id,
)
from service.queries import Queries

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
MAX_DELAY_S = 366 * 86400.0
MAX_TIMEOUT_S = 7 * 86400.0
BATCH = 100  # jobs per script call in submit_many: short calls, packed while the last one runs
IN_FLIGHT = 2  # submit_many's calls in flight at once
T = TypeVar("T")


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
    """Submit, inspect, wait for, watch, cancel and retry jobs.

    `registry` holds the tasks whose payloads are validated and normalised at submit (default:
    those registered in this process with `@task`); other tasks are looked up in the
    deployment's task catalog (published by the workers), and a name found in neither is
    refused.
    """

    def __init__(
        self,
        r: Any,
        *,
        keys: Keys | None = None,
        jobs: JobsConfig | None = None,
        registry: Mapping[str, TaskSpec] | None = None,
        redis_config: RedisConfig | None = None,
        owns_client: bool = False,
        hub_client: Any = None,
        fast_client: Any = None,
        hub_reader: Callable[[], Any] | None = None,
    ) -> None:
        # an asyncio client (single, cluster or sentinel) with decode_responses=False; the hot
        # calls (scripts, reading a job) go through `fast` (the same client unless given)
        self.redis: Any = r
        self.fast: Any = fast_client if fast_client is not None else r
        self.keys = keys or Keys()
        self.jobs_config = jobs or JobsConfig()
        self.limits = limits_from(self.jobs_config)
        self.ops = Ops(self.keys, self.limits)
        self.registry: Mapping[str, TaskSpec] = REGISTRY if registry is None else registry
        self.store = JobStore(self.fast, self.keys)
        self.queries = Queries(r, self.keys)
        self.catalog = Catalog(r, self.keys)
        # the regular client: besides its (cached) script it reads sets and hashes, which the
        # fast client does not speak (pause and resume failed on it)
        self.queue_registry = Queues(r, self.keys, self.ops, cap=self.jobs_config.max_queues)
        rc = redis_config or RedisConfig()
        self.durability = Durability(self.fast, rc.wait_replicas, rc.wait_timeout_ms)
        # cancel or retry many jobs, retry or purge dead letters, purge finished jobs
        # (reads many jobs by pipeline: the regular client's store, not the fast one)
        self.bulk = Bulk(r, self.keys, self.ops, self.queries.store, self.durability)
        self._batch = _Batcher(self)
        self._owns_client = owns_client
        self._hub_client = hub_client
        self._hub_reader = hub_reader
        self._hub: Hub | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "tidings",
        partitions: int = 1,
        config: Config | None = None,
        registry: Mapping[str, TaskSpec] | None = None,
    ) -> Producer:
        """A Producer on its own clients. `url` may be "embedded": the embedded server that
        `make run` (or `python -m service`) started for this directory or this user."""
        cfg = config or Config()
        if config is not None:
            prefix, partitions = config.redis.prefix, config.redis.partitions
        if url == "embedded":
            from service.core import embedded

            url = embedded.discover(cfg)
        rc = cfg.redis
        r = connect.connect(rc, url)
        hub_r = connect.connect(rc, url, max_connections=partitions + 2)
        fast = connect.connect_fast(rc, url, r)
        return cls(
            r,
            keys=Keys(prefix, partitions),
            jobs=cfg.jobs,
            registry=registry,
            redis_config=rc,
            owns_client=True,
            hub_client=hub_r,
            fast_client=fast,
            hub_reader=connect.fast_reader(rc, url),
        )

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
            if self._hub_client is not None:
                await self._hub_client.aclose()
            if self.fast is not self.redis:
                await self.fast.aclose()

    @property
    def hub(self) -> Hub:
        """This producer's firehose reader (started on first use): blocking reads on clients
        of their own, so they never hold up submits."""
        if self._hub is None:
            self._hub = Hub(self._hub_client or self.redis, self.keys, reader=self._hub_reader)
        return self._hub

    # -- submit ---------------------------------------------------------------------------

    async def _prepare(self, req: SubmitRequest, traceparent: str = "") -> NewJob:
        """Validate one submission into what the submit script takes."""
        if not TASK_RE.match(req.task):
            raise Invalid("invalid task name", path="$.task")
        spec = self.registry.get(req.task)
        info = None if spec is not None else await self.catalog.get(req.task)
        if spec is None and info is None:
            raise Invalid(f"unknown task {req.task!r}: no worker has registered it", path="$.task")
        known = spec or info
        assert known is not None
        queue = req.queue or known.queue or "default"
        if not QUEUE_RE.match(queue):
            raise Invalid("invalid queue name", path="$.queue")
        payload = req.payload
        _check_ints(payload, "$.payload")
        if spec is not None:
            try:
                payload = spec.decode_payload(payload)
            except msgspec.ValidationError as e:
                msg, _, where = str(e).partition(" - at `$")
                raise Invalid(msg, path="$.payload" + where.rstrip("`")) from e
        if not (math.isfinite(req.delay_s) and 0 <= req.delay_s <= MAX_DELAY_S):
            raise Invalid(f"delay_s must be between 0 and {MAX_DELAY_S:.0f}", path="$.delay_s")
        max_attempts = req.max_attempts
        if max_attempts is None:
            max_attempts = known.max_attempts or self.jobs_config.max_attempts
        if not 1 <= max_attempts <= 1000:
            raise Invalid("max_attempts must be between 1 and 1000", path="$.max_attempts")
        timeout = req.timeout_s
        if timeout is None:
            timeout = known.timeout_s or self.jobs_config.timeout_s or None
        if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT_S):
            raise Invalid(f"timeout_s must be in (0, {MAX_TIMEOUT_S:.0f}]", path="$.timeout_s")
        call_id = ""
        if req.idempotency_key is not None:
            if not IDEM_RE.match(req.idempotency_key):
                raise Invalid(
                    "idempotency_key: 1-200 printable ASCII characters", path="$.idempotency_key"
                )
            job_id = idempotent_job_id(self.keys.prefix, req.idempotency_key)
            call_id = new_request_id()
        else:
            job_id = new_job_id()
        try:
            encoded = _encode(payload)
        except (TypeError, ValueError, OverflowError) as e:
            raise Invalid(f"payload is not JSON: {e}", path="$.payload") from e
        return NewJob(
            id=job_id,
            task=req.task,
            queue=queue,
            payload=encoded,
            max_attempts=max_attempts,
            timeout_s=timeout,
            delay_ms=int(req.delay_s * 1000),
            idempotency_key=req.idempotency_key,
            call_id=call_id,
            traceparent=traceparent,
        )

    async def submit(
        self,
        task: str,
        payload: Any = None,
        *,
        queue: str | None = None,
        delay_s: float = 0.0,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Job:
        """Submit one job; with an idempotency key already used, return that job instead.
        `traceparent`: the W3C trace context the worker's span joins (default: the caller's
        active OpenTelemetry span, if any)."""
        req = SubmitRequest(
            task=task,
            payload=payload,
            queue=queue,
            delay_s=delay_s,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            idempotency_key=idempotency_key,
        )
        return (await self.submit_request(req, traceparent=traceparent)).job

    async def submit_request(
        self, req: SubmitRequest, *, traceparent: str | None = None
    ) -> Submitted:
        new = await self._prepare(req, _trace_context(traceparent))
        await self._admit({new.queue})
        row = await self._batch.submit(new)
        # a fresh random id that already exists was created by an earlier try of this call
        if row.created or row.again or new.idempotency_key is None:
            return Submitted(job=_fresh(new, row.state, row.created_ms), created=True)
        return Submitted(job=await self.get(new.id), created=False)

    async def submit_many(
        self,
        items: Iterable[tuple[str, Any] | SubmitRequest],
        *,
        traceparent: str | None = None,
    ) -> list[Job]:
        """Submit many jobs in few round trips (one script call per partition and batch of
        100), all validated before any is written: an invalid item raises Invalid with its
        index in the path (`$.jobs[3].payload.n`, as in the body of POST /api/jobs/batch)."""
        prepared: list[NewJob] = []
        tp = _trace_context(traceparent)
        for i, it in enumerate(items):
            req = it if isinstance(it, SubmitRequest) else SubmitRequest(task=it[0], payload=it[1])
            try:
                prepared.append(await self._prepare(req, tp))
            except Invalid as e:
                # name the item: "$.payload.n" of the fourth job is "$.jobs[3].payload.n"
                where = f"$.jobs[{i}]" + (e.path or "$")[1:]
                raise Invalid(e.message, path=where) from e
        await self._admit({new.queue for new in prepared})
        by_part: dict[int, list[NewJob]] = {}
        for new in prepared:
            by_part.setdefault(self.keys.partition(new.id), []).append(new)
        rows_of: dict[str, Any] = {}
        for k, news in by_part.items():
            # two chunks sent while the next is packed, so Redis never waits for this process
            # between two; on the lean client's one connection they land in the order sent
            # (FIFO); a cluster client may use two connections, so it gets one at a time
            depth = IN_FLIGHT if isinstance(self.fast, FastRedis) else 1
            flying: collections.deque[tuple[list[NewJob], asyncio.Task[Any]]] = collections.deque()
            for i in range(0, len(news), BATCH):
                chunk = news[i : i + BATCH]
                call = self.ops.submit(k, chunk)
                if len(flying) >= depth:
                    done, task = flying.popleft()
                    for new, row in zip(done, await task, strict=True):
                        rows_of[new.id] = row
                flying.append((chunk, asyncio.ensure_future(self.durability.run(call))))
                await asyncio.sleep(0)  # let it go out now, then pack the next chunk meanwhile
            while flying:
                done, task = flying.popleft()
                for new, row in zip(done, await task, strict=True):
                    rows_of[new.id] = row
        jobs: list[Job] = []
        for new in prepared:
            row = rows_of[new.id]
            if row.created or row.again or new.idempotency_key is None:
                jobs.append(_fresh(new, row.state, row.created_ms))
            else:
                jobs.append(await self.get(new.id))
        return jobs

    async def _admit(self, queues: set[str]) -> None:
        """After validation (a refused submit creates no queue): register new queues (up to
        jobs.max_queues) and apply jobs.max_queued."""
        for q in sorted(queues):
            await self.queue_registry.ensure(q)
        cap = self.jobs_config.max_queued
        if cap > 0:
            for q in queues:
                if await self.queries.unfinished(q) >= cap:
                    raise TooMany(f"queue {q!r} holds {cap} unfinished jobs")

    # -- read -----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """The job's current snapshot (NotFound when it does not exist or has expired)."""
        return await self.store.get(job_id)

    async def snapshot(self, job_id: str) -> tuple[Job, list[StoredEvent]]:
        """The job and all its retained events, read at one instant."""
        return await self.store.snapshot(job_id)

    async def events(self, job_id: str) -> list[StoredEvent]:
        return (await self.store.snapshot(job_id))[1]

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Follow the job's events until it is finished; return its final snapshot."""
        check_id(job_id)
        return await follow.wait(self.store, self.hub, job_id, timeout)

    def watch(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[WatchEvent]:
        """The job's events (after `last_event_id`), then live ones, until the terminal event:
        the same iterator `service.client.Client.watch` gives over HTTP."""
        check_id(job_id)
        return follow.watch(self.store, self.hub, job_id, last_event_id)

    async def queues(self) -> dict[str, QueueStats]:
        """Per queue: queued, running, scheduled, dead, live workers, paused."""
        return await self.queries.queues()

    # -- control --------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> str:
        """'cancelled' when it was stopped at once, 'requested' when running (the worker stops
        it within about a second). Conflict when already finished."""
        queue = await self.store.queue_of(job_id)
        minute = int(time.time() // 60)
        res = await self.durability.run(
            self.ops.cancel(job_id, queue, new_request_id(), minute), retry=True
        )
        if res.status == "missing":
            raise NotFound("no such job")
        if res.status == "finished":
            raise Conflict(f"job already {res.state}")
        return "cancelled" if res.status == "done" else "requested"

    async def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job back in its queue with fresh attempts."""
        queue = await self.store.queue_of(job_id)
        res = await self.durability.run(self.ops.retry(job_id, queue, new_request_id()), retry=True)
        if res.status == "missing":
            raise NotFound("no such job")
        if res.status == "conflict":
            raise Conflict(f"only failed or cancelled jobs can be retried (job is {res.state})")
        return await self.get(job_id)

    async def take_rate(self, principal: str, per_second: float) -> bool:
        """Count one submit against `principal`'s per-second budget (shared by all processes)."""
        return await self.queries.take_rate(principal, per_second)


class _Batcher:
    """Concurrent single submits (many HTTP requests at once) go out together: those made while
    a call is in flight gather into the next one, one script call per partition, so 64 clients
    in flight cost a few calls, not 64. A lone submit (nothing in flight) goes out at once."""

    def __init__(self, producer: Producer) -> None:
        self._p = producer
        self._pending: dict[int, list[tuple[NewJob, asyncio.Future[SubmitRow]]]] = {}
        self._sending: set[asyncio.Task[None]] = set()  # held: a task nobody holds can vanish
        self._flying: dict[int, int] = {}  # calls in flight, per partition

    async def submit(self, new: NewJob) -> SubmitRow:
        k = self._p.keys.partition(new.id)
        items = self._pending.get(k)
        if items is None and not self._flying.get(k):
            # nothing to join: sent from this coroutine (no task, two loop turns fewer); only
            # this job is in the call, so the caller going away cancels nobody else's
            (row,) = await self._call(k, [new])
            return row
        fut: asyncio.Future[SubmitRow] = asyncio.get_running_loop().create_future()
        if items is None or len(items) >= BATCH:
            # the first of this turn: its call starts in the next turn, with whatever joined
            # by then (a task, not this request: a client that goes away cancels nobody else)
            items = self._pending[k] = []
            t = asyncio.ensure_future(self._turn(k, items))
            self._sending.add(t)
            t.add_done_callback(self._sending.discard)
        items.append((new, fut))
        return await fut

    async def _turn(self, k: int, items: list[tuple[NewJob, asyncio.Future[SubmitRow]]]) -> None:
        if self._pending.get(k) is items:
            del self._pending[k]
        await self._send(k, items)

    async def _call(self, k: int, news: list[NewJob]) -> list[SubmitRow]:
        """One script call, counted in flight while it runs."""
        self._flying[k] = self._flying.get(k, 0) + 1
        try:
            return await self._p.durability.run(self._p.ops.submit(k, news))
        finally:
            self._flying[k] -= 1

    async def _send(self, k: int, items: list[tuple[NewJob, asyncio.Future[SubmitRow]]]) -> None:
        try:
            rows = await self._call(k, [n for n, _ in items])
        except BaseException as e:
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for (_, fut), row in zip(items, rows, strict=True):
            if not fut.done():
                fut.set_result(row)


def _trace_context(traceparent: str | None) -> str:
    """The trace context stored with a job: the given W3C traceparent, else the caller's active
    OpenTelemetry span (when it has one), else none."""
    if traceparent:
        tp = valid_traceparent(traceparent)
        if tp is None:
            raise Invalid(
                "not a W3C traceparent (00-<trace id>-<span id>-<flags>)", path="traceparent"
            )
        return tp
    return current_traceparent() or ""


def _fresh(new: NewJob, state: str, created_ms: int) -> Job:
    return Job(
        id=new.id,
        task=new.task,
        queue=new.queue,
        state=state,
        attempt=0,
        max_attempts=new.max_attempts,
        progress=Progress(),
        payload=_decode(new.payload),
        created_at=iso(created_ms),
        timeout_s=new.timeout_s,
    )


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


class SyncProducer:
    """The Producer for code without an event loop (Django views, scripts, Celery tasks).

    It runs one private event loop in a daemon thread; every method blocks until done.

        with SyncProducer.from_url("redis://127.0.0.1:6379/0") as p:
            job = p.submit("demo.count", {"n": 5})
            done = p.wait(job.id, timeout=30)
    """

    def __init__(self, make: Callable[[], Producer]) -> None:
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tidings-producer", daemon=True
        )
        self._thread.start()
        self._async: Producer = self._run(self._build(make))

    async def _build(self, make: Callable[[], Producer]) -> Producer:
        return make()

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
        # the caller's trace context lives in this thread, not in the loop's
        kw.setdefault("traceparent", current_traceparent())
        job: Job = self._run(self._async.submit(task, payload, **kw))
        return job

    def submit_many(
        self,
        items: Iterable[tuple[str, Any] | SubmitRequest],
        *,
        traceparent: str | None = None,
    ) -> list[Job]:
        tp = traceparent or current_traceparent()
        jobs: list[Job] = self._run(self._async.submit_many(list(items), traceparent=tp))
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


__all__ = ["Call", "Producer", "SubmitRequest", "Submitted", "SyncProducer"]
