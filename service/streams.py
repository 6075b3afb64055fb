"""The two SSE endpoints: one job's events, and the firehose of every job's events."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions
from aiohttp import web

from service.contract import JOB_ID_RE, QUEUE_RE, TASK_RE, TERMINAL, Event, Keys
from service.errors import Invalid, NotFound, Unavailable
from service.sse import (
    FirehoseWatcher,
    JobWatcher,
    event_key,
    frame,
    open_stream,
    parse_position,
    replay_plan,
    serve,
    snapshot_data,
)
from service.state import HUB, PRINCIPAL, PRODUCER, SETTINGS, WATCHERS


def _last_event_id(request: web.Request) -> str | None:
    value = request.headers.get("Last-Event-ID")
    if value is None:
        value = request.query.get("last_event_id")
    return value if value else None


def _hb_slot(request: web.Request, slots: int) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return zlib.crc32(repr((peer, id(request))).encode()) % slots


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def capped(handler: Handler) -> Handler:
    """Reserve a stream slot before anything is awaited (so a burst cannot overshoot the cap)
    and give it back when the stream ends."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        watchers = request.app[WATCHERS]
        client = str(request.get(PRINCIPAL, ""))
        if not watchers.reserve(client):
            raise Unavailable("too many event streams; retry shortly")
        try:
            return await handler(request)
        finally:
            watchers.release(client)

    return wrapped


@capped
async def job_events(request: web.Request) -> web.StreamResponse:
    """GET /api/jobs/{id}/events"""
    job_id = request.match_info["id"]
    if not JOB_ID_RE.match(job_id):
        raise NotFound("no such job")
    cfg = request.app[SETTINGS].sse
    hub = request.app[HUB]
    await hub.ready()
    watchers = request.app[WATCHERS]
    resp = web.StreamResponse()  # replaced once the stream is opened
    early = _Early()
    watcher: JobWatcher | None = None
    hub.subscribe(job_id, early)
    try:
        job, events = await request.app[PRODUCER].snapshot(job_id)
        plan, replay = replay_plan(events, _last_event_id(request))
        if plan == "gone":
            return web.Response(status=204, headers={"Cache-Control": "no-cache"})
        resp, transport = await open_stream(request, cfg.retry_ms)
        watcher = early.watcher = JobWatcher(resp, transport, _hb_slot(request, watchers.slots))
        watcher.pending, early.pending = early.pending, []
        if plan == "snapshot":
            last: Event | None = events[-1] if events else None
            eid = last.id.encode() if last else b"0-0"
            await resp.write(frame(eid, b"snapshot", snapshot_data(job)))
            if last is not None:
                watcher.sent = last.key
            if job.state in TERMINAL:
                watcher.ended = True
                watcher.close("terminal")
        # the replay in writes of up to 64 KiB, not one write (and drain) per event
        out: list[bytes] = []
        size = 0
        for e in replay:
            out.append(frame(e.id.encode(), e.type.encode(), e.data))
            size += len(out[-1])
            if size >= 65536:
                await resp.write(b"".join(out))
                out, size = [], 0
        if out:
            await resp.write(b"".join(out))
        if replay:
            watcher.sent = replay[-1].key
            # only the newest event decides: a job retried after a terminal event streams on
            if replay[-1].type in TERMINAL:
                watcher.ended = True
                watcher.close("terminal")
        # not held for the life of the stream: a job's history is up to jobs.max_events events
        del job, events, replay, out
        if not watcher.closed.done():
            await watcher.go_live()
            # live: the hub calls the watcher itself from now on (no await in between, so no
            # event can fall between the two subscriptions)
            hub.subscribe(job_id, watcher)
            hub.unsubscribe(job_id, early)
        await serve(request, watchers, watcher, cfg.max_age_s)
        return resp
    except ConnectionError:
        return resp
    finally:
        hub.unsubscribe(job_id, early)
        if watcher is not None:
            hub.unsubscribe(job_id, watcher)


class _Early:
    """Subscribed before the replay is read: holds the job's live events until the watcher
    exists, then hands them to it (no race between replay and live). Module level: a class
    defined inside the handler is one more class object per open stream (with the `del` of
    the replay below, ~4 KB less per idle watcher, measured)."""

    __slots__ = ("pending", "watcher")

    def __init__(self) -> None:
        self.pending: list[tuple[bytes, bytes, bytes]] = []
        self.watcher: JobWatcher | None = None

    def on_event(self, eid: bytes, job: str, typ: bytes, data: bytes) -> None:
        if self.watcher is None:
            self.pending.append((eid, typ, data))
        else:
            self.watcher.on_event(eid, job, typ, data)

    def on_reset(self) -> None:
        if self.watcher is not None:
            self.watcher.on_reset()


@capped
async def firehose(request: web.Request) -> web.StreamResponse:
    """GET /api/events?queue=&task= : every job's events in one resumable stream."""
    filters: list[bytes] = []
    queue = request.query.get("queue")
    task = request.query.get("task")
    if queue:
        if not QUEUE_RE.match(queue):
            raise Invalid("invalid queue name", path="queue")
        filters.append(b',"queue":"' + queue.encode() + b'"')
    if task:
        if not TASK_RE.match(task):
            raise Invalid("invalid task name", path="task")
        filters.append(b',"task":"' + task.encode() + b'"')
    app = request.app
    cfg = app[SETTINGS].sse
    keys = app[PRODUCER].keys
    r: Any = app[PRODUCER].redis
    hub = app[HUB]
    await hub.ready()
    watchers = app[WATCHERS]
    last = _last_event_id(request)
    given = parse_position(last, keys.partitions)
    resp, transport = await open_stream(request, cfg.retry_ms)
    # subscribe, then read the hub's position in the same step: every event after it reaches us
    w = FirehoseWatcher(resp, transport, _hb_slot(request, watchers.slots), keys, [], filters)
    hub.subscribe_all(w)
    now = [hub.position(k) for k in range(keys.partitions)]
    w.position = list(now)
    try:
        if last is not None and given is None:
            await resp.write(
                frame(b",".join(now), b"snapshot", b'{"type":"snapshot","reason":"unknown id"}')
            )
        elif given is not None:
            trimmed = False
            for k in range(keys.partitions):
                # a gap exists only if an entry after the client's position was trimmed away
                try:
                    info = await r.xinfo_stream(keys.fire(k))
                except redis.exceptions.ResponseError:
                    continue  # no such stream yet
                if lost_after(info, given[k]):
                    trimmed = True
            if trimmed:
                await resp.write(
                    frame(b",".join(now), b"snapshot", b'{"type":"snapshot","reason":"trimmed"}')
                )
            else:
                w.position = list(given)
                await _replay_firehose(w, r, keys, now)
                # a client may come from a process whose hub was ahead of ours: never go back
                now = [max(a, b, key=event_key) for a, b in zip(now, given, strict=True)]
                w.position = list(now)
        w.sent = event_key(now[0])
        await w.go_live()
        await serve(request, watchers, w, cfg.max_age_s)
        return resp
    except ConnectionError:
        return resp
    finally:
        hub.unsubscribe_all(w)


def lost_after(info: dict[str, Any], pos: bytes) -> bool:
    """Were entries after `pos` removed from this stream (XINFO STREAM `info`)? XADD MAXLEN
    trimming does not move max-deleted-entry-id (only XDEL does), so: nothing was removed if
    entries-added == length; else everything before the first entry left may be gone."""

    def eid(v: Any) -> bytes:
        return v if isinstance(v, bytes) else str(v).encode()

    added = info.get("entries-added")
    if added is not None and int(added) <= int(info["length"]):
        return False  # nothing was ever removed (Redis >= 7 reports entries-added)
    if event_key(pos) < event_key(eid(info.get("max-deleted-entry-id", b"0-0"))):
        return True  # XDEL
    first = info.get("first-entry")
    if not first:  # everything removed
        return event_key(pos) < event_key(eid(info["last-generated-id"]))
    return event_key(pos) < event_key(eid(first[0]))


async def _replay_firehose(w: FirehoseWatcher, r: Any, keys: Keys, upto: list[bytes]) -> None:
    for k in range(keys.partitions):
        start = w.position[k]
        while True:
            rows = await r.xrange(keys.fire(k), min=b"(" + start, max=upto[k], count=500)
            if not rows:
                break
            for eid, fields in rows:
                start = eid
                w.position[k] = eid
                data = fields[b"d"]
                if w.accepts(data):
                    out_id = b",".join(w.position)
                    await w.resp.write(frame(out_id, fields[b"e"], data))
            if len(rows) < 500:
                break
