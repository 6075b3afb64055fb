"""The two SSE endpoints, on one skeleton: reserve a slot, subscribe, decide the start, open the
stream, replay, go live, serve until the end, and replay again whenever the hub says the
watcher missed something."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from service.core import logs
from service.core.errors import Invalid, NotFound, Unavailable
from service.core.follow import plan_from
from service.core.hub import sse_frame
from service.core.tracing import Span
from service.core.wire import (
    JOB_ID_RE,
    GoneEvent,
    Job,
    SnapshotEvent,
    StoredEvent,
    decode_stored,
    encode_public,
    event_key,
    parse_event_id,
    public,
    snapshot_of,
    stored_type,
)
from service.http.cors import cors_headers
from service.http.jobs import filter_params
from service.http.state import HUB, PRINCIPAL, PRODUCER, SETTINGS, STATS, TRACING, WATCHERS
from service.sse.watchers import FirehoseWatcher, JobWatcher, Watcher, WatcherSet

log = structlog.get_logger("tidings.sse")
TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}
REPLAY_CHUNK = 65536
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def last_event_id(request: web.Request) -> str | None:
    value = request.headers.get("Last-Event-ID")
    if value is None:
        value = request.query.get("last_event_id")
    return value if value else None


def _hb_slot(request: web.Request, slots: int) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return zlib.crc32(repr((peer, id(request))).encode()) % slots


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


async def open_stream(request: web.Request, w: Watcher) -> None:
    """Send the headers (with CORS, which a middleware could not add to a stream that is already
    sent) and the reconnect delay."""
    resp = web.StreamResponse(status=200, headers={**HEADERS, **cors_headers(request)})
    await resp.prepare(request)
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("client went away")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # a peer that vanished from the network is noticed within ~30 s, not hours
            sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, 30_000)
    await resp.write(b"retry: %d\n\n" % request.app[SETTINGS].sse.retry_ms)
    w.resp, w.transport = resp, transport


async def write_all(w: Watcher, frames: list[bytes]) -> None:
    """Replayed frames in writes of up to 64 KiB (with drain), not one write per event."""
    assert w.resp is not None
    out: list[bytes] = []
    size = 0
    for f in frames:
        out.append(f)
        size += len(f)
        if size >= REPLAY_CHUNK:
            await w.resp.write(b"".join(out))
            out, size = [], 0
    if out:
        await w.resp.write(b"".join(out))


async def serve(request: web.Request, w: Watcher, replay: Callable[[], Awaitable[None]]) -> None:
    """Hold the stream open until the watcher closes, the max age passes or the client goes;
    replay again when the hub asks for a resync."""
    watchers: WatcherSet = request.app[WATCHERS]
    max_age = request.app[SETTINGS].sse.max_age_s
    loop = asyncio.get_running_loop()
    end = loop.time() + max_age * random.uniform(0.8, 1.0) if max_age > 0 else None
    watchers.add(w)
    try:
        while not w.closed.done():
            resync: asyncio.Future[Any] = asyncio.ensure_future(w.resync.wait())
            closed: asyncio.Future[Any] = w.closed
            try:
                timeout = None if end is None else max(0.0, end - loop.time())
                await asyncio.wait(
                    [closed, resync], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                resync.cancel()
            if w.closed.done():
                break
            if w.resync.is_set():
                w.resync.clear()
                await replay()
                continue
            w.close("max-age")  # no more writes from the hub
        if w.done_reason in ("slow", "timeout", "overflow"):
            if w.done_reason in watchers.cuts:
                watchers.cuts[w.done_reason] += 1
            log.info("sse.cut", reason=w.done_reason)
            assert w.transport is not None
            w.transport.abort()
            return
        assert w.transport is not None and w.resp is not None
        if not w.transport.is_closing():
            with contextlib.suppress(ConnectionError):
                await w.resp.write_eof()
    finally:
        watchers.discard(w)


# -- one job ---------------------------------------------------------------------------------


def _job_frames(job: Job, events: list[StoredEvent]) -> list[bytes]:
    frames = []
    for e in events:
        stored = decode_stored(e.body)
        data = encode_public(public(job.id, job.task, job.queue, e.id, stored))
        frames.append(sse_frame(e.id, stored_type(stored).encode(), data))
    return frames


@capped
async def job_events(request: web.Request) -> web.StreamResponse:
    """GET /api/jobs/{id}/events. With tracing on, the stream is a span in the job's trace (a
    child of the context stored at submit); log lines carry the job id and the trace id."""
    job_id = request.match_info["id"]
    if not JOB_ID_RE.match(job_id):
        raise NotFound("no such job")
    app = request.app
    tracing = app[TRACING]
    span: Span | None = None
    if tracing.enabled:
        with contextlib.suppress(NotFound):
            span = tracing.start(
                "SSE /api/jobs/{id}/events",
                parent=await app[PRODUCER].store.traceparent(job_id),
                kind="server",
                attributes={
                    "http.request.method": "GET",
                    "http.route": "/api/jobs/{id}/events",
                    "tidings.job.id": job_id,
                    "tidings.sse.resumed": last_event_id(request) is not None,
                },
            )
    with logs.bound(job_id=job_id, trace_id=span.trace_id if span else None):
        try:
            return await _job_events(request, job_id, span)
        finally:
            if span is not None:
                span.end()


async def _job_events(request: web.Request, job_id: str, span: Span | None) -> web.StreamResponse:
    app = request.app
    hub = app[HUB]
    store = app[PRODUCER].store
    await hub.ready()
    watchers = app[WATCHERS]
    w = JobWatcher(watchers, _hb_slot(request, watchers.slots), job_id)
    last = last_event_id(request)
    hub.subscribe(job_id, w)  # first: what is written from now on is buffered (not live yet)
    try:
        try:
            job, events = await store.snapshot(job_id)
        except NotFound:
            if last is not None:
                # the client was watching it: the job is gone (expired, or Redis lost it);
                # 204 stops a browser's EventSource for good instead of retrying forever
                return web.Response(status=204, headers={"Cache-Control": "no-cache"})
            raise
        start = plan_from(events, last)
        if start.plan == "gone":
            return web.Response(status=204, headers={"Cache-Control": "no-cache"})
        await open_stream(request, w)

        async def replay(job: Job | None = job, events: list[StoredEvent] = events) -> None:
            if job is None:  # a resync: read the job again, carry on after what was sent
                try:
                    job, events = await store.snapshot(job_id)
                except NotFound:
                    gone = GoneEvent(job=job_id, reason="job no longer exists")
                    await write_all(w, [sse_frame(None, b"gone", encode_public(gone))])
                    w.ended = True
                    w.close("gone")
                    return
            begin = plan_from(events, w.sent if w.sent != (0, 0) else last)
            if begin.plan == "gone":
                w.ended = True
                w.close("terminal")
                return
            frames: list[bytes] = []
            if begin.plan == "snapshot":
                newest = events[-1] if events else None
                frames.append(
                    sse_frame(
                        newest.id if newest else None,
                        b"snapshot",
                        encode_public(snapshot_of(job)),
                    )
                )
                if newest is not None:
                    w.sent = newest.key
                if job.state in ("succeeded", "failed", "cancelled"):
                    w.ended = True
            frames += _job_frames(job, begin.events)
            if begin.events:
                w.sent = begin.events[-1].key
                # only the newest event decides: a job retried after a terminal event streams on
                if begin.events[-1].type in ("succeeded", "failed", "cancelled"):
                    w.ended = True
            await write_all(w, frames)
            if w.ended:
                w.close("terminal")
            else:
                await w.go_live()

        await replay()
        del events  # not held for the life of the stream
        await serve(request, w, lambda: replay(None))
        assert w.resp is not None
        return w.resp
    except ConnectionError:
        return w.resp or web.Response(status=499)
    finally:
        hub.unsubscribe(job_id, w)
        if span is not None:
            span.set("tidings.sse.end", w.done_reason or "client gone")


# -- the firehose ----------------------------------------------------------------------------


def parse_position(value: str | None, partitions: int) -> list[bytes] | None:
    """A firehose SSE id: one stream id per partition, comma-separated."""
    if not value:
        return None
    parts = value.split(",")
    if len(parts) != partitions or any(parse_event_id(p) is None for p in parts):
        return None
    return [p.encode() for p in parts]


def _snapshot_frame(position: bytes, reason: str) -> bytes:
    return sse_frame(position, b"snapshot", encode_public(SnapshotEvent(reason=reason)))


@capped
async def firehose(request: web.Request) -> web.StreamResponse:
    """GET /api/events?queue=&task=&stats= : every job's events in one resumable stream;
    `stats=1` adds the deployment's figures about once a second (`stats=only`: those alone)."""
    queue, task = filter_params(request)
    stats = request.query.get("stats", "")
    if stats not in ("", "0", "1", "only"):
        raise Invalid("stats is 1, 0 or only", path="stats")
    app = request.app
    keys = app[PRODUCER].keys
    r = app[PRODUCER].redis
    hub = app[HUB]
    await hub.ready()
    watchers = app[WATCHERS]
    w = FirehoseWatcher(
        watchers,
        _hb_slot(request, watchers.slots),
        keys,
        queue=queue,
        task=task,
        stats=stats in ("1", "only"),
        events=stats != "only",
    )
    last = last_event_id(request)
    given = parse_position(last, keys.partitions)
    # subscribe, then read the hub's position in the same step: every event after it reaches us
    hub.subscribe_all(w)
    try:
        now = [hub.position(k) for k in range(keys.partitions)]
        reason = None
        if last is not None and given is None:
            reason = "unknown id"
        elif given is not None:
            for k in range(keys.partitions):
                if event_key(given[k]) == (0, 0):
                    continue
                # resumable only from an entry the stream still holds: one trimmed away, or
                # one that never existed here (another deployment, a wiped Redis) is not
                if not await r.xrange(keys.fire(k), min=given[k], max=given[k], count=1):
                    reason = "trimmed or unknown id"
                    break
        await open_stream(request, w)

        async def replay_from(start: list[bytes] | None, why: str | None) -> None:
            upto = [hub.position(k) for k in range(keys.partitions)]
            if start is None:
                w.position = list(upto)
                w.sent = event_key(upto[0])
                await write_all(w, [_snapshot_frame(w.sse_id(), why or "gap")])
            else:
                w.position = list(start)
                w.sent = event_key(start[0])
                for k in range(keys.partitions):
                    await _replay_partition(w, r, keys.fire(k), k, upto[k])
            await w.go_live()

        if given is None and last is None:
            w.position = list(now)
            w.sent = event_key(now[0])
            await w.go_live()
        else:
            await replay_from(given if reason is None else None, reason)
        if w.stats:
            # the figures at once, not after the first tick (the page shows them from the start)
            w.write_raw(await app[STATS].frame())
        await serve(request, w, lambda: replay_from(None, "gap"))
        assert w.resp is not None
        return w.resp
    except ConnectionError:
        return w.resp or web.Response(status=499)
    finally:
        hub.unsubscribe_all(w)


async def _replay_partition(w: FirehoseWatcher, r: Any, fire: str, k: int, upto: bytes) -> None:
    """The entries of partition k after the watcher's position, up to the hub's position."""
    start = w.position[k]
    while event_key(start) < event_key(upto):
        rows = await r.xrange(fire, min=b"(" + start, max=upto, count=500)
        if not rows:
            break
        frames = []
        for eid, f in rows:
            start = eid
            key = event_key(eid)
            if not w.advance(k, eid, key):
                continue
            t, q = f[b"t"].decode(), f[b"q"].decode()
            if w.accepts(q, t):
                stored = decode_stored(f[b"v"])
                data = encode_public(public(f[b"j"].decode(), t, q, eid, stored))
                frames.append(sse_frame(w.sse_id(), stored_type(stored).encode(), data))
        await write_all(w, frames)
        if len(rows) < 500:
            break


__all__ = ["capped", "firehose", "job_events", "last_event_id", "parse_position"]
