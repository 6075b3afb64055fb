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
    watcher: JobWatcher | None = None
    pending: list[tuple[bytes, bytes, bytes]] = []

    class _Early:
        # collects events between subscribe and the watcher's creation (no race)
        def on_event(self, eid: bytes, job: str, typ: bytes, data: bytes) -> None:
            if watcher is None:
                pending.append((eid, typ, data))
            else:
                watcher.on_event(eid, job, typ, data)

        def on_reset(self) -> None:
            if watcher is not None:
                watcher.on_reset()

    early = _Early()
    hub.subscribe(job_id, early)
    try:
        job, events = await request.app[PRODUCER].snapshot(job_id)
        plan, replay = replay_plan(events, _last_event_id(request))
        if plan == "gone":
            return web.Response(status=204, headers={"Cache-Control": "no-cache"})
        resp, transport = await open_stream(request, cfg.retry_ms)
        watcher = JobWatcher(resp, transport, _hb_slot(request, watchers.slots))
        assert watcher.pending is not None
        watcher.pending.extend(pending)
        if plan == "snapshot":
            last: Event | None = events[-1] if events else None
            eid = last.id.encode() if last else b"0-0"
            await resp.write(frame(eid, b"snapshot", snapshot_data(job)))
            if last is not None:
                watcher.sent = last.key
            if job.state in TERMINAL:
                watcher.ended = True
                watcher.close("terminal")
        for e in replay:
            await resp.write(frame(e.id.encode(), e.type.encode(), e.data))
            watcher.sent = e.key
        # only the newest event decides: a job retried after a terminal event streams on
        if replay and replay[-1].type in TERMINAL:
            watcher.ended = True
            watcher.close("terminal")
        if not watcher.closed.done():
            await watcher.go_live()
        await serve(request, watchers, watcher, cfg.max_age_s)
        return resp
    except ConnectionError:
        return resp
    finally:
        hub.unsubscribe(job_id, early)


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
                dropped = info.get("max-deleted-entry-id", b"0-0")
                dropped = dropped if isinstance(dropped, bytes) else str(dropped).encode()
                if event_key(given[k]) < event_key(dropped):
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
