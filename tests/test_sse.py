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
import itertools
import json
import random
import re
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from service import contract
from service.app import create_app
from service.producer import Producer, SubmitRequest
from service.sse import event_key
from service.state import HUB, PRODUCER, WATCHERS
from tests.conftest import make_config
from tests.helpers import SseEvent, Stack, eventually, read_sse

Client = TestClient[web.Request, web.Application]


# -- writing events as a worker does ---------------------------------------------------------


class Driver:
    """Starts jobs and writes their events through the script's `start` and `apply` ops."""

    def __init__(self, p: Producer) -> None:
        self.p = p
        self.r: Any = p.redis
        self.keys = p.keys
        self.limits = p.limits
        self.runs: dict[str, int] = {}

    async def submit(self, n: int, *, task: str = "t.noop", queue: str = "sse") -> list[str]:
        """n queued jobs on a queue no worker serves, started by us: running, ours to write."""
        jobs = await self.p.submit_many(
            [SubmitRequest(task=task, payload={}, queue=queue) for _ in range(n)]
        )
        ids = [j.id for j in jobs]
        await self.start(*ids)
        return ids

    async def start(self, *job_ids: str) -> None:
        for jid in job_ids:
            queue, entry = await self.r.hmget(self.keys.job(jid), ["queue", "entry"])
            args = contract.script_args(
                self.keys,
                self.limits,
                self.keys.partition(jid),
                "start",
                "test-driver",
                1,
                jid,
                queue,
                entry,
            )
            (row,) = await contract.call(self.r, args)
            assert row[1] == b"run", row
            self.runs[jid] = int(row[2])

    async def apply(self, *ops: tuple[Any, ...]) -> None:
        """Ops in order, one script call per partition: ("p", job, current) for progress,
        ("l", job, message) for a log line, ("f", job) for success."""
        by_part: dict[int, list[list[Any]]] = {}
        for op in ops:
            kind, jid = op[0], op[1]
            run = self.runs[jid]
            if kind == "p":
                cur = op[2]
                flat = ["p", jid, run, str(cur), "", "", b',"current":%d' % cur]
            elif kind == "l":
                flat = ["l", jid, run, b',"message":' + json.dumps(op[2]).encode()]
            else:
                flat = ["f", jid, run, "succeeded", b"null", 0]
            by_part.setdefault(self.keys.partition(jid), []).append(flat)
        for k, items in by_part.items():
            args = contract.script_args(
                self.keys, self.limits, k, "apply", len(items), *[x for i in items for x in i]
            )
            res = await contract.call(self.r, args)
            assert b"fenced" not in res, res

    async def stored(self, job_id: str) -> list[tuple[str, str]]:
        return [(e.id, e.type) for e in await self.p.events(job_id)]


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
    app = create_app(cfg, redis_url)
    client = await aiohttp_client(app)
    return client, app


async def watcher_count(app: web.Application, n: int) -> None:
    async def check() -> bool:
        return len(app[WATCHERS].watchers) == n

    await eventually(check, what=f"{n} watchers registered")


async def metric(s: aiohttp.ClientSession, base: str, name: str) -> int:
    async with s.get(base + "/metrics") as r:
        text = await r.text()
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    assert m, text
    return int(m.group(1))


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
    svc = app[PRODUCER]
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

    results = await asyncio.gather(writer(), *(watch(*p) for p in plans))
    for jid, last, got in results[1:]:
        stored = await d.stored(jid)
        start = 0 if last is None else [i for i, _ in stored].index(last) + 1
        assert_exact(got, stored[start:], f"{jid} from {last}")
    assert hub_idle(app)


def hub_idle(app: web.Application) -> bool:
    return app[HUB].subscribers == 0 and not app[WATCHERS].watchers


# -- the firehose ----------------------------------------------------------------------------


@pytest.mark.parametrize("partitions", [1, 4])
async def test_firehose_filters_and_exact_resume(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str, partitions: int
) -> None:
    client, app = await start_app(
        aiohttp_client, redis_url, prefix, TIDINGS_REDIS_PARTITIONS=str(partitions)
    )
    p = app[PRODUCER]  # the app's own producer: the same keys and partitions
    d = Driver(p)

    async def job_round(ids: list[str], n: int) -> None:
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
        await job_round(a + b, 4)
        got_all = await read_sse(everything, until=done(6))
        got_qa = await read_sse(qa, until=done(3))
        got_steps = await read_sse(steps, until=done(3))

    stored = {j: await d.stored(j) for j in a + b}

    def per_job(events: list[SseEvent]) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        for e in events:
            data = json.loads(e.data)
            out.setdefault(data["job"], []).append((data["ts"], e.event))
        return out

    def stored_per_job(ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        return {j: [(json.loads(x.data)["ts"], x.type) for x in evs[j]] for j in ids}

    evs = {j: await p.events(j) for j in a + b}
    assert len(got_all) == sum(len(v) for v in stored.values()) == 6 * 7
    assert per_job(got_all) == stored_per_job(a + b)
    assert per_job(got_qa) == stored_per_job(a)
    assert per_job(got_steps) == stored_per_job(b)
    assert_positions_increase(got_all, partitions)
    # every event of a job, in the firehose, carries that job's own event data
    firehose_data = sorted(e.data for e in got_all)
    assert firehose_data == sorted(x.data.decode() for v in evs.values() for x in v)

    # resume from the middle, after more was written while away: exactly what came after
    c = await d.submit(2, task="t.noop", queue="qa")
    await job_round(c, 2)
    extra = [e for j in c for e in await p.events(j)]
    for path, got, cut, more in [
        ("/api/events", got_all, 17, extra),
        ("/api/events?queue=qa", got_qa, 5, extra),
        ("/api/events?task=t.steps", got_steps, 9, []),
        (f"/api/events?last_event_id={got_all[-2].id}", got_all, len(got_all) - 2, extra),
    ]:
        headers = {} if "last_event_id" in path else {"Last-Event-ID": str(got[cut].id)}
        want = len(got) - cut - 1 + len(more)
        async with client.get(path, headers=headers) as r:
            assert r.status == 200
            again = await read_sse(r, until=lambda ev, n=want: len(ev) >= n)  # type: ignore[misc]
            assert await no_more(r), path
        # the missed part of the first stream, identically, then the new jobs' events
        assert again[: len(got) - cut - 1] == got[cut + 1 :], path
        assert per_job(again[len(got) - cut - 1 :]) == {
            j: [
                (json.loads(x.data)["ts"], x.type)
                for x in more
                if x.data.startswith(b'{"job":"' + j.encode())
            ]
            for j in c
            if more
        }, path
        assert_positions_increase(got[: cut + 1] + again, partitions)


async def no_more(r: aiohttp.ClientResponse) -> bool:
    """Nothing else arrives on an open stream (within a short look)."""
    try:
        async with asyncio.timeout(0.2):
            line = await r.content.readline()
            while line in (b"\n",) or line.startswith(b":"):
                line = await r.content.readline()
            return False
    except TimeoutError:
        return True


def assert_positions_increase(events: list[SseEvent], partitions: int) -> None:
    """Firehose ids: one stream id per partition; each event advances exactly one of them."""
    prev: list[tuple[int, int]] | None = None
    for e in events:
        parts = [event_key(x.encode()) for x in str(e.id).split(",")]
        assert len(parts) == partitions
        if prev is not None:
            moved = [i for i in range(partitions) if parts[i] != prev[i]]
            assert len(moved) == 1 and parts[moved[0]] > prev[moved[0]], (prev, parts)
        prev = parts


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
    assert all(0.7 <= t <= 1.5 for t in lifetimes[:3]), lifetimes
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
    big = "x" * 16_000
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
    assert b"retry: " in s.body and b"\n: hb\n\n" in s.body
    assert s.hb_times[1] - s.hb_times[0] < 2.0


async def test_heartbeats_are_staggered(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str
) -> None:
    """With heartbeat_s = 2 the watchers are spread over two one-second slots: not every idle
    watcher is written to at the same instant, yet each hears from the server every ~2 s."""
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
    assert firsts[-1] - firsts[0] > 0.5, "all heartbeats in one instant"
    for s in streams:
        assert s.hb_times[1] - s.hb_times[0] < 3.0


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
                assert await metric(http, st.http, "tidings_sse_cut_total") == 1
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
        assert s.ended_at is not None and s.ended_at - t0 < 2.0, s.ended_at - t0
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
    events = await p.events(job.id)
    progress = [json.loads(e.data) for e in events if e.type == "progress"]
    currents = [x["current"] for x in progress]
    assert 1 <= len(progress) <= calls // 100, len(progress)
    assert currents[-1] == calls
    assert all(a < b for a, b in itertools.pairwise(currents)), currents
    assert all(x["total"] == calls for x in progress)
    assert [e.type for e in events][-1] == "succeeded"
    assert finished.progress.current == calls
