"""Server-Sent Events: per-job streams and the firehose, fed by the process's hub.

Each watcher is written to directly from the hub's dispatch: the frame is built once per event
and written to the socket without a queue or a task per watcher. A watcher whose socket buffer
grows past `sse.max_buffer_bytes`, or stays unflushed for `sse.write_timeout_s`, is cut off (it
resumes from its Last-Event-ID). Heartbeats are staggered over the heartbeat period.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from typing import Any

import msgspec
import structlog
from aiohttp import web

from service.config import SseConfig
from service.contract import TERMINAL, Event, Keys, parse_event_id
from service.hub import Hub

log = structlog.get_logger("tidings.sse")
_encode = msgspec.json.Encoder().encode
_TERMINAL_B = frozenset(t.encode() for t in TERMINAL)
# who is asking: an API key's fingerprint, "watch:<job>", or the client address without keys
PRINCIPAL = web.RequestKey("principal", str)
TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}


def frame(eid: bytes, typ: bytes, data: bytes) -> bytes:
    return b"id: " + eid + b"\nevent: " + typ + b"\ndata: " + data + b"\n\n"


def chunk(payload: bytes) -> bytes:
    """HTTP/1.1 chunked framing, for bytes written straight to the transport."""
    return b"%x\r\n" % len(payload) + payload + b"\r\n"


def event_key(eid: bytes) -> tuple[int, int]:
    ms, _, seq = eid.partition(b"-")
    return int(ms), int(seq or 0)


class Watcher:
    """One SSE client. Replay happens through aiohttp's writer (with drain); once live, the hub
    writes to the socket directly."""

    __slots__ = (
        "backlog",
        "closed",
        "done_reason",
        "ended",
        "hb_slot",
        "last_write",
        "live",
        "pending",
        "resp",
        "sent",
        "stalled_since",
        "transport",
    )

    def __init__(
        self, resp: web.StreamResponse, transport: asyncio.Transport, hb_slot: int
    ) -> None:
        self.resp = resp
        self.transport = transport
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.live = False
        self.pending: list[tuple[bytes, bytes, bytes]] | None = []
        self.sent: tuple[int, int] = (0, 0)
        self.ended = False  # a terminal event was written: end the stream cleanly
        self.done_reason = ""
        self.last_write = time.monotonic()
        self.stalled_since: float | None = None
        self.hb_slot = hb_slot
        self.backlog: set[Watcher] | None = None  # the WatcherSet's, once served

    # hub side --------------------------------------------------------------------------------

    def on_event(self, eid: bytes, job: str, typ: bytes, data: bytes) -> None:
        if self.closed.done():
            return
        if not self.live:
            assert self.pending is not None
            self.pending.append((eid, typ, data))
            if len(self.pending) > 10_000:
                self.close("overflow")
            return
        self.write_event(eid, typ, data)

    def on_reset(self) -> None:
        self.close("reset")

    def write_event(self, eid: bytes, typ: bytes, data: bytes) -> None:
        """Write one live event (each subclass dedupes by its own notion of position)."""
        raise NotImplementedError

    def write_raw(self, data: bytes) -> None:
        t = self.transport
        if t.is_closing():
            self.close("gone")
            return
        t.write(data)
        self.last_write = time.monotonic()
        queued = t.get_write_buffer_size()
        if queued:
            if queued > WatcherSet.max_buffer:
                self.close("slow")
            elif self.stalled_since is None and self.backlog is not None:
                # the sweeper watches it until it drains, or cuts it after the write timeout
                self.stalled_since = self.last_write
                self.backlog.add(self)

    def close(self, reason: str) -> None:
        if not self.closed.done():
            self.done_reason = reason
            self.closed.set_result(None)

    # handler side ----------------------------------------------------------------------------

    async def go_live(self) -> None:
        """Flush what arrived during replay (skipping what replay already sent), then go live."""
        while self.pending:
            batch, self.pending = self.pending, []
            for eid, typ, data in batch:
                if self.closed.done():
                    break
                self.write_event(eid, typ, data)
            await asyncio.sleep(0)
        self.pending = None
        self.live = True


class WatcherSet:
    """All watchers of this process: the cap, heartbeats, stalled writes, shutdown."""

    max_buffer = 256 * 1024

    def __init__(self, cfg: SseConfig) -> None:
        self.cfg = cfg
        WatcherSet.max_buffer = cfg.max_buffer_bytes
        self.watchers: set[Watcher] = set()
        self.clients: dict[str, int] = {}
        self.open = 0  # reserved stream slots (streams being opened and open)
        self.slots = max(1, int(cfg.heartbeat_s))
        self.by_slot: list[set[Watcher]] = [set() for _ in range(self.slots)]
        # one slot per tick, every slot twice per heartbeat period; a watcher idle for half a
        # period beats at its visit, so none stays silent for more than heartbeat_s (one visit
        # per period let silences reach 1.5 x heartbeat_s)
        self.tick_s = cfg.heartbeat_s / (2 * self.slots)
        self.beat_after = cfg.heartbeat_s / 2 - self.tick_s / 4
        self.backlog: set[Watcher] = set()  # watchers with unsent data
        self._tick = 0
        self._task: asyncio.Task[None] | None = None
        self.cut_slow = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._sweep(), name="sse-sweeper")

    async def close(self) -> None:
        for w in list(self.watchers):
            w.close("shutdown")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reserve(self, client: str) -> bool:
        """Take a stream slot for `client` now (before any await), or say no."""
        cap = self.cfg.max_per_client
        if self.open >= self.cfg.max_connections:
            return False
        if cap > 0 and self.clients.get(client, 0) >= cap:
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

    async def _sweep(self) -> None:
        """Every tick_s: check the watchers that have unsent data (cut those stalled past
        write_timeout_s), then heartbeat one slot of watchers (noticing the gone ones). A tick
        touches about 1/slots of the watchers, so no moment stalls them all."""
        beat = chunk(b": hb\n\n")
        while True:
            await asyncio.sleep(self.tick_s)
            self._tick = (self._tick + 1) % self.slots
            now = time.monotonic()
            for w in list(self.backlog):
                if w.closed.done() or w.transport.get_write_buffer_size() == 0:
                    w.stalled_since = None
                    self.backlog.discard(w)
                elif w.stalled_since is not None and (
                    now - w.stalled_since > self.cfg.write_timeout_s
                ):
                    self.cut_slow += 1
                    w.close("write-timeout")
            for w in list(self.by_slot[self._tick]):
                if w.closed.done():
                    continue
                if w.transport.is_closing():
                    w.close("gone")
                elif w.live and now - w.last_write >= self.beat_after:
                    w.write_raw(beat)


# the event last framed for a job watcher: the hub hands the same `eid` object to every watcher
# of a job, so its key is parsed and its chunk built once per event, not once per watcher
_framed: list[Any] = [None, (0, 0), b""]


class JobWatcher(Watcher):
    __slots__ = ()

    def write_event(self, eid: bytes, typ: bytes, data: bytes) -> None:
        f = _framed
        if f[0] is not eid:  # identity: the cached object is alive, so its id is not reused
            f[0], f[1], f[2] = eid, event_key(eid), chunk(frame(eid, typ, data))
        key = f[1]
        if key <= self.sent:
            return
        self.sent = key
        self.write_raw(f[2])
        if typ in _TERMINAL_B:
            self.ended = True
            self.close("terminal")


class FirehoseWatcher(Watcher):
    """Every job's events, optionally filtered by queue and task. With several partitions the
    SSE id is the position in each of them, comma-separated, so a resume is exact."""

    __slots__ = ("filters", "keys", "position")

    def __init__(
        self,
        resp: web.StreamResponse,
        transport: asyncio.Transport,
        hb_slot: int,
        keys: Keys,
        position: list[bytes],
        filters: list[bytes],
    ) -> None:
        super().__init__(resp, transport, hb_slot)
        self.keys = keys
        self.position = position
        self.filters = filters

    def accepts(self, data: bytes) -> bool:
        # the event's own "task" and "queue" come first in its data (the script writes them
        # before any result or payload fragment, which may hold keys of the same names)
        for f in self.filters:
            name = f[: f.index(b":") + 2]  # b',"queue":"'
            at = data.find(name)
            if at < 0 or not data.startswith(f, at):
                return False
        return True

    def write_event(self, eid: bytes, typ: bytes, data: bytes) -> None:
        if self.keys.partitions == 1:
            key = event_key(eid)
            if key <= self.sent:
                return
            self.sent = key
            if self.accepts(data):
                self.write_raw(chunk(frame(eid, typ, data)))
            return
        # dedupe per partition: the job id decides the partition
        job = data[8 : data.index(b'"', 8)].decode()  # data starts with {"job":"<id>"
        k = self.keys.partition(job)
        if event_key(eid) <= event_key(self.position[k]):
            return
        self.position[k] = eid
        if not self.accepts(data):
            return
        self.write_raw(chunk(frame(b",".join(self.position), typ, data)))


def parse_position(value: str | None, partitions: int) -> list[bytes] | None:
    """A firehose SSE id: one stream id per partition, comma-separated."""
    if not value:
        return None
    parts = value.split(",")
    if len(parts) != partitions or any(parse_event_id(p) is None for p in parts):
        return None
    return [p.encode() for p in parts]


async def open_stream(
    request: web.Request, retry_ms: int
) -> tuple[web.StreamResponse, asyncio.Transport]:
    resp = web.StreamResponse(status=200, headers=HEADERS)
    await resp.prepare(request)
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("client went away")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # a peer that vanished from the network is noticed within ~30 s, not hours
            sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, 30_000)
    await resp.write(b"retry: %d\n\n" % retry_ms)
    return resp, transport


async def serve(
    request: web.Request,
    watchers: WatcherSet,
    watcher: Watcher,
    max_age_s: float,
) -> None:
    """Hold the stream open until the watcher closes, the max age passes or the client goes."""
    watchers.watchers.add(watcher)
    watchers.by_slot[watcher.hb_slot].add(watcher)
    watcher.backlog = watchers.backlog
    if watcher.transport.get_write_buffer_size():  # left over from the replay
        watcher.stalled_since = time.monotonic()
        watchers.backlog.add(watcher)
    try:
        timeout = None
        if max_age_s > 0:
            timeout = max_age_s * random.uniform(0.8, 1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(watcher.closed), timeout)
        watcher.close("max-age")  # no-op if already closed; the hub writes nothing more
        if watcher.done_reason in ("slow", "write-timeout", "overflow"):
            log.info("sse.cut", reason=watcher.done_reason)
            watcher.transport.abort()
            return
        if not watcher.transport.is_closing():
            with contextlib.suppress(ConnectionError):
                await watcher.resp.write_eof()
    finally:
        watchers.watchers.discard(watcher)
        watchers.by_slot[watcher.hb_slot].discard(watcher)
        watchers.backlog.discard(watcher)


def snapshot_data(job: Any) -> bytes:
    body = msgspec.structs.asdict(job)
    body.pop("events_url", None)
    body.pop("status_url", None)
    body = {"job": body.pop("id"), "type": "snapshot", **body}
    return _encode(body)


def replay_plan(events: list[Event], last: str | None) -> tuple[str, list[Event]]:
    """Decide how a per-job stream starts: ('gone', []) for 204, ('replay', events to send), or
    ('snapshot', []) when the given id is malformed, unknown or already trimmed."""
    if last is None:
        if events and events[0].type not in ("queued", "scheduled"):
            return "snapshot", []  # the oldest events were trimmed
        return "replay", events
    key = parse_event_id(last)
    if key is None:
        return "snapshot", []
    for i, e in enumerate(events):
        if e.key == key:
            if i == len(events) - 1 and e.type in TERMINAL:
                return "gone", []
            return "replay", events[i + 1 :]
    return "snapshot", []


__all__ = [
    "FirehoseWatcher",
    "Hub",
    "JobWatcher",
    "Watcher",
    "WatcherSet",
    "open_stream",
    "parse_position",
    "replay_plan",
    "serve",
    "snapshot_data",
]
