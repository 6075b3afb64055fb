"""The worker's single writer: progress, logs and finishes, batched into one script call per
partition and loop turn, in the order they happened.

Progress is coalesced per job: at most one write per `interval` seconds, always the newest value,
and a job's pending progress is written before its finish. Writes that fail because Redis is away
are retried until they land; nothing a task reported is dropped, except what fencing refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.exceptions
import structlog

from service import contract
from service.contract import Keys, Limits

log = structlog.get_logger("tidings.worker")
_encode = msgspec.json.Encoder().encode


@dataclass(eq=False)
class Running:
    """One attempt this worker is running."""

    id: str
    run: int
    attempt: int
    task: str
    queue: str
    partition: int
    entry: str
    pending_progress: tuple[float, float | None, str | None] | None = None
    next_progress_at: float = 0.0
    progress_queued: bool = False
    lost: bool = False
    cancel_reason: str | None = None  # 'cancel' | 'lost' | 'shutdown' | 'timeout'
    handle: asyncio.Task[None] | None = None
    on_cancel: list[Callable[[], None]] = field(default_factory=list)


def _num(v: float | None) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def progress_fragment(cur: float, tot: float | None, msg: str | None) -> bytes:
    frag = b',"current":' + _num(cur).encode()
    if tot is not None:
        frag += b',"total":' + _num(tot).encode()
    if msg is not None:
        frag += b',"message":' + _encode(msg)
    return frag


class Writer:
    def __init__(
        self,
        r: Any,
        keys: Keys,
        limits: Limits,
        *,
        interval: float,
        on_fenced: Callable[[Running], None],
    ) -> None:
        self._r = r
        self._keys = keys
        self._limits = limits
        self._interval = interval
        self._on_fenced = on_fenced
        self._progress: dict[str, Running] = {}
        self._ops: list[tuple[Running, list[Any], asyncio.Future[str] | None]] = []
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="tidings-writer")

    async def close(self, timeout: float = 10.0) -> None:
        """Flush what is pending (for up to `timeout` while Redis is away), then stop. What cannot
        be written is not lost: those jobs' leases run out and another worker takes them."""
        deadline = time.monotonic() + timeout
        while (self._ops or self._progress or self._busy) and time.monotonic() < deadline:
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
        self._ops.append((job, ["l", job.id, job.run, b',"message":' + _encode(message)], None))
        self._wake.set()

    def finish(
        self, job: Running, outcome: str, fragment: bytes, backoff_ms: int = 0
    ) -> asyncio.Future[str]:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._ops.append((job, ["f", job.id, job.run, outcome, fragment, backoff_ms], fut))
        self._wake.set()
        return fut

    def _tick(self) -> None:
        self._timer = None
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------------

    def _collect(self) -> list[tuple[Running, list[Any], asyncio.Future[str] | None]]:
        now = time.monotonic()
        finishing = {job.id for job, op, _ in self._ops if op[0] == "f"}
        batch: list[tuple[Running, list[Any], asyncio.Future[str] | None]] = []
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
                op = [
                    "p",
                    job.id,
                    job.run,
                    _num(cur),
                    _num(tot),
                    "" if msg is None else msg,
                    progress_fragment(cur, tot, msg),
                ]
                batch.append((job, op, None))
            elif earliest is None or job.next_progress_at < earliest:
                earliest = job.next_progress_at
        batch.extend(self._ops)
        self._ops = []
        if earliest is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(earliest, self._tick)
        return batch

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch = self._collect()
            if not batch:
                continue
            delay = 0.05
            self._busy = True
            while True:
                try:
                    await self._write(batch)
                    self._busy = False
                    break
                except (
                    redis.exceptions.ConnectionError,
                    redis.exceptions.TimeoutError,
                    redis.exceptions.ResponseError,  # e.g. OOM: retry rather than lose a finish
                    OSError,
                ) as e:
                    log.warning("writer.redis_unavailable", error=str(e), retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)

    async def _write(
        self, batch: list[tuple[Running, list[Any], asyncio.Future[str] | None]]
    ) -> None:
        by_part: dict[int, list[tuple[Running, list[Any], asyncio.Future[str] | None]]] = {}
        for item in batch:
            by_part.setdefault(item[0].partition, []).append(item)
        for k, items in by_part.items():
            flat = [x for _, op, _ in items for x in op]
            args = contract.script_args(self._keys, self._limits, k, "apply", len(items), *flat)
            res = await contract.call(self._r, args)
            for (job, _op, fut), verdict in zip(items, res, strict=True):
                v = verdict.decode()
                if v == "fenced" and not job.lost:
                    job.lost = True
                    self._on_fenced(job)
                if fut is not None and not fut.done():
                    fut.set_result(v)
