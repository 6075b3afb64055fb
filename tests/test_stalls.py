"""The promises at the edges, tried against real processes: a service process frozen past the
firehose trim, a worker frozen between fetching an entry and starting it, Redis frozen past the
socket timeout under load, Redis out of memory or busy, Redis restarted without its data, a
flood of queue names, and a worker loop that dies anyway.

Each test reproduces a fault that once broke a promise (issue 14), and checks what a user sees:
every event or an honest `snapshot`, streams that end, `Producer.wait` that returns, jobs that are
neither lost nor wrongly failed, and HTTP answers that are 201 or 503, never 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from service.core.embedded import ServerProcess
from service.core.states import TERMINAL
from service.core.wire import StoredEvent
from service.producer import Producer
from tests import servers
from tests.conftest import DEFAULT_KIND
from tests.follower import MARK
from tests.helpers import ROOT, Stack, base_env, eventually, read_sse, worker_children

pytestmark = pytest.mark.e2e
FAST = {
    "TIDINGS_JOBS_LEASE_S": "2",
    "TIDINGS_JOBS_BACKOFF_BASE_S": "0.05",
    "TIDINGS_WORKERS_POLL_S": "0.1",
}


@contextlib.contextmanager
def frozen(*pids: int) -> Iterator[None]:
    """SIGSTOP the processes for the block (a GC pause, a starved CPU, a paused VM)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def one_terminal(events: list[StoredEvent]) -> None:
    types = [e.type for e in events]
    assert sum(t in TERMINAL for t in types) == 1 and types[-1] in TERMINAL, types


async def fire_head_n(p: Producer) -> int:
    """The event counter of the partition's newest firehose entry."""
    rows = await p.redis.xrevrange(p.keys.fire(0), count=1)
    return int(rows[0][1][b"n"]) if rows else 0


async def fire_first_n(p: Producer) -> int:
    rows = await p.redis.xrange(p.keys.fire(0), count=1)
    return int(rows[0][1][b"n"]) if rows else 0


def follower_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(x[len(MARK) :]) for x in lines if x.startswith(MARK)]


def start_follower(st: Stack, job_id: str, out: Path) -> subprocess.Popen[bytes]:
    """`Producer.watch` + `Producer.wait` on `job_id`, in a process of their own."""
    with open(out, "wb") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.follower", st.url, st.prefix, job_id, "90"],
            env=base_env(st.url, st.prefix),
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def drained(p: Producer, queue: str = "default") -> bool:
    q = (await p.queues()).get(queue)
    return q is not None and q.queued + q.running + q.scheduled == 0


# -- 1. a service process (and a producer) frozen past the firehose trim ------------------------


async def test_hub_frozen_past_the_firehose_trim_resyncs_every_watcher(
    redis_url: str, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    """The hub of a frozen process wakes with its cursor trimmed out of the firehose. A per-job
    watcher connected throughout must still get every event of its job (the terminal one fell
    in the trimmed part) and end; `Producer.watch` and `Producer.wait` in a process frozen the
    same way must end too; a firehose watcher must be told with a `snapshot` (reason "gap")."""
    st = stack_factory(redis_url, TIDINGS_JOBS_FIREHOSE_MAXLEN="100", **FAST)
    await st.start_service()
    await st.start_workers(1)
    p = await st.producer()
    # long enough to go on writing after the flood, so its events straddle the trimmed part
    job = await p.submit("t.steps", {"n": 40, "delay": 0.15})
    out = tmp_path / "follower.jsonl"
    follower = start_follower(st, job.id, out)
    assert st.service is not None
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as s,
            s.get(f"{st.http}/api/jobs/{job.id}/events") as per_job,
            s.get(f"{st.http}/api/events") as fire,
        ):
            assert per_job.status == 200 and fire.status == 200
            before = await read_sse(per_job, until=lambda ev: ev[-1].event == "progress")
            await read_sse(fire, until=lambda ev: len(ev) >= 1)
            await eventually(
                lambda: asyncio.sleep(0, len(follower_lines(out)) >= 3), what="follower watching"
            )
            # and a job that will run entirely while the service is frozen: its terminal
            # event falls in the trimmed part, never read by the hub
            short = await p.submit("t.steps", {"n": 3, "delay": 0.01}, delay_s=2.0)
            per_short = await s.get(f"{st.http}/api/jobs/{short.id}/events")
            short_before = await read_sse(per_short, until=lambda ev: len(ev) >= 1)
            head = await fire_head_n(p)
            assert (await p.get(short.id)).state == "scheduled", "the machine is too slow"
            with frozen(st.service.pid, follower.pid):
                assert (await p.wait(short.id, timeout=20)).state == "succeeded"
                await p.submit_many([("t.noop", {}) for _ in range(600)])
                await eventually(lambda: drained(p), timeout=60, what="noops done")
                assert (await p.get(job.id)).state == "succeeded"
                # the hubs' cursors (at most `head`) are no longer in the stream
                assert await fire_first_n(p) > head + 1, "firehose not trimmed past the cursor"
            after = await read_sse(per_job, timeout=30)  # to the end of the stream
            stored = await p.events(job.id)
            got = before + after
            assert [e.event for e in got] == [e.type for e in stored]
            assert [e.id for e in got] == [e.id.decode() for e in stored], "gap or duplicate"
            short_after = await read_sse(per_short, timeout=30)
            per_short.close()
            stored_short = await p.events(short.id)
            last = stored_short[-1].id  # its terminal event: trimmed before anyone read it
            assert not await p.redis.xrange(p.keys.fire(0), min=last, max=last)
            assert [e.id for e in short_before + short_after] == [
                e.id.decode() for e in stored_short
            ], "the job that finished inside the gap"
            # the firehose client is told it missed events, then gets live ones
            late = await p.submit("t.noop", {})
            seen = await read_sse(
                fire,
                until=lambda ev: any(late.id in e.data and e.event == "succeeded" for e in ev),
                timeout=30,
            )
            snaps = [e for e in seen if e.event == "snapshot"]
            assert snaps and json.loads(snaps[0].data).get("reason") == "gap", [
                e.event for e in seen[:5]
            ]
        rc = await asyncio.get_running_loop().run_in_executor(None, follower.wait, 60)
        lines = follower_lines(out)
        assert rc == 0, lines[-3:]
        assert lines[-1] == {"wait": "succeeded"}
        assert [x["id"] for x in lines[:-1]] == [e.id.decode() for e in stored], "watch gap"
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


# -- 2. a worker frozen between fetching an entry and starting it --------------------------------


async def pending_consumer(p: Producer, entry_of_job: str) -> str | None:
    """The consumer that holds the job's queue entry, if one was delivered."""
    stream = p.keys.queue(0, "default")
    entry = await p.redis.hget(p.keys.job(entry_of_job), "e")
    if not entry:
        return None
    rows = await p.redis.xpending_range(stream, "tidings", entry, entry, 1)
    return rows[0]["consumer"].decode() if rows else None


async def test_worker_frozen_between_fetch_and_start_is_fenced_not_the_healthy_run(
    redis_url: str, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    """Worker A is frozen right after XREADGROUP handed it an entry (the reply is in its socket,
    unread). The lease runs out, worker B takes the entry over and runs the job. When A wakes,
    its stale `start` must change nothing: the job runs once, as attempt 1, and succeeds (with
    max_attempts=1 a wrong takeover would dead-letter it)."""
    # a socket timeout far past the freeze: A's read completes when it wakes, as in the field
    st = stack_factory(
        redis_url,
        TIDINGS_JOBS_LEASE_S="1",
        TIDINGS_WORKERS_POLL_S="0.1",
        TIDINGS_REDIS_SOCKET_TIMEOUT_S="60",
    )
    a = await st.start_workers(1)
    (a_pid,) = await children(a, 1)
    p = await st.producer()
    marker = tmp_path / "m"
    job = None
    for _ in range(20):  # A must be inside its blocking read when it is frozen
        os.kill(a_pid, signal.SIGSTOP)
        job = await p.submit("t.marked", {"marker": str(marker), "seconds": 2.0}, max_attempts=1)

        async def delivered(job_id: str = job.id) -> str | None:
            return await pending_consumer(p, job_id)

        try:
            holder = await eventually(delivered, timeout=1.0, what="entry delivered to A")
            assert f":{a_pid}:" in holder
            break
        except AssertionError:
            os.kill(a_pid, signal.SIGCONT)  # not blocked at that moment: let it run, try again
            await p.wait(job.id, timeout=20)
            job = None
    assert job is not None, "A was never caught inside XREADGROUP"
    runs_before = len(marker_lines(marker))
    try:
        b = await st.start_workers(1, wait=False)
        (b_pid,) = await children(b, 1)
        await eventually(
            lambda: asyncio.sleep(0, len(marker_lines(marker)) > runs_before),
            timeout=20,
            what="B took the entry over and started the job",
        )
    finally:
        os.kill(a_pid, signal.SIGCONT)
    done = await p.wait(job.id, timeout=30)
    assert done.state == "succeeded" and done.attempt == 1, (done.state, done.error)
    events = await p.events(job.id)
    assert [e.type for e in events] == ["queued", "started", "succeeded"]
    runs = [line for line in marker_lines(marker) if line[0] == job.id]
    assert [(r[1], int(r[2])) for r in runs] == [("1", b_pid)]
    # A woke, read its stale entry, was refused, and is still the same healthy process
    another = await p.submit("t.noop", {})
    assert (await p.wait(another.id, timeout=20)).state == "succeeded"
    assert a.poll() is None and worker_children(a) == [a_pid]


async def children(sup: subprocess.Popen[bytes], n: int) -> list[int]:
    """The pids of a `python -m workers` supervisor's n worker processes, once all started."""

    async def started() -> list[int] | None:
        kids = worker_children(sup)
        return kids if len(kids) == n else None

    return await eventually(started, timeout=20, what=f"{n} worker processes")


def marker_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


# -- 2b. Redis frozen past the socket timeout, under load ---------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of this test's own (it gets frozen, filled or restarted)."""
    server = servers.start(DEFAULT_KIND, tmp_path / "own-redis")
    yield server
    server.kill()  # SIGKILL also ends a stopped process


def progress_twice(events: list[StoredEvent]) -> list[tuple[object, ...]]:
    """Progress events written twice (a re-sent write applied again)."""
    seen: set[tuple[object, ...]] = set()
    dups: list[tuple[object, ...]] = []
    for e in events:
        if e.type == "progress":
            d = e.decode()
            key = (d.attempt, getattr(d, "current", None))
            if key in seen:
                dups.append(key)
            seen.add(key)
    return dups


async def test_redis_frozen_past_the_socket_timeout_under_load(
    own_redis: ServerProcess, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    """Redis stops answering for longer than the clients' socket timeout (3 s) while 64 jobs
    run and clients submit, cancel and retry. Calls that timed out may still run when Redis
    wakes, and may be sent again: no healthy job may fail or run twice (the lease is longer
    than the freeze), no progress event may be written twice, a fresh submit answers 201 or 503
    (never 200: it is not someone else's job; never 500), and cancel/retry answer 200 or 503
    and mean it."""
    st = stack_factory(
        own_redis.url,
        TIDINGS_REDIS_SOCKET_TIMEOUT_S="3",
        TIDINGS_JOBS_LEASE_S="15",
        TIDINGS_JOBS_BACKOFF_BASE_S="0.05",
        TIDINGS_WORKERS_POLL_S="0.1",
    )
    await st.start_service()
    sup = await st.start_workers(2)
    kids = await children(sup, 2)
    p = await st.producer()
    scheduled = [await p.submit("t.noop", {}, delay_s=300) for _ in range(2)]
    doomed = [await p.submit("t.fail", {}, max_attempts=1) for _ in range(2)]
    for j in doomed:
        assert (await p.wait(j.id, timeout=20)).state == "failed"
    load = await p.submit_many([("t.steps", {"n": 10, "delay": 0.05}) for _ in range(400)])

    async def busy() -> bool:
        return (await p.queues())["default"].running >= 32

    await eventually(busy, timeout=20, what="jobs running")
    statuses: list[int] = []
    accepted: list[str] = []
    resumed_at: list[int] = []  # how many answers there were when Redis woke
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=60)

    async with aiohttp.ClientSession(timeout=timeout) as s:

        async def submitter() -> None:
            body = {"task": "t.steps", "payload": {"n": 3, "delay": 0.02}}
            while not stop.is_set():
                async with s.post(st.http + "/api/jobs", json=body) as r:
                    statuses.append(r.status)
                    if r.status == 201:
                        accepted.append((await r.json())["id"])
                    elif r.status == 503:
                        assert r.headers.get("Retry-After"), "503 without Retry-After"

        async def control(what: str, job_id: str) -> int:
            async with s.post(f"{st.http}/api/jobs/{job_id}/{what}") as r:
                return r.status

        submitters = [asyncio.create_task(submitter()) for _ in range(4)]
        try:
            await eventually(lambda: asyncio.sleep(0, len(accepted) >= 20), what="submits flow")
            loop = asyncio.get_running_loop()
            assert own_redis.proc is not None
            os.kill(own_redis.proc.pid, signal.SIGSTOP)
            t0 = loop.time()
            try:
                during = [
                    asyncio.create_task(control("cancel", scheduled[0].id)),
                    asyncio.create_task(control("retry", doomed[0].id)),
                ]

                async def felt() -> bool:
                    logs = "".join(st.log(f"workers-{i}") for i in range(len(st.workers)))
                    return 503 in statuses and "Timeout reading" in logs

                await eventually(felt, timeout=20, what="the freeze felt by service and workers")
                # past the socket timeout twice: calls sent again after a timeout also hang
                await asyncio.sleep(max(0.0, t0 + 7 - loop.time()))
            finally:
                assert own_redis.proc is not None
                os.kill(own_redis.proc.pid, signal.SIGCONT)
            resumed_at.append(len(statuses))
            cancel_during, retry_during = [await t for t in during]
            await eventually(
                lambda: asyncio.sleep(0, len(statuses) > resumed_at[0] + 40), what="submits again"
            )
        finally:
            stop.set()
            await asyncio.gather(*submitters)
        cancel_after = await control("cancel", scheduled[1].id)
        retry_after = await control("retry", doomed[1].id)

    assert set(statuses) <= {201, 503}, sorted(set(statuses))
    assert 503 in statuses
    assert cancel_during in (200, 503) and retry_during in (200, 503)
    assert cancel_after == 200 and retry_after == 200
    if cancel_during == 200:
        assert (await p.get(scheduled[0].id)).state == "cancelled"
    assert (await p.get(scheduled[1].id)).state == "cancelled"
    ids = [j.id for j in load] + accepted
    for jid in ids:
        done = await p.wait(jid, timeout=60)
        assert done.state == "succeeded" and done.attempt == 1, (jid, done.state, done.error)
    for jid in ids:
        events = await p.events(jid)
        one_terminal(events)
        assert "retrying" not in [e.type for e in events], jid
        assert not progress_twice(events), (jid, progress_twice(events))
    # every job Redis holds gets done, also those whose submit answered 503 but landed
    await eventually(lambda: drained_but(p, 1), timeout=60, what="everything ran")
    assert worker_children(sup) == kids, "a worker process was restarted"


async def drained_but(p: Producer, scheduled: int) -> bool:
    q = (await p.queues())["default"]
    return q.queued + q.running == 0 and q.scheduled == scheduled


# -- 3. Redis out of memory, busy, read-only; a loop that dies anyway ------------------------------


def log_events(st: Stack, name: str) -> list[dict[str, object]]:
    """The JSON log lines of one of the stack's logs (children share their supervisor's)."""
    path = st.logdir / f"{name}.log"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


def logged_at(line: dict[str, object]) -> float:
    """A JSON log line's timestamp (ISO, UTC) as time.time()."""
    from datetime import datetime

    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


def worker_log_text(st: Stack) -> str:
    return "".join(
        (st.logdir / f"workers-{i}.log").read_text()
        for i in range(len(st.workers))
        if (st.logdir / f"workers-{i}.log").exists()
    )


async def test_out_of_memory_episode_503s_then_drains_with_every_worker_alive(
    own_redis: ServerProcess, stack_factory: Callable[..., Stack]
) -> None:
    """Submits fill Redis up to `maxmemory` (noeviction). The API answers 503 with Retry-After
    (never 500); workers that fetch entries they cannot start, and finish jobs they cannot
    write, wait it out; the lease thread keeps running jobs' leases (its script may run when
    full) and says so once, not with a traceback a second. Once memory is freed, every accepted
    job runs, once, on the same worker processes."""
    st = stack_factory(own_redis.url, **FAST)
    await st.start_service()
    sup = await st.start_workers(2)
    kids = await children(sup, 2)
    p = await st.producer()
    r = p.redis
    long = await p.submit_many([("t.steps", {"n": 30, "delay": 0.1}) for _ in range(10)])

    async def running(n: int) -> bool:
        return (await p.queues())["default"].running >= n

    await eventually(lambda: running(10), what="long jobs running")
    async with aiohttp.ClientSession() as s:

        async def post(path: str, body: object = None) -> tuple[int, dict[str, object]]:
            async with s.post(st.http + path, json=body) as resp:
                data = await resp.json()
                if resp.status == 503:
                    assert resp.headers.get("Retry-After"), data
                return resp.status, data

        # a backlog the workers will see only once memory is full (a paused queue)
        assert (await post("/api/queues/default/pause"))[0] == 200
        backlog = await p.submit_many([("t.steps", {"n": 3, "delay": 0.02}) for _ in range(100)])
        used = int((await r.info("memory"))["used_memory"])
        await r.config_set("maxmemory", used + 3 * 1024 * 1024)
        statuses: list[int] = []
        accepted: list[str] = []
        pad = "x" * 50_000
        while statuses[-5:] != [503] * 5:
            assert len(statuses) < 2000, "never filled up"
            status, data = await post("/api/jobs", {"task": "t.noop", "payload": {"pad": pad}})
            statuses.append(status)
            if status == 201:
                accepted.append(str(data["id"]))
            else:
                error = data["error"]
                assert isinstance(error, dict) and error["code"] == "unavailable", data
        assert set(statuses) == {201, 503} and len(accepted) >= 10, statuses
        # and it stays full (request buffers come and go at the edge; nothing here is evicted)
        used = int((await r.info("memory"))["used_memory"])
        await r.config_set("maxmemory", used // 2)
        full_from = time.time()
        # full: the workers now fetch what they cannot start
        assert (await post("/api/queues/default/resume"))[0] == 200
        t0 = time.monotonic()

        async def stuck() -> bool:
            text = worker_log_text(st)
            return '"what": "start"' in text and "maxmemory" in text

        await eventually(stuck, timeout=20, what="workers refused a start for lack of memory")
        # well past the lease: a fetched entry that cannot start is taken over, again and again
        await asyncio.sleep(max(0.0, t0 + 6 - time.monotonic()))
        status, _ = await post("/api/jobs", {"task": "t.noop", "payload": {}})
        assert status == 503
        full_until = time.time()
        await r.config_set("maxmemory", 0)
        ids = [j.id for j in long + backlog] + accepted
        for jid in ids:
            done = await p.wait(jid, timeout=60)
            assert done.state == "succeeded", (jid, done.state, done.error)
            events = await p.events(jid)
            one_terminal(events)
        # the long jobs kept their leases through it (renew may run when Redis is full)
        for j in long:
            assert (await p.get(j.id)).attempt == 1, j.id
        status, _ = await post("/api/jobs", {"task": "t.noop", "payload": {}})
        assert status == 201
    assert worker_children(sup) == kids, "a worker process died"

    def lease_lines() -> list[dict[str, object]]:
        lines = log_events(st, "workers-0")
        return [x for x in lines if str(x.get("event", "")).startswith("lease.")]

    async def every_episode_over() -> bool:
        # each episode ends with the renewal after memory came back (every 0.67 s): the jobs
        # can all be done before that one ran
        lease = lease_lines()
        ups = [x for x in lease if x["event"] == "lease.recovered"]
        return len(ups) >= len([x for x in lease if x["event"] == "lease.redis_unavailable"])

    await eventually(every_episode_over, timeout=10, what="every lease episode recovered")
    lease = lease_lines()
    assert not [x for x in lease if x["event"] == "lease.error"], lease
    # once per episode and process, not once a renewal: while Redis stayed full (over 6 s of
    # renewals every 0.67 s in each of the 2 processes) at most the first failure of each
    # process is logged, and nothing recovers
    down = [x for x in lease if x["event"] == "lease.redis_unavailable"]
    assert down and len(down) == len([x for x in lease if x["event"] == "lease.recovered"])
    held = [x for x in lease if full_from + 0.5 < logged_at(x) < full_until]
    assert len(held) <= 2 and all(x["event"] != "lease.recovered" for x in held), held
    assert "Traceback" not in worker_log_text(st)


async def test_busy_and_read_only_redis_503_then_drain(
    own_redis: ServerProcess, stack_factory: Callable[..., Stack]
) -> None:
    """Two more error replies that pass by themselves: BUSY (a slow script holds Redis for 4 s)
    and READONLY (the server turned into a replica, as after a failover). The API answers 503
    with Retry-After, never 500; no worker loop dies or logs a traceback; everything accepted
    runs once when they pass."""
    from service.core.embedded import free_port

    st = stack_factory(own_redis.url, **{**FAST, "TIDINGS_JOBS_LEASE_S": "15"})
    await st.start_service()
    sup = await st.start_workers(2)
    kids = await children(sup, 2)
    p = await st.producer()
    r = p.redis
    load = await p.submit_many([("t.steps", {"n": 10, "delay": 0.05}) for _ in range(200)])
    statuses: list[int] = []
    accepted: list[str] = []
    async with aiohttp.ClientSession() as s:

        async def submit_until(done: Callable[[], bool]) -> None:
            body = {"task": "t.steps", "payload": {"n": 2, "delay": 0.01}}
            while not done():
                async with s.post(st.http + "/api/jobs", json=body) as resp:
                    statuses.append(resp.status)
                    if resp.status == 201:
                        accepted.append((await resp.json())["id"])
                    elif resp.status == 503:
                        assert resp.headers.get("Retry-After")

        # BUSY: a read-only script spinning for 4 s
        await r.config_set("busy-reply-threshold", 100)
        slow = (
            "#!lua flags=no-writes\n"
            "local t = tonumber(redis.call('TIME')[1])\n"
            "while tonumber(redis.call('TIME')[1]) < t + 4 do end\n"
            "return 1"
        )
        spin = asyncio.create_task(
            asyncio.to_thread(
                lambda: __import__("redis").Redis.from_url(own_redis.url).eval(slow, 0)
            )
        )
        await submit_until(spin.done)
        assert await spin == 1
        busy = list(statuses)
        assert 503 in busy, busy
        # READONLY: a replica of a master that is not there (it keeps its data meanwhile)
        await r.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        t0 = time.monotonic()
        try:
            await submit_until(lambda: time.monotonic() > t0 + 4)
        finally:
            await r.execute_command("REPLICAOF", "NO", "ONE")
        assert 503 in statuses[len(busy) :]
        await submit_until(lambda: len(statuses) > len(busy) + 100 and statuses[-1] == 201)
    assert set(statuses) <= {201, 503}, sorted(set(statuses))
    for jid in [j.id for j in load] + accepted:
        done = await p.wait(jid, timeout=60)
        assert done.state == "succeeded" and done.attempt == 1, (jid, done.state, done.error)
        one_terminal(await p.events(jid))
    assert worker_children(sup) == kids, "a worker process died"
    assert "Traceback" not in worker_log_text(st)
    assert '"http.error"' not in st.log("service")


async def test_a_worker_whose_loop_dies_exits_and_is_restarted(
    redis_url: str, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    """A fetch loop that ends anyway (a bug) must not leave a process that registers as alive
    and fetches nothing: the process exits 1, the supervisor starts a fresh one, the job it was
    running is handed back and runs, and later jobs run too."""
    st = stack_factory(redis_url, **FAST)
    sup = await st.start_workers(1)
    (first,) = await children(sup, 1)
    p = await st.producer()
    marker = tmp_path / "broke"
    job = await p.submit("t.break_loop", {"marker": str(marker)})

    async def replaced() -> list[int] | None:
        kids = worker_children(sup)
        return kids if kids and first not in kids else None

    (second,) = await eventually(replaced, timeout=30, what="a fresh worker process")
    assert int(marker.read_text()) == first
    assert '"worker.loop_died"' in worker_log_text(st)
    done = await p.wait(job.id, timeout=30)
    assert done.state == "succeeded" and done.result == second
    later = await p.submit("t.noop", {})
    assert (await p.wait(later.id, timeout=20)).state == "succeeded"
    assert sup.poll() is None


# -- 7. Redis back without its data ------------------------------------------------------------------


async def test_redis_restarted_without_its_data_ends_watchers_of_vanished_jobs(
    own_redis: ServerProcess, stack_factory: Callable[..., Stack]
) -> None:
    """Redis restarts empty (no persistence) while a job is watched, and new submits land
    before the service's hub even notices (the service is frozen meanwhile). A watcher of the
    vanished job must get a `gone` event and an end, not heartbeats forever; its reconnect
    with Last-Event-ID gets 204 (an EventSource stops); `Producer.watch` ends with `gone` and
    `Producer.wait` raises NotFound; a firehose watcher gets a `snapshot`, then the new events."""
    from service.core.errors import NotFound

    st = stack_factory(own_redis.url, **FAST)
    await st.start_service()
    await st.start_workers(1)
    p = await st.producer()
    assert st.service is not None
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.get(f"{st.http}/api/events") as fire,
    ):
        job = await p.submit("t.sleep", {"seconds": 60})
        await read_sse(fire, until=lambda ev: ev[-1].event == "progress")
        per_job = await s.get(f"{st.http}/api/jobs/{job.id}/events")
        before = await read_sse(per_job, until=lambda ev: ev[-1].event == "progress")
        watched: list[str] = []

        async def watching() -> None:
            async for ev in p.watch(job.id):
                watched.append(ev.type)

        watch = asyncio.create_task(watching())
        waiter = asyncio.create_task(p.wait(job.id, timeout=60))
        await eventually(lambda: asyncio.sleep(0, len(watched) >= 3), what="Producer.watch live")
        with frozen(st.service.pid):
            own_redis.kill()
            own_redis.start()
            # more events than the old server ever had, with later ids: only the counter tells
            new = await p.submit_many([("t.noop", {}) for _ in range(30)])
            await eventually(lambda: drained(p), timeout=30, what="new jobs done")
        rest = await read_sse(per_job, timeout=30)
        assert [e.event for e in rest] == ["gone"], [e.event for e in rest]
        assert json.loads(rest[0].data)["job"] == job.id
        async with s.get(
            f"{st.http}/api/jobs/{job.id}/events", headers={"Last-Event-ID": str(before[-1].id)}
        ) as again:
            assert again.status == 204
        async with s.get(f"{st.http}/api/jobs/{job.id}/events") as fresh:
            assert fresh.status == 404  # never watched: an unknown job
        await asyncio.wait_for(watch, 30)
        assert watched[-1] == "gone", watched
        with pytest.raises(NotFound):
            await asyncio.wait_for(waiter, 30)
        probe = await p.submit("t.noop", {})
        seen = await read_sse(
            fire, until=lambda ev: any(probe.id in e.data for e in ev), timeout=30
        )
        assert seen[0].event == "snapshot", [e.event for e in seen[:3]]
        assert json.loads(seen[0].data).get("reason") == "gap", seen[0].data
    assert [(await p.get(j.id)).state for j in new] == ["succeeded"] * len(new)


# -- 2c. a call that reaches Redis after its client gave up, then its re-send ------------------------


class HoldingProxy:
    """A TCP proxy in front of Redis that holds the calls carrying a marker (a script's SHA) as
    a frozen Redis would: the call reaches Redis late, after its client timed out and sent it
    again on another connection, and its reply is lost. Held calls are let through in order."""

    def __init__(self, upstream_port: int, marker: bytes, delays: list[float]) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.delays = delays  # seconds after the first held call, one per call to hold
        self.held = 0
        self._first: float | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in self._writers:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [cwriter, uwriter]
        loop = asyncio.get_running_loop()

        async def up() -> None:
            while data := await creader.read(65536):
                if self.marker in data and self.held < len(self.delays):
                    if self._first is None:
                        self._first = loop.time()
                    release = self._first + self.delays[self.held]
                    self.held += 1
                    await asyncio.sleep(max(0.0, release - loop.time()))
                uwriter.write(data)
                await uwriter.drain()
            await asyncio.sleep(0.5)  # the client left: let Redis run what it sent, then go
            uwriter.close()

        async def down() -> None:
            while data := await ureader.read(65536):
                with contextlib.suppress(ConnectionError):
                    cwriter.write(data)
                    await cwriter.drain()
            cwriter.close()

        for coro in (up(), down()):
            t = asyncio.create_task(coro)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)


async def test_a_start_that_timed_out_and_was_sent_again_runs_the_job_once(
    redis_url: str, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    """The worker's `start` call times out (Redis does not answer within the socket timeout);
    it ran anyway, late, when the worker had already sent it again. The second copy must be
    answered "again" (this consumer already started it): the job runs once, as attempt 1,
    with one `started` event (max_attempts=1: a takeover would dead-letter it)."""
    from service.core.scripts import START

    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    # first copy: through 4 s after it was sent (its client gave up at 3 s); the re-send:
    # through 5 s, so the late first copy runs before it
    proxy = HoldingProxy(port, START.sha.encode(), [4.0, 5.0])
    proxy_url = f"redis://127.0.0.1:{await proxy.start()}/0"
    st = stack_factory(proxy_url, TIDINGS_REDIS_SOCKET_TIMEOUT_S="3", TIDINGS_JOBS_LEASE_S="30")
    try:
        await st.start_workers(1)
        p = await st.producer()
        await p.redis.script_load(START.source)  # else the first copy only meets NOSCRIPT
        marker = tmp_path / "m"
        job = await p.submit("t.marked", {"marker": str(marker), "seconds": 0.2}, max_attempts=1)
        done = await p.wait(job.id, timeout=30)
        assert proxy.held == 2, "the start was not sent again after its timeout"
        assert done.state == "succeeded" and done.attempt == 1, (done.state, done.error)
        assert [e.type for e in await p.events(job.id)] == ["queued", "started", "succeeded"]
        assert len(marker_lines(marker)) == 1
        assert '"what": "start"' in worker_log_text(st)  # the retry said so
    finally:
        await st.close()  # before the proxy its processes talk through
        await proxy.close()
