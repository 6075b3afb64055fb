"""SSE at scale: the hub's replay-then-live handover, backpressure, the connection cap, graceful
shutdown, max age, heartbeats, the firehose and progress coalescing.

Events are written straight through the Lua ops (`start`, `apply`), the way a worker writes them,
so a test decides exactly when each event lands. The service runs in-process (aiohttp_client)
where that is enough, and as a real process (marked e2e) where a signal, uvloop's transports or
a worker matter. A plain-socket client (`RawSse`) reads only when told to, and decodes the chunked
framing by hand, so a clean end (the zero-size chunk) can be told from a cut-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import aiohttp
import pytest
import redis.exceptions
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from service.core import scripts as S
from service.core import wire
from service.core.wire import event_key
from service.http.app import create_app
from service.http.state import HUB, PRODUCER, WATCHERS
from service.producer import Producer, SubmitRequest
from tests.conftest import make_config, task_registry
from tests.helpers import SseEvent, Stack, eventually, read_sse

Client = TestClient[web.Request, web.Application]


# -- writing events as a worker does ---------------------------------------------------------


class Driver:
    """Starts jobs and writes their events through the script's `start` and `apply` ops."""

    def __init__(self, p: Producer) -> None:
        self.p = p
        self.r: Any = p.redis
        self.keys = p.keys
        self.ops = p.ops
        self.runs: dict[str, int] = {}
        self.queue_of: dict[str, str] = {}
        self.seq: dict[str, int] = {}

    async def submit(self, n: int, *, task: str = "t.noop", queue: str = "sse") -> list[str]:
        """n queued jobs on a queue no worker serves, started by us: running, ours to write."""
        jobs = await self.p.submit_many(
            [SubmitRequest(task=task, payload={}, queue=queue) for _ in range(n)]
        )
        ids = [j.id for j in jobs]
        await self.start(*ids)
        return ids

    async def start(self, *job_ids: str) -> None:
        """Fetch the jobs' entries as a consumer would, then start them."""
        want = set(job_ids)
        by_part: dict[int, list[S.Entry]] = {}
        queues = {(await self.r.hget(self.keys.job(j), "q")).decode() for j in job_ids}
        for k in {self.keys.partition(j) for j in job_ids}:
            for queue in sorted(queues):
                stream = self.keys.queue(k, queue)
                with contextlib.suppress(redis.exceptions.ResponseError):
                    await self.r.xgroup_create(stream, S.GROUP, id="0", mkstream=True)
                resp = await self.r.xreadgroup(S.GROUP, "test-driver", {stream: ">"}, count=100_000)
                for _, entries in resp or []:
                    for eid, f in entries:
                        jid = f[b"j"].decode()
                        if jid in want:
                            by_part.setdefault(k, []).append(S.Entry(jid, queue, eid.decode()))
        minute = int(time.time() // 60)
        for k, entries in by_part.items():
            for row in await self.ops.start(k, "test-driver", entries, minute).run(self.r):
                assert row.verdict == "run", row
                self.runs[row.id] = row.run
                self.queue_of[row.id] = next(e.queue for e in entries if e.id == row.id)
        assert want <= set(self.runs), want - set(self.runs)

    async def apply(self, *ops: tuple[Any, ...]) -> None:
        """Ops in order, one script call per partition: ("p", job, current) for progress,
        ("l", job, message) for a log line, ("f", job[, result json]) for success."""
        by_part: dict[int, list[S.Write]] = {}
        for op in ops:
            kind, jid = op[0], op[1]
            run, queue = self.runs[jid], self.queue_of[jid]
            self.seq[jid] = self.seq.get(jid, 0) + 1
            seq = self.seq[jid]
            if kind == "p":
                cur = op[2]
                body = wire.encode_stored(wire.SProgress(1, cur))
                w = S.Write("p", jid, queue, run, seq, body, str(cur), "", "")
            elif kind == "l":
                w = S.Write("l", jid, queue, run, seq, wire.encode_stored(wire.SLog(1, op[2])))
            else:
                result = op[2] if len(op) > 2 else b"null"
                w = S.Write("f", jid, queue, run, seq, result, "succeeded", 0)
            by_part.setdefault(self.keys.partition(jid), []).append(w)
        minute = int(time.time() // 60)
        for k, items in by_part.items():
            res = await self.ops.apply(k, items, minute).run(self.r)
            assert "fenced" not in res, res

    async def stored(self, job_id: str) -> list[tuple[str, str]]:
        return [(e.id.decode(), e.type) for e in await self.p.events(job_id)]


class Ev(NamedTuple):
    """A stored event as SSE clients see it."""

    id: str
    type: str
    data: bytes
    key: tuple[int, int]


async def public_events(p: Producer, job_id: str) -> list[Ev]:
    job, events = await p.snapshot(job_id)
    return [
        Ev(
            e.id.decode(),
            e.type,
            wire.encode_public(wire.public(job_id, job.task, job.queue, e.id, e.decode())),
            e.key,
        )
        for e in events
    ]


# -- a client that reads only when told to -------------------------------------------------


class RawSse:
    """One GET over a plain non-blocking socket; HTTP/1.1 chunked framing decoded by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.raw = b""
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.clean = False  # the zero-size chunk (or the whole Content-Length) arrived
        self.trailing = b""  # anything after that: never, on a healthy connection
        self.eof = False
        self.reset = False
        self.opened = time.monotonic()
        self.head_at: float | None = None  # when the response head arrived
        self.ended_at: float | None = None
        self.hb_times: list[float] = []

    @classmethod
    async def open(
        cls, port: int, path: str, headers: dict[str, str] | None = None, rcvbuf: int = 0
    ) -> RawSse:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            req = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Accept: text/event-stream\r\n{extra}\r\n"
            )
            await loop.sock_sendall(sock, req.encode())
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    async def recv(self, timeout: float) -> bool:
        """One read (waiting up to `timeout`); False at EOF or reset."""
        if self.eof:
            return False
        try:
            async with asyncio.timeout(max(timeout, 0)):
                data = await asyncio.get_running_loop().sock_recv(self.sock, 1 << 16)
        except TimeoutError:
            return True
        except ConnectionResetError:
            data, self.reset = b"", True
        if not data:
            self.eof = True
            if self.ended_at is None:
                self.ended_at = time.monotonic()
            return False
        self.raw += data
        self._parse()
        return True

    async def read_until(self, cond: Callable[[RawSse], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; got {self.body[-400:]!r}")
            if not await self.recv(left):
                if cond(self):
                    return
                raise AssertionError(f"stream ended first; got {self.body[-400:]!r}")

    async def read_to_end(self, timeout: float = 10.0) -> None:
        """Until the response ends: its zero-size chunk, or the connection closing."""
        deadline = time.monotonic() + timeout
        while not self.clean and await self.recv(deadline - time.monotonic()):
            if time.monotonic() > deadline:
                raise AssertionError(f"stream did not end within {timeout}s")

    def _parse(self) -> None:
        if self.status is None:
            k = self.raw.find(b"\r\n\r\n")
            if k < 0:
                return
            head, self.raw = self.raw[:k].decode("latin-1"), self.raw[k + 4 :]
            first, *lines = head.split("\r\n")
            self.status = int(first.split()[1])
            self.head_at = time.monotonic()
            for line in lines:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
        if self.clean:
            # bytes after the end of the response, before we asked for anything else
            self.trailing, self.raw = self.trailing + self.raw, b""
            return
        if "content-length" in self.headers:
            self.body, self.raw = self.body + self.raw, b""
            self.clean = len(self.body) >= int(self.headers["content-length"])
            return
        while not self.clean:
            k = self.raw.find(b"\r\n")
            if k < 0:
                return
            size = int(self.raw[:k], 16)
            if len(self.raw) < k + 2 + size + 2:
                return
            piece = self.raw[k + 2 : k + 2 + size]
            assert self.raw[k + 2 + size : k + 4 + size] == b"\r\n", "bad chunk framing"
            self.raw = self.raw[k + 4 + size :]
            if size == 0:
                self.clean = True
                self.ended_at = time.monotonic()
                self.trailing, self.raw = self.raw, b""
            if piece.startswith(b": hb"):
                self.hb_times.append(time.monotonic())
            self.body += piece

    @property
    def events(self) -> list[SseEvent]:
        """The complete events received (a cut-off partial one is left out)."""
        out = []
        for block in self.body.decode().split("\n\n")[:-1]:
            cur: dict[str, str] = {}
            for line in block.split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                cur[name] = value[1:] if value.startswith(" ") else value
            if "data" in cur or "event" in cur:
                out.append(SseEvent(cur.get("id"), cur.get("event", "message"), cur["data"]))
        return out


# -- shared checks ---------------------------------------------------------------------------


def ids_of(events: list[SseEvent]) -> list[str]:
    return [str(e.id) for e in events]


def assert_exact(got: list[SseEvent], stored: list[tuple[str, str]], what: str = "") -> None:
    """Received == stored: same ids, same types, same order; so no gap and no duplicate."""
    ids = ids_of(got)
    assert len(set(ids)) == len(ids), f"{what}: duplicate ids"
    assert [(str(e.id), e.event) for e in got] == stored, what


async def start_app(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str, **env: str
) -> tuple[Client, web.Application]:
    cfg = make_config(redis_url, prefix, TIDINGS_WORKERS_TASKS="tests.tasks", **env)
    app = create_app(cfg, redis_url, task_registry())
    client = await aiohttp_client(app)
    return client, app


async def watcher_count(app: web.Application, n: int) -> None:
    async def check() -> bool:
        return len(app[WATCHERS].watchers) == n

    await eventually(check, what=f"{n} watchers registered")


async def metric(s: aiohttp.ClientSession, base: str, name: str) -> int:
    async with s.get(base + "/metrics") as r:
        text = await r.text()
    # summed over the series (labels) of the metric
    found = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
    assert found, text
    return int(sum(float(v) for v in found))


def at_least(n: int) -> Callable[[list[SseEvent]], bool]:
    return lambda evs: len(evs) >= n


def done(n: int) -> Callable[[list[SseEvent]], bool]:
    """For read_sse: stop after n terminal events."""
    return lambda evs: sum(e.event == "succeeded" for e in evs) >= n


# -- the hub's race --------------------------------------------------------------------------


async def test_event_between_subscribe_and_replay_arrives_exactly_once(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str, producer: Producer
) -> None:
    """Hold the handler inside its replay read: one event lands after the hub subscription but
    before the replay reads the job's list (so it is in the replay and reaches the subscriber
    too), another after the replay read but before the watcher exists (only the subscriber has
    it). Each must arrive once."""
    client, app = await start_app(aiohttp_client, redis_url, prefix)
    d = Driver(producer)
    (jid,) = await d.submit(1)
    hub = app[HUB]
    svc = app[PRODUCER].store
    real = svc.snapshot

    async def dispatched(before: int) -> None:
        async def seen() -> bool:
            return hub.events_read > before

        await eventually(seen, what="hub dispatch")

    async def held(job_id: str) -> Any:
        assert hub.subscribers == 1  # subscribed before the replay
        before = hub.events_read
        await d.apply(("p", jid, 1))
        await dispatched(before)  # delivered to the subscriber, and in the list below
        result = await real(job_id)
        before = hub.events_read
        await d.apply(("p", jid, 2))
        await dispatched(before)  # delivered to the subscriber only
        return result

    svc.snapshot = held  # type: ignore[method-assign]
    async with client.get(f"/api/jobs/{jid}/events") as r:
        assert r.status == 200
        first = await read_sse(r, until=lambda ev: len(ev) == 4)
        svc.snapshot = real  # type: ignore[method-assign]
        await d.apply(("p", jid, 3), ("f", jid))
        rest = await read_sse(r)
    got = first + rest
    assert [e.event for e in got] == ["queued", "started"] + ["progress"] * 3 + ["succeeded"]
    assert [json.loads(e.data).get("current") for e in got[2:5]] == [1, 2, 3]
    assert_exact(got, await d.stored(jid))


async def test_replay_live_handover_under_concurrent_writes(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str, producer: Producer
) -> None:
    """Streams open (some resuming mid-job) while every job is being written to: each one gets
    exactly the job's stored events after its starting point."""
    client, app = await start_app(aiohttp_client, redis_url, prefix)
    d = Driver(producer)
    n_jobs, rounds = 24, 40
    jobs = await d.submit(n_jobs)
    rnd = random.Random(4)
    round_done = [asyncio.Event() for _ in range(rounds + 1)]
    plans = [(jid, rnd.randrange(rounds), rnd.random() < 0.5) for jid in jobs for _ in range(3)]

    async def writer() -> None:
        for i in range(1, rounds + 1):
            await d.apply(*[("p", jid, i) for jid in jobs])
            round_done[i - 1].set()
            await asyncio.sleep(0)
        await d.apply(*[("f", jid) for jid in jobs])
        round_done[rounds].set()

    async def watch(jid: str, at: int, resume: bool) -> tuple[str, str | None, list[SseEvent]]:
        await round_done[at].wait()
        headers = {}
        if resume:
            stored = await d.stored(jid)
            headers["Last-Event-ID"] = rnd.choice(stored)[0]
        async with client.get(f"/api/jobs/{jid}/events", headers=headers) as r:
            assert r.status == 200
            return jid, headers.get("Last-Event-ID"), await read_sse(r, timeout=30)

    watched = asyncio.gather(*(watch(*p) for p in plans))
    await writer()
    for jid, last, got in await watched:
        stored = await d.stored(jid)
        start = 0 if last is None else [i for i, _ in stored].index(str(last)) + 1
        assert_exact(got, stored[start:], f"{jid} from {last}")
    assert hub_idle(app)


def hub_idle(app: web.Application) -> bool:
    return app[HUB].subscribers == 0 and not app[WATCHERS].watchers


# -- the firehose ----------------------------------------------------------------------------


def by_job(events: list[SseEvent] | list[Any]) -> dict[str, list[str]]:
    """Each job's events (their JSON data), in the order received."""
    out: dict[str, list[str]] = {}
    for e in events:
        data = e.data.decode() if isinstance(e.data, bytes) else e.data
        out.setdefault(json.loads(data)["job"], []).append(data)
    return out


def assert_same_events(got: list[SseEvent], want: list[Any], partitions: int, what: str) -> None:
    """The same events, none twice, each job's in order; with one partition, in exactly the same
    order (across partitions a firehose is a merge: only each partition's order is defined)."""
    got_data = [e.data for e in got]
    want_data = [x.data.decode() if isinstance(x.data, bytes) else x.data for x in want]
    assert len(got_data) == len(set(got_data)), f"{what}: duplicates"
    assert sorted(got_data) == sorted(want_data), f"{what}: gap or extra"
    assert by_job(got) == by_job(want), f"{what}: reordered"
    if partitions == 1:
        assert got_data == want_data, f"{what}: order"


@pytest.mark.parametrize("partitions", [1, 4])
async def test_firehose_filters_and_exact_resume(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str, partitions: int
) -> None:
    """`GET /api/events` carries every job's events, `?queue=` and `?task=` exactly their
    share, and a resume from any id gets exactly what followed it, including what was written
    while nobody was connected."""
    client, app = await start_app(
        aiohttp_client, redis_url, prefix, TIDINGS_REDIS_PARTITIONS=str(partitions)
    )
    p = app[PRODUCER]  # the app's own producer: the same keys and partitions
    d = Driver(p)

    async def run(ids: list[str], n: int) -> None:
        for i in range(1, n + 1):
            await d.apply(*[("p", j, i) for j in ids])
        await d.apply(*[("f", j) for j in ids])

    async with (
        client.get("/api/events") as everything,
        client.get("/api/events?queue=qa") as qa,
        client.get("/api/events?task=t.steps") as steps,
    ):
        assert everything.status == qa.status == steps.status == 200
        await watcher_count(app, 3)
        a = await d.submit(3, task="t.noop", queue="qa")
        b = await d.submit(3, task="t.steps", queue="qb")
        await run(a + b, 4)
        got = {
            "/api/events": await read_sse(everything, until=done(6)),
            "/api/events?queue=qa": await read_sse(qa, until=done(3)),
            "/api/events?task=t.steps": await read_sse(steps, until=done(3)),
        }
        assert await no_more(everything) and await no_more(qa) and await no_more(steps)

    stored = {j: await public_events(p, j) for j in a + b}

    def fire_order(evs: list[Any]) -> list[Any]:
        return sorted(evs, key=lambda x: (d.keys.partition(json.loads(x.data)["job"]), x.key))

    in_order = fire_order([x for evs in stored.values() for x in evs])
    share = {
        "/api/events": in_order,
        "/api/events?queue=qa": [x for x in in_order if b'"queue":"qa"' in x.data],
        "/api/events?task=t.steps": [x for x in in_order if b'"task":"t.steps"' in x.data],
    }
    assert len(share["/api/events"]) == 6 * 7
    for path, events in got.items():
        assert_same_events(events, share[path], partitions, path)
        assert_positions_increase(events, partitions, every=path == "/api/events")

    # written while nobody is connected
    c = await d.submit(2, task="t.noop", queue="qa")
    await run(c, 2)
    extra = fire_order([x for j in c for x in await public_events(p, j)])
    extra_share = {
        "/api/events": extra,
        "/api/events?queue=qa": extra,
        "/api/events?task=t.steps": [],
    }
    for path, events in got.items():
        for cut in (0, len(events) // 2, len(events) - 1):
            last = str(events[cut].id)
            want = events[cut + 1 :] + extra_share[path]
            async with client.get(path, headers={"Last-Event-ID": last}) as r:
                assert r.status == 200
                again = await read_sse(r, until=at_least(len(want))) if want else []
                assert await no_more(r), path
            assert_same_events(again, want, partitions, f"{path} from #{cut}")
            assert_positions_increase(
                events[: cut + 1] + again, partitions, every=path == "/api/events"
            )
    # the first connection may pass the id as ?last_event_id=
    async with client.get(f"/api/events?last_event_id={got['/api/events'][-1].id}") as r:
        again = await read_sse(r, until=lambda ev: len(ev) >= len(extra))
        assert await no_more(r)
    assert_same_events(again, extra, partitions, "?last_event_id=")


class GatedXread:
    """The hub's Redis client, with XREAD held until `gate` opens: a hub that lags behind."""

    def __init__(self, r: Any) -> None:
        self._r = r
        self.gate = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._r, name)

    async def xread(self, *args: Any, **kw: Any) -> Any:
        await self.gate.wait()
        return await self._r.xread(*args, **kw)


async def test_firehose_resume_from_a_process_ahead_of_this_one(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str, producer: Producer
) -> None:
    """Several service processes each read the firehose with their own hub, so one can be a few
    events behind another. A client that saw events up to X on a process that was ahead, and
    reconnects here while this hub is still behind X, must not get those events again."""
    client, app = await start_app(aiohttp_client, redis_url, prefix)
    hub = app[HUB]
    d = Driver(producer)
    (jid,) = await d.submit(1)
    async with client.get("/api/events") as r:  # starts this process's hub
        await watcher_count(app, 1)
    gated = GatedXread(hub._r)
    hub._r = gated
    before = hub.events_read
    await d.apply(("p", jid, 1))  # returns the hub's XREAD in flight; the next one is held

    async def caught_up() -> bool:
        return hub.events_read > before

    await eventually(caught_up, what="hub read")
    await d.apply(("p", jid, 2), ("p", jid, 3))  # seen by a process that is ahead
    seen = await d.stored(jid)
    try:
        async with client.get("/api/events", headers={"Last-Event-ID": seen[-1][0]}) as r:
            assert r.status == 200
            await watcher_count(app, 1)
            gated.gate.set()
            await d.apply(("p", jid, 4))
            got = await read_sse(r, until=lambda ev: '"current":4' in ev[-1].data)
    finally:
        gated.gate.set()
    assert [json.loads(e.data)["current"] for e in got] == [4], "sent again"


async def test_firehose_filter_reads_the_events_own_queue_and_task(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str, producer: Producer
) -> None:
    """A job of queue qb whose result happens to contain `"queue":"qa"` is not a qa event."""
    client, app = await start_app(aiohttp_client, redis_url, prefix)
    d = Driver(producer)
    async with (
        client.get("/api/events?queue=qa") as qa,
        client.get("/api/events?task=t.noop") as noop,
    ):
        await watcher_count(app, 2)
        (other,) = await d.submit(1, task="t.steps", queue="qb")
        await d.apply(("f", other, b'{"n":1,"queue":"qa","task":"t.noop"}'))
        (mine,) = await d.submit(1, task="t.noop", queue="qa")
        await d.apply(("f", mine))
        for r in (qa, noop):
            got = await read_sse(r, until=done(1))
            assert {json.loads(e.data)["job"] for e in got} == {mine}


async def no_more(r: aiohttp.ClientResponse) -> bool:
    """Nothing but heartbeats arrives on an open stream within a short look."""
    try:
        async with asyncio.timeout(0.2):
            line = await r.content.readline()
            while line == b"\n" or line.startswith((b":", b"retry:")):
                line = await r.content.readline()
            return False
    except TimeoutError:
        return True


def assert_positions_increase(events: list[SseEvent], partitions: int, *, every: bool) -> None:
    """Firehose ids: one stream id per partition, never going back. Without a filter each event
    advances exactly one of them; with one, the events filtered out advance them silently."""
    prev: list[tuple[int, int]] | None = None
    for e in events:
        parts = [event_key(x.encode()) for x in str(e.id).split(",")]
        assert len(parts) == partitions
        if prev is not None:
            assert all(a >= b for a, b in zip(parts, prev, strict=True)), (prev, parts)
            moved = [i for i in range(partitions) if parts[i] != prev[i]]
            assert len(moved) == 1 if every else len(moved) >= 1, (prev, parts)
        prev = parts


async def test_firehose_resume_past_the_retained_events_gets_a_snapshot_not_a_gap(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str
) -> None:
    """The firehose keeps ~jobs.firehose_maxlen entries (XADD MAXLEN ~). A client whose
    position is older than what is left must be told (a `snapshot` event), not be handed what
    remains as if nothing were missing. (Trimming does not move XINFO's max-deleted-entry-id;
    only XDEL does.)"""
    client, app = await start_app(
        aiohttp_client, redis_url, prefix, TIDINGS_JOBS_FIREHOSE_MAXLEN="100"
    )
    d = Driver(app[PRODUCER])  # the app's limits: firehose_maxlen = 100
    (jid,) = await d.submit(1)
    for i in range(1, 401, 50):
        await d.apply(*[("p", jid, k) for k in range(i, i + 50)])
    stored = await d.stored(jid)  # the job's own list keeps all 402
    assert len(stored) == 402
    first_left = (await app[PRODUCER].redis.xrange(d.keys.fire(0), count=1))[0][0].decode()
    assert event_key(first_left.encode()) > event_key(stored[1][0].encode()), "not trimmed"
    async with client.get("/api/events", headers={"Last-Event-ID": stored[0][0]}) as r:
        assert r.status == 200
        got = await read_sse(r, until=at_least(1))
    if got[0].event != "snapshot":  # or else every event after the position, from the first
        assert got[0].id == stored[1][0], f"silent gap: resumed at {got[0].id}"
    assert json.loads(got[0].data)["type"] == "snapshot"


@pytest.mark.parametrize("bad", ["garbage", "1-1,2-2,3-3,4", "-1", "x" * 300])
async def test_firehose_malformed_last_event_id_gets_snapshot_then_live(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str, producer: Producer, bad: str
) -> None:
    client, app = await start_app(aiohttp_client, redis_url, prefix)
    d = Driver(producer)
    async with client.get("/api/events", headers={"Last-Event-ID": bad}) as r:
        assert r.status == 200
        await watcher_count(app, 1)
        (jid,) = await d.submit(1)
        got = await read_sse(r, until=lambda ev: len(ev) >= 3)
    assert got[0].event == "snapshot"
    assert json.loads(got[0].data)["type"] == "snapshot"
    assert [e.event for e in got[1:]] == ["queued", "started"]
    assert [json.loads(e.data)["job"] for e in got[1:]] == [jid, jid]


# -- limits and lifecycle --------------------------------------------------------------------


async def test_connection_cap_answers_503_with_retry_after(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str, producer: Producer
) -> None:
    client, app = await start_app(
        aiohttp_client, redis_url, prefix, TIDINGS_SSE_MAX_CONNECTIONS="2"
    )
    d = Driver(producer)
    (jid,) = await d.submit(1)
    async with client.get("/api/events") as one, client.get(f"/api/jobs/{jid}/events") as two:
        assert one.status == two.status == 200
        await watcher_count(app, 2)
        for path in ["/api/events", f"/api/jobs/{jid}/events"]:
            async with client.get(path) as r:
                assert r.status == 503
                assert int(r.headers["Retry-After"]) > 0
                assert r.headers["Content-Type"].startswith("application/json")
                body = await r.json()
                assert body["error"]["code"] == "unavailable" and body["error"]["message"]
    # both closed: room again
    await watcher_count(app, 0)
    async with client.get("/api/events") as r:
        assert r.status == 200


async def test_connection_cap_holds_under_a_burst(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str
) -> None:
    """Ten streams asked for at the same moment with a cap of 2: two are served."""
    client, _ = await start_app(aiohttp_client, redis_url, prefix, TIDINGS_SSE_MAX_CONNECTIONS="2")
    port = client.server.port
    assert port is not None
    streams = await asyncio.gather(*(RawSse.open(port, "/api/events") for _ in range(10)))
    try:
        for s in streams:
            await s.read_until(lambda s: s.status is not None)
        statuses = sorted(s.status or 0 for s in streams)
        assert statuses == [200] * 2 + [503] * 8, statuses
    finally:
        for s in streams:
            s.close()


async def test_max_age_ends_streams_cleanly_and_resume_has_no_gap(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str, producer: Producer
) -> None:
    """With sse.max_age_s = 1 a stream ends cleanly (zero-size chunk) after 0.8-1 s; a client
    that reconnects with Last-Event-ID each time, while events keep coming, misses nothing."""
    client, _ = await start_app(aiohttp_client, redis_url, prefix, TIDINGS_SSE_MAX_AGE_S="1")
    port = client.server.port
    assert port is not None
    d = Driver(producer)
    (jid,) = await d.submit(1)
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            await d.apply(("p", jid, i))
            await asyncio.sleep(0.01)  # pacing the producer, not waiting for anything
        await d.apply(("f", jid))

    got: list[SseEvent] = []
    lifetimes: list[float] = []
    w = asyncio.create_task(writer())
    try:
        while not got or got[-1].event != "succeeded":
            headers = {"Last-Event-ID": str(got[-1].id)} if got else {}
            s = await RawSse.open(port, f"/api/jobs/{jid}/events", headers)
            try:
                await s.read_to_end(timeout=5)
                await s.recv(0.05)  # nothing may follow the end of the response
            finally:
                s.close()
            assert s.status == 200 and s.clean and not s.reset, s.body[-200:]
            assert s.trailing == b"", s.trailing[:200]
            assert s.ended_at is not None
            lifetimes.append(s.ended_at - s.opened)
            got += s.events
            if len(lifetimes) == 3:
                stop.set()
    finally:
        stop.set()
        await w
    assert len(lifetimes) >= 3
    assert all(0.7 <= t <= 1.8 for t in lifetimes[:3]), lifetimes
    assert_exact(got, await d.stored(jid))


async def test_max_age_with_a_lagging_client_writes_nothing_after_the_end(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str, producer: Producer
) -> None:
    """The max age passes while the client is behind (its data still queued in the server): the
    end of the response must be the last thing on the connection, not followed by live events
    written straight to the socket while the handler waits for the queued data to drain."""
    client, _ = await start_app(
        aiohttp_client,
        redis_url,
        prefix,
        TIDINGS_SSE_MAX_AGE_S="1",
        TIDINGS_SSE_MAX_BUFFER_BYTES=str(256 << 20),
        TIDINGS_SSE_WRITE_TIMEOUT_S="60",
    )
    port = client.server.port
    assert port is not None
    d = Driver(producer)
    (jid,) = await d.submit(1)
    big = "x" * 64_000  # past the kernel socket buffers (4 MB here) well before the max age
    s = await RawSse.open(port, f"/api/jobs/{jid}/events", rcvbuf=4096)
    try:
        await s.read_until(lambda s: len(s.events) >= 2)  # then stop reading
        written = 0

        async def aged() -> bool:
            nonlocal written
            await d.apply(*[("l", jid, big) for _ in range(4)])
            written += 4
            return time.monotonic() - s.opened > 1.3

        await eventually(aged, timeout=5, what="the max age to pass while writing")
        await d.apply(("l", jid, "after"))
        await s.read_to_end(timeout=10)
        await s.recv(0.2)
    finally:
        s.close()
    assert s.clean, s.body[-200:]
    assert s.trailing == b"", f"{len(s.trailing)} bytes after the end: {s.trailing[:120]!r}"
    first = s.events
    await d.apply(("f", jid))
    async with client.get(
        f"/api/jobs/{jid}/events", headers={"Last-Event-ID": str(first[-1].id)}
    ) as r:
        rest = await read_sse(r)
    assert_exact(first + rest, await d.stored(jid))


async def test_idle_stream_gets_heartbeats(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str, producer: Producer
) -> None:
    client, _ = await start_app(aiohttp_client, redis_url, prefix, TIDINGS_SSE_HEARTBEAT_S="1")
    port = client.server.port
    assert port is not None
    (jid,) = await Driver(producer).submit(1)
    s = await RawSse.open(port, f"/api/jobs/{jid}/events")
    try:
        await s.read_until(lambda s: len(s.hb_times) >= 2, timeout=5)
    finally:
        s.close()
    # a comment line with no blank line after it: clients never see an empty message
    # (httpx-sse yields one per blank line once an id was seen)
    assert b"retry: " in s.body and b"\n: hb\n" in s.body and b": hb\n\n" not in s.body
    assert s.hb_times[1] - s.hb_times[0] < 2.0


async def test_heartbeats_are_staggered(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str
) -> None:
    """With heartbeat_s = 2 the watchers are spread over two slots, visited in turn: not every
    idle watcher is written to at the same instant, yet none is left silent for more than
    heartbeat_s (SPEC: "a comment heartbeat at least every sse.heartbeat_s")."""
    client, _ = await start_app(aiohttp_client, redis_url, prefix, TIDINGS_SSE_HEARTBEAT_S="2")
    port = client.server.port
    assert port is not None
    streams = [await RawSse.open(port, "/api/events") for _ in range(16)]
    try:
        await asyncio.gather(*(s.read_until(lambda s: len(s.hb_times) >= 2) for s in streams))
    finally:
        for s in streams:
            s.close()
    firsts = sorted(s.hb_times[0] for s in streams)
    assert firsts[-1] - firsts[0] > 0.3, "all heartbeats in one instant"
    for s in streams:
        assert s.head_at is not None
        marks = [s.head_at, *s.hb_times]
        silence = max(b - a for a, b in itertools.pairwise(marks))
        assert silence < 2.0 + 0.35, f"silent for {silence:.2f} s with heartbeat_s = 2"


# -- with real processes ---------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("limit", ["buffer", "write-timeout"])
async def test_slow_client_is_cut_off_and_resumes_without_loss(
    redis_url: str, stack_factory: Callable[..., Stack], limit: str
) -> None:
    """A client that stops reading is disconnected (the server's buffer for it stays bounded);
    it then resumes from its last complete event and misses nothing."""
    env = (
        {"TIDINGS_SSE_MAX_BUFFER_BYTES": "65536", "TIDINGS_SSE_WRITE_TIMEOUT_S": "60"}
        if limit == "buffer"
        else {"TIDINGS_SSE_MAX_BUFFER_BYTES": str(64 << 20), "TIDINGS_SSE_WRITE_TIMEOUT_S": "1"}
    )
    st = stack_factory(redis_url)
    await st.start_service(TIDINGS_SSE_HEARTBEAT_S="2", **env)
    d = Driver(await st.producer())
    (jid,) = await d.submit(1)
    big = "x" * 16_000
    async with aiohttp.ClientSession() as http:
        s = await RawSse.open(st.port, f"/api/jobs/{jid}/events", rcvbuf=4096)
        try:
            await s.read_until(lambda s: len(s.events) >= 2)  # queued, started: then stop
            assert await metric(http, st.http, "tidings_sse_watchers") == 1
            written = 0
            deadline = time.monotonic() + 20
            while await metric(http, st.http, "tidings_sse_watchers") == 1:
                assert time.monotonic() < deadline, "slow client was never cut off"
                if written < 600:  # well past any socket buffer, well under jobs.max_events
                    await d.apply(*[("l", jid, big) for _ in range(20)])
                    written += 20
                else:
                    await asyncio.sleep(0.05)
            if limit == "write-timeout":
                assert await metric(http, st.http, "tidings_sse_cuts_total") == 1
            # what is still in flight can be read; the stream was cut, not ended cleanly
            await s.read_to_end(timeout=10)
        finally:
            s.close()
        assert not s.clean
        first = s.events
        assert first[-1].event == "log" and len(first) < 2 + written
        await d.apply(("l", jid, "after"), ("f", jid))
        async with http.get(
            f"{st.http}/api/jobs/{jid}/events", headers={"Last-Event-ID": str(first[-1].id)}
        ) as r:
            assert r.status == 200
            rest = await read_sse(r, timeout=20)
        async with http.get(
            f"{st.http}/api/jobs/{jid}/events", headers={"Accept": "application/json"}
        ) as r:
            stored = [(e["id"], e["event"]) for e in await r.json()]
    assert len(stored) == 2 + written + 2
    assert_exact(first + rest, stored)


@pytest.mark.e2e
async def test_sigterm_ends_every_stream_cleanly(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(redis_url)
    await st.start_service()
    d = Driver(await st.producer())
    jobs = await d.submit(4)
    paths = [f"/api/jobs/{j}/events" for j in jobs] + ["/api/events", "/api/events?queue=sse"]
    streams = [await RawSse.open(st.port, p) for p in paths]
    try:
        async with aiohttp.ClientSession() as http:

            async def all_watching() -> bool:
                return await metric(http, st.http, "tidings_sse_watchers") == len(streams)

            await eventually(all_watching, what="streams registered")
        for s in streams:
            await s.read_until(lambda s: b"retry: " in s.body)
        assert st.service is not None
        t0 = time.monotonic()
        st.service.send_signal(signal.SIGTERM)
        await asyncio.gather(*(s.read_to_end(timeout=5) for s in streams))
    finally:
        for s in streams:
            s.close()
    for s in streams:
        assert s.clean and not s.reset, s.body[-200:]
        assert s.ended_at is not None and s.ended_at - t0 < 2.0, s.ended_at
    assert st.service.wait(10) == 0


@pytest.mark.e2e
async def test_progress_is_coalesced_never_reordered_last_value_kept(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    calls = 100_000
    st = stack_factory(redis_url)
    await st.start_workers(1)
    p = await st.producer()
    job = await p.submit("t.spam", {"calls": calls})
    finished = await p.wait(job.id, timeout=30)
    assert finished.state == "succeeded", finished
    events = await public_events(p, job.id)
    progress = [json.loads(e.data) for e in events if e.type == "progress"]
    currents = [x["current"] for x in progress]
    assert 1 <= len(progress) <= calls // 100, len(progress)
    assert currents[-1] == calls
    assert all(a < b for a, b in itertools.pairwise(currents)), currents
    assert all(x["total"] == calls for x in progress)
    assert [e.type for e in events][-1] == "succeeded"
    assert finished.progress.current == calls
