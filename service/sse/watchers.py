"""SSE clients of one service process, written to straight from the hub.

A watcher buffers live events while its replay is read (`live = False`), then flushes them
skipping what the replay sent, then is written directly by the hub's dispatch: the frame is
built once per event (`FireEvent.frame`) and written to the socket with no queue or task per
watcher. A watcher whose unsent bytes pass `sse.max_buffer_bytes`, or stay unflushed for
`sse.write_timeout_s`, is cut off (it resumes later from its Last-Event-ID). The hub can ask a
watcher to resync (it missed events, or Redis lost its data): it goes back to buffering and its
handler replays from the last event it sent. Heartbeats are staggered over the heartbeat period.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiohttp import web

from service.core.config import SseConfig
from service.core.hub import FireEvent, sse_frame
from service.core.keys import Keys
from service.core.wire import EventKey, event_key

MAX_PENDING = 10_000
HEARTBEAT = b": hb\n"  # a comment line alone: no blank line, so no client sees an empty message


def chunk(payload: bytes) -> bytes:
    """HTTP/1.1 chunked framing, for bytes written straight to the transport."""
    return b"%x\r\n" % len(payload) + payload + b"\r\n"


class Watcher:
    """One SSE client."""

    __slots__ = (
        "closed",
        "done_reason",
        "ended",
        "hb_slot",
        "last_write",
        "live",
        "pending",
        "resp",
        "resync",
        "sent",
        "set",
        "stalled_since",
        "transport",
    )

    def __init__(self, watchers: WatcherSet, hb_slot: int) -> None:
        self.set = watchers
        self.resp: web.StreamResponse | None = None
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.resync = asyncio.Event()
        self.live = False
        self.pending: list[FireEvent] = []
        self.sent: EventKey = (0, 0)
        self.ended = False  # a terminal event was written: end the stream cleanly
        self.done_reason = ""
        self.last_write = time.monotonic()
        self.stalled_since: float | None = None
        self.hb_slot = hb_slot

    # hub side --------------------------------------------------------------------------------

    def on_event(self, ev: FireEvent) -> None:
        if self.closed.done():
            return
        if not self.live:
            self.pending.append(ev)
            if len(self.pending) > MAX_PENDING:
                self.close("overflow")
            return
        self.write_event(ev)

    def on_gap(self, partition: int) -> None:
        self._resync()

    def on_reset(self) -> None:
        self._resync()

    def _resync(self) -> None:
        if not self.closed.done():
            self.live = False  # buffer what comes while the handler replays
            self.resync.set()

    def write_event(self, ev: FireEvent) -> None:
        """Write one live event (each kind dedupes by its own notion of position)."""
        raise NotImplementedError

    def write_raw(self, data: bytes) -> None:
        self.write_chunk(chunk(data))

    def write_chunk(self, chunked: bytes) -> None:
        """Write bytes already in HTTP chunked framing (built once per event, for every
        watcher of it)."""
        t = self.transport
        if t is None or t.is_closing():
            self.close("gone")
            return
        t.write(chunked)
        self.last_write = time.monotonic()
        queued = t.get_write_buffer_size()
        if queued:
            if queued > self.set.cfg.max_buffer_bytes:
                self.close("slow")
            elif self.stalled_since is None:
                # the sweeper watches it until it drains, or cuts it after the write timeout
                self.stalled_since = self.last_write
                self.set.backlog.add(self)

    def close(self, reason: str) -> None:
        if not self.closed.done():
            self.done_reason = reason
            self.closed.set_result(None)

    # handler side ----------------------------------------------------------------------------

    async def go_live(self) -> None:
        """Flush what arrived during the replay (skipping what it sent), then go live."""
        while self.pending:
            batch, self.pending = self.pending, []
            for ev in batch:
                if self.closed.done():
                    break
                self.write_event(ev)
            await asyncio.sleep(0)
        self.live = True


class JobWatcher(Watcher):
    __slots__ = ("job",)

    def __init__(self, watchers: WatcherSet, hb_slot: int, job: str) -> None:
        super().__init__(watchers, hb_slot)
        self.job = job

    def write_event(self, ev: FireEvent) -> None:
        if ev.key <= self.sent:
            return
        self.sent = ev.key
        c = ev.sse_chunk
        if c is None:
            c = ev.sse_chunk = chunk(ev.frame())
        self.write_chunk(c)
        if ev.terminal:
            self.ended = True
            self.close("terminal")


class FirehoseWatcher(Watcher):
    """Every job's events, optionally filtered by queue and task. With several partitions the
    SSE id is the position in each of them, comma-separated, so a resume is exact."""

    __slots__ = ("events", "keys", "position", "queue", "stats", "task")

    def __init__(
        self,
        watchers: WatcherSet,
        hb_slot: int,
        keys: Keys,
        *,
        queue: str | None,
        task: str | None,
        stats: bool = False,
        events: bool = True,
    ) -> None:
        super().__init__(watchers, hb_slot)
        self.keys = keys
        self.position: list[bytes] = [b"0-0"] * keys.partitions
        self.queue = queue
        self.task = task
        self.stats = stats  # also the periodic `stats` event (see service/sse/stats.py)
        self.events = events  # False: the stats event only

    def accepts(self, queue: str, task: str) -> bool:
        return (
            self.events
            and (self.queue is None or queue == self.queue)
            and (self.task is None or task == self.task)
        )

    def advance(self, k: int, eid: bytes, key: EventKey) -> bool:
        """Move partition k's position to `eid`; False if the client already has it."""
        if self.keys.partitions == 1:
            if key <= self.sent:
                return False
            self.sent = key
        elif key <= event_key(self.position[k]):
            return False
        self.position[k] = eid
        return True

    def sse_id(self) -> bytes:
        return b",".join(self.position)

    def write_event(self, ev: FireEvent) -> None:
        if not self.advance(ev.partition, ev.id, ev.key):
            return
        if self.accepts(ev.queue, ev.task):
            if self.keys.partitions == 1:
                c = ev.sse_chunk
                if c is None:
                    c = ev.sse_chunk = chunk(ev.frame())
                self.write_chunk(c)
            else:
                self.write_raw(sse_frame(self.sse_id(), ev.type.encode(), ev.data()))


class WatcherSet:
    """All watchers of one service process (one per app): the caps, heartbeats, stalled writes,
    shutdown, and the cut counters for /metrics."""

    def __init__(self, cfg: SseConfig) -> None:
        self.cfg = cfg
        self.watchers: set[Watcher] = set()
        self.clients: dict[str, int] = {}
        self.open = 0  # reserved stream slots (streams being opened and open)
        self.slots = max(1, int(cfg.heartbeat_s))
        self.by_slot: list[set[Watcher]] = [set() for _ in range(self.slots)]
        # one slot per tick, every slot twice per heartbeat period; a watcher idle for half a
        # period beats at its visit, so none stays silent for more than heartbeat_s
        self.tick_s = cfg.heartbeat_s / (2 * self.slots)
        self.beat_after = cfg.heartbeat_s / 2 - self.tick_s / 4
        self.backlog: set[Watcher] = set()  # watchers with unsent data
        self._tick = 0
        self._task: asyncio.Task[None] | None = None
        self.cuts: dict[str, int] = {"slow": 0, "timeout": 0, "cap": 0, "overflow": 0}

    def start(self) -> None:
        self._task = asyncio.create_task(self._sweep(), name="sse-sweeper")

    async def close(self) -> None:
        for w in list(self.watchers):
            w.close("shutdown")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def count(self, kind: type[Watcher]) -> int:
        return sum(1 for w in self.watchers if isinstance(w, kind))

    def reserve(self, client: str) -> bool:
        """Take a stream slot for `client` now (before any await), or say no."""
        cap = self.cfg.max_per_client
        if self.open >= self.cfg.max_connections or (
            cap > 0 and self.clients.get(client, 0) >= cap
        ):
            self.cuts["cap"] += 1
            return False
        self.open += 1
        self.clients[client] = self.clients.get(client, 0) + 1
        return True

    def release(self, client: str) -> None:
        self.open -= 1
        left = self.clients.get(client, 1) - 1
        if left > 0:
            self.clients[client] = left
        else:
            self.clients.pop(client, None)

    def add(self, w: Watcher) -> None:
        self.watchers.add(w)
        self.by_slot[w.hb_slot].add(w)
        if w.transport is not None and w.transport.get_write_buffer_size():
            w.stalled_since = time.monotonic()  # left over from the replay
            self.backlog.add(w)

    def discard(self, w: Watcher) -> None:
        self.watchers.discard(w)
        self.by_slot[w.hb_slot].discard(w)
        self.backlog.discard(w)

    async def _sweep(self) -> None:
        """Every tick_s: check the watchers that have unsent data (cut those stalled past
        write_timeout_s), then heartbeat one slot of watchers (noticing the gone ones). A tick
        touches about 1/slots of the watchers, so no moment stalls them all."""
        while True:
            await asyncio.sleep(self.tick_s)
            self._tick = (self._tick + 1) % self.slots
            now = time.monotonic()
            for w in list(self.backlog):
                t = w.transport
                if w.closed.done() or t is None or t.get_write_buffer_size() == 0:
                    w.stalled_since = None
                    self.backlog.discard(w)
                elif w.stalled_since is not None and (
                    now - w.stalled_since > self.cfg.write_timeout_s
                ):
                    w.close("timeout")
            for w in list(self.by_slot[self._tick]):
                if w.closed.done() or w.transport is None:
                    continue
                if w.transport.is_closing():
                    w.close("gone")
                elif w.live and now - w.last_write >= self.beat_after:
                    w.write_raw(HEARTBEAT)
