"""One firehose reader per process, fanned out in memory to every subscriber.

The hub follows each partition's firehose with its own blocking XREAD and cursor, whatever the
number of subscribers, and hands every entry to the subscribers of its job and to the
firehose subscribers. Every entry carries the partition's event counter, so the hub knows when
it fell behind the stream's trimming (a stalled process) and tells the affected subscribers
(`on_gap`: they resync from the jobs' own events), and when the counter went back (Redis lost
its data: `on_reset`). No aiohttp here: `Producer.wait` and `watch` use the same hub.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from service.core import connect
from service.core.keys import Keys
from service.core.retry import Backoff, is_transient
from service.core.states import TERMINAL_EVENTS
from service.core.wire import (
    STORED_TAGS,
    EventKey,
    Stored,
    decode_stored,
    encode_public,
    event_key,
    public,
)

log = structlog.get_logger("tidings.hub")


class FireEvent:
    """One firehose entry, shared by every subscriber: its public JSON and its SSE frame are
    built once, on first use, whatever the number of watchers."""

    __slots__ = (
        "_data",
        "_frame",
        "_stored",
        "body",
        "id",
        "job",
        "key",
        "partition",
        "queue",
        "sse_chunk",
        "task",
        "type",
    )

    def __init__(
        self, eid: bytes, job: str, task: str, queue: str, body: bytes, partition: int
    ) -> None:
        self.id = eid
        self.key: EventKey = event_key(eid)
        self.job = job
        self.task = task
        self.queue = queue
        self.body = body
        self.partition = partition
        # the tag is the first element of the compact array: ["p",...
        self.type = STORED_TAGS.get(body[2 : body.find(b'"', 2)].decode(), "")
        self._stored: Stored | None = None
        self._data: bytes | None = None
        self._frame: bytes | None = None
        # the frame as the SSE layer writes it (HTTP chunked), cached there: once per event
        self.sse_chunk: bytes | None = None

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    def stored(self) -> Stored:
        if self._stored is None:
            self._stored = decode_stored(self.body)
        return self._stored

    def data(self) -> bytes:
        """The public JSON (SSE data)."""
        if self._data is None:
            self._data = encode_public(
                public(self.job, self.task, self.queue, self.id, self.stored())
            )
        return self._data

    def frame(self) -> bytes:
        """The SSE frame of a per-job stream (the id is the event id)."""
        if self._frame is None:
            self._frame = sse_frame(self.id, self.type.encode(), self.data())
        return self._frame


def sse_frame(eid: bytes | None, typ: bytes, data: bytes) -> bytes:
    head = b"id: " + eid + b"\n" if eid is not None else b""
    return head + b"event: " + typ + b"\ndata: " + data + b"\n\n"


class Subscriber(Protocol):
    def on_event(self, ev: FireEvent) -> None: ...

    def on_gap(self, partition: int) -> None:
        """Events of this partition were missed (trimmed before the hub read them)."""

    def on_reset(self) -> None:
        """The firehose went back (Redis lost its data): what was sent may not exist."""


class _Cursor:
    __slots__ = ("expect", "id")

    def __init__(self, eid: bytes, expect: int | None) -> None:
        self.id = eid
        self.expect = expect  # the counter the next entry must carry (None: not known yet)


class Hub:
    def __init__(
        self,
        r: Any,
        keys: Keys,
        *,
        block_ms: int = connect.BLOCK_MS,
        count: int = 1000,
        reader: Callable[[], Any] | None = None,
    ) -> None:
        self._r = r
        # each partition's blocking read on a lean connection of its own (single server), else
        # on `r`'s pool (cluster, Sentinel)
        self._reader = reader
        self._keys = keys
        self._block_ms = block_ms
        self._count = count
        self._jobs: dict[str, set[Subscriber]] = {}
        self._all: set[Subscriber] = set()
        self._cursors: list[_Cursor] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self.events_read = 0
        self.gaps = 0
        self.resets = 0

    async def ready(self) -> None:
        """Make sure the hub is reading: events written after this returns will be delivered."""
        if self._tasks:
            return
        async with self._lock:
            if self._tasks:
                return
            self._cursors = [await self._head(k) for k in range(self._keys.partitions)]
            self._tasks = [
                asyncio.create_task(self._run(k), name=f"tidings-hub-{k}")
                for k in range(self._keys.partitions)
            ]

    async def _head(self, k: int) -> _Cursor:
        """The partition's newest entry: its id, and the counter the next one will carry."""
        rows = await self._r.xrevrange(self._keys.fire(k), count=1)
        if not rows:
            return _Cursor(b"0-0", None)
        eid, fields = rows[0]
        return _Cursor(eid, int(fields.get(b"n", b"0")) + 1)

    def position(self, k: int) -> bytes:
        """The id of the newest event of partition k handed to subscribers."""
        return self._cursors[k].id

    def lag(self, k: int, head: int) -> int:
        """Events of partition k not yet read, given the partition's counter `head`."""
        expect = self._cursors[k].expect if self._cursors else None
        return 0 if expect is None else max(0, head - (expect - 1))

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
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        if tasks:
            # bounded: a read cut off mid-reply must not hold up shutdown
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2.0)

    async def _run(self, k: int) -> None:
        async with connect.own_connection(self._reader) as own:
            await self._follow(k, own or self._r)

    async def _follow(self, k: int, r: Any) -> None:
        name = self._keys.fire(k)
        backoff = Backoff(0.1, 5.0)
        broken = False
        while True:
            try:
                if broken:
                    await self._check_rewound(k)
                    broken = False
                cur = self._cursors[k]
                resp = await connect.xread(
                    r, {name: cur.id}, count=self._count, block=self._block_ms
                )
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not is_transient(e):
                    log.exception("hub.error", partition=k)
                else:
                    log.warning("hub.redis_unavailable", partition=k, error=str(e)[:200])
                broken = True
                await asyncio.sleep(backoff.next())
                continue
            for _stream, entries in resp or ():
                self._dispatch(k, entries)

    def _dispatch(self, k: int, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        cur = self._cursors[k]
        jobs = self._jobs
        everyone = self._all
        for eid, fields in entries:
            n = int(fields.get(b"n", b"0"))
            if cur.expect is not None and n != cur.expect:
                if n > cur.expect:
                    self._gap(k, n - cur.expect)
                else:
                    self._reset(k, "counter went back")
            cur.expect = n + 1
            cur.id = eid
            self.events_read += 1
            try:
                ev = FireEvent(
                    eid,
                    fields[b"j"].decode(),
                    fields[b"t"].decode(),
                    fields[b"q"].decode(),
                    fields[b"v"],
                    k,
                )
            except (KeyError, UnicodeDecodeError):
                log.warning("hub.bad_entry", partition=k, id=eid)
                continue
            subs = jobs.get(ev.job)
            if subs:
                for s in tuple(subs):
                    s.on_event(ev)
            if everyone:
                for s in tuple(everyone):
                    s.on_event(ev)

    def _gap(self, k: int, missed: int) -> None:
        self.gaps += 1
        log.warning("hub.fell_behind", partition=k, missed=missed)
        for job, subs in list(self._jobs.items()):
            if self._keys.partition(job) == k:
                for s in tuple(subs):
                    s.on_gap(k)
        for s in tuple(self._all):
            s.on_gap(k)

    def _reset(self, k: int, why: str) -> None:
        self.resets += 1
        log.warning("hub.stream_rewound", partition=k, why=why)
        for subs in list(self._jobs.values()):
            for s in tuple(subs):
                s.on_reset()
        for s in tuple(self._all):
            s.on_reset()

    async def _check_rewound(self, k: int) -> None:
        """After an outage: if the server came back with fewer events than we had read
        (restarted without its data), start over from its present and tell subscribers."""
        head = await self._head(k)
        cur = self._cursors[k]
        went_back = event_key(head.id) < event_key(cur.id) or (
            cur.expect is not None and head.expect is not None and head.expect < cur.expect
        )
        if went_back or (head.expect is None and cur.expect is not None):
            self._cursors[k] = head
            self._reset(k, "server lost its events")
