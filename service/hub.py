"""One firehose reader per process, fanned out in memory to every subscriber.

The hub follows each partition's firehose stream with one blocking XREAD, whatever the number of
subscribers, and hands every entry to the subscribers of its job and to the firehose subscribers.
No aiohttp here: the Producer's `wait` uses the same hub.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import redis.exceptions
import structlog

from service.contract import Keys

log = structlog.get_logger("tidings.hub")


class Subscriber(Protocol):
    def on_event(self, eid: bytes, job: str, typ: bytes, data: bytes) -> None: ...

    def on_reset(self) -> None: ...


class Hub:
    def __init__(self, r: Any, keys: Keys, *, block_ms: int = 2000, count: int = 1000) -> None:
        self._r = r
        self._keys = keys
        self._block_ms = block_ms
        self._count = count
        self._jobs: dict[str, set[Subscriber]] = {}
        self._all: set[Subscriber] = set()
        self._cursors: dict[bytes, bytes] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.events_read = 0

    async def ready(self) -> None:
        """Make sure the hub is reading: events written after this returns will be delivered."""
        if self._task is not None:
            return
        async with self._lock:
            if self._task is None:
                for k in range(self._keys.partitions):
                    name = self._keys.fire(k).encode()
                    self._cursors[name] = await self._last_id(name)
                self._task = asyncio.create_task(self._run(), name="tidings-hub")

    async def _last_id(self, name: bytes) -> bytes:
        try:
            info = await self._r.xinfo_stream(name)
        except redis.exceptions.ResponseError:
            return b"0-0"  # no such stream yet
        last = info["last-generated-id"]
        return last if isinstance(last, bytes) else str(last).encode()

    def position(self, k: int) -> bytes:
        """The id of the newest event of partition k handed to subscribers."""
        return self._cursors[self._keys.fire(k).encode()]

    def subscribe(self, job: str, sub: Subscriber) -> None:
        self._jobs.setdefault(job, set()).add(sub)

    def unsubscribe(self, job: str, sub: Subscriber) -> None:
        subs = self._jobs.get(job)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._jobs[job]

    def subscribe_all(self, sub: Subscriber) -> None:
        self._all.add(sub)

    def unsubscribe_all(self, sub: Subscriber) -> None:
        self._all.discard(sub)

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._jobs.values()) + len(self._all)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # bounded: a read cut off mid-reply must not hold up shutdown
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 2.0)
            self._task = None

    async def _run(self) -> None:
        delay = 0.1
        broken = False
        while True:
            try:
                if broken:
                    await self._check_rewound()
                    broken = False
                resp = await self._r.xread(self._cursors, count=self._count, block=self._block_ms)
                delay = 0.1
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
                log.warning("hub.redis_unavailable", error=str(e), retry_in=delay)
                broken = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            for stream, entries in resp or ():
                self._dispatch(stream, entries)

    def _dispatch(self, stream: bytes, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        jobs = self._jobs
        everyone = self._all
        for eid, fields in entries:
            self.events_read += 1
            job = fields[b"j"].decode()
            typ = fields[b"e"]
            data = fields[b"d"]
            subs = jobs.get(job)
            if subs:
                for s in tuple(subs):
                    s.on_event(eid, job, typ, data)
            if everyone:
                for s in tuple(everyone):
                    s.on_event(eid, job, typ, data)
        if entries:
            self._cursors[stream] = entries[-1][0]

    async def _check_rewound(self) -> None:
        """After an outage: if the server came back with fewer events than we had read (restarted
        without persistence), start over from its present and tell subscribers to resume."""
        rewound = False
        for name, cursor in self._cursors.items():
            last = await self._last_id(name)
            if _key(last) < _key(cursor):
                self._cursors[name] = last
                rewound = True
        if rewound:
            log.warning("hub.stream_rewound")
            for subs in list(self._jobs.values()):
                for s in tuple(subs):
                    s.on_reset()
            for s in tuple(self._all):
                s.on_reset()


def _key(eid: bytes) -> tuple[int, int]:
    ms, _, seq = eid.partition(b"-")
    return int(ms), int(seq or 0)
