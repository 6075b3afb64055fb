"""The HTTP client (`service.client`) against real service and worker processes: a watch that
rides out a SIGKILL and restart of the service with no gap and no duplicate, resume positions,
snapshots and 204s, the typed errors, fresh watch links, the all-or-nothing batch, and the
blocking twin."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections.abc import Callable

import aiohttp
import pytest

from service.client import (
    Client,
    JobGone,
    SseParser,
    SyncClient,
    Unreachable,
    backoff,
)
from service.core.embedded import free_port
from service.core.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from service.core.wire import (
    ProgressEvent,
    SnapshotEvent,
    SucceededEvent,
    WatchEvent,
    parse_event_id,
)
from service.producer import Producer, SubmitRequest
from tests.helpers import Stack, eventually, read_sse

pytestmark = pytest.mark.e2e
FAST = {"TIDINGS_SSE_RETRY_MS": "200"}
KEY = "k-client-" + "c" * 24
NO_JOB = "0" * 26


async def stored(p: Producer, job_id: str) -> list[tuple[str, str]]:
    _, events = await p.snapshot(job_id)
    return [(e.id.decode(), e.type) for e in events]


def pairs(events: list[WatchEvent]) -> list[tuple[str | None, str]]:
    return [(e.id, e.type) for e in events]


async def drain(client: Client, job_id: str, last_event_id: str | None = None) -> list[WatchEvent]:
    return [ev async for ev in client.watch(job_id, last_event_id=last_event_id)]


async def test_watch_survives_a_service_sigkill_and_restart_with_no_gap_and_no_duplicate(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(redis_url, **FAST)
    await asyncio.gather(st.start_service(), st.start_workers(1))
    p = await st.producer()
    got: list[WatchEvent] = []
    reconnects: list[str] = []
    async with Client(st.http) as c:
        job = await c.submit("t.steps", {"n": 80, "delay": 0.05})

        async def follow() -> None:
            async for ev in c.watch(job.id, on_reconnect=lambda why, _: reconnects.append(why)):
                got.append(ev)

        watching = asyncio.create_task(follow())

        async def some_progress() -> bool:
            return sum(e.type == "progress" for e in got) >= 5

        await eventually(some_progress, what="progress over HTTP")
        assert st.service is not None
        os.killpg(st.service.pid, signal.SIGKILL)
        await asyncio.to_thread(st.service.wait)
        at_kill = len(await stored(p, job.id))

        async def moved_on() -> bool:
            return len(await stored(p, job.id)) >= at_kill + 5

        # the job keeps going while the service is down: the client must get those events too
        await eventually(moved_on, what="events while the service is down")
        seen_while_down = len(got)
        await st.start_service(**FAST)
        await asyncio.wait_for(watching, 30)

    events = await stored(p, job.id)
    assert pairs(got) == events  # every stored event, once, in order
    keys = [k for e in got if (k := parse_event_id(e.id)) is not None]
    assert len(keys) == len(got)
    assert all(a < b for a, b in itertools.pairwise(keys))  # strictly increasing
    assert seen_while_down < len(got) and reconnects
    assert got[-1].terminal and isinstance(got[-1].data, SucceededEvent)
    assert got[-1].data.result == {"n": 80, "attempt": 1}
    assert [e.data.current for e in got if isinstance(e.data, ProgressEvent)] == list(range(1, 81))


async def test_resume_positions_snapshots_the_end_and_vanished_jobs(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    # streams are cut every second (sse.max_age_s): the client reconnects on its own
    st = stack_factory(redis_url, **FAST, TIDINGS_SSE_MAX_AGE_S="1")
    await asyncio.gather(st.start_service(), st.start_workers(1))
    p = await st.producer()
    async with Client(st.http) as c:
        job = await c.submit("t.steps", {"n": 3, "delay": 0.01})
        done = await c.wait(job.id, timeout=20)
        assert done.state == "succeeded" and done.result == {"n": 3, "attempt": 1}
        full = await drain(c, job.id)
        assert pairs(full) == await stored(p, job.id)
        assert full[1].id is not None
        assert await drain(c, job.id, last_event_id=full[1].id) == full[2:]
        # after the terminal event there is nothing more, and that is the end, not an error
        assert await drain(c, job.id, last_event_id=str(full[-1].id)) == []
        # a position the service does not know: the job's state, then (finished) the end
        snap = await drain(c, job.id, last_event_id="garbage")
        assert [e.type for e in snap] == ["snapshot"] and snap[0].id == full[-1].id
        assert isinstance(snap[0].data, SnapshotEvent) and snap[0].data.state == "succeeded"

        # a watch that outlives several cut streams sees each event once
        long = await c.submit("t.steps", {"n": 30, "delay": 0.1})
        reconnects: list[str] = []
        events = [
            ev async for ev in c.watch(long.id, on_reconnect=lambda why, _: reconnects.append(why))
        ]
        assert pairs(events) == await stored(p, long.id)
        assert "stream ended" in reconnects

        # unknown job: NotFound; a job gone after our position (expired, lost): JobGone
        with pytest.raises(NotFound) as unknown:
            await drain(c, NO_JOB)
        assert not isinstance(unknown.value, JobGone)
        with pytest.raises(JobGone):
            await drain(c, NO_JOB, last_event_id=str(full[0].id))

        sleeper = await c.submit("t.sleep", {"seconds": 60})
        with pytest.raises(TimeoutError):
            await c.wait(sleeper.id, timeout=0.5)
        seen: list[WatchEvent] = []

        async def follow() -> None:
            async for ev in c.watch(sleeper.id):
                seen.append(ev)

        watching = asyncio.create_task(follow())

        async def running() -> bool:
            return any(e.type == "progress" for e in seen)

        await eventually(running, what="the sleeper's first progress")
        # the job vanishes while it is watched (as if Redis lost it): the next reconnect says so
        await p.redis.delete(p.keys.job(sleeper.id))
        with pytest.raises(JobGone):
            await asyncio.wait_for(watching, 10)

        # cancel and its conflict
        queued = await c.submit("t.noop", {}, delay_s=600)
        assert (await c.cancel(queued.id)).state == "cancelled"
        with pytest.raises(Conflict):
            await c.cancel(queued.id)
        assert (await c.retry(queued.id)).state != "cancelled"  # queued again (and run)


async def test_keys_tokens_and_fresh_links(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    origin = "http://app.example"
    st = stack_factory(
        redis_url,
        TIDINGS_AUTH_API_KEYS=KEY,
        TIDINGS_HTTP_CORS_ORIGINS=origin,
        TIDINGS_AUTH_TOKEN_TTL_S="2",
    )
    await st.start_service()
    async with (
        Client(st.http) as anon,
        Client(st.http, api_key="k-wrong") as wrong,
        Client(st.http, api_key=KEY) as c,
        aiohttp.ClientSession() as s,
    ):
        job = await c.submit("t.noop", {})
        with pytest.raises(Unauthorized):
            await anon.queues()
        with pytest.raises(Unauthorized):
            await drain(anon, job.id)
        with pytest.raises(Forbidden):
            await wrong.get(job.id)
        with pytest.raises(Forbidden):
            await drain(wrong, job.id)
        with pytest.raises(NotFound):
            await c.get(NO_JOB)
        with pytest.raises(NotFound):
            await drain(c, NO_JOB)
        with pytest.raises(Invalid) as bad:
            await c.submit("t.steps", {"n": "x"})
        assert bad.value.path == "$.payload.n"

        # fresh links need a key, name an existing job, and open it from the allowed origin
        with pytest.raises(Unauthorized):
            await anon.watch_links(job.id)
        with pytest.raises(NotFound):
            await c.watch_links(NO_JOB)
        links = await c.watch_links(job.id)
        token = links.events_url.split("token=")[1]
        async with s.post(f"{st.http}/api/jobs/{job.id}/token?token={token}") as r:
            assert r.status == 403  # a watch token cannot mint more
        headers = {"Origin": origin}
        async with s.get(links.status_url, headers=headers) as r:
            assert r.status == 200 and (await r.json())["id"] == job.id
            assert r.headers["Access-Control-Allow-Origin"] == origin
        async with s.get(links.events_url, headers=headers) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == origin
            first = await read_sse(r, until=lambda ev: len(ev) >= 1)
            assert first[0].event == "queued"

        # past the token's lifetime: 401, with the CORS headers a page needs to tell why
        async def expired() -> bool:
            async with s.get(links.status_url, headers=headers) as r:
                if r.status != 401:
                    return False
                assert r.headers["Access-Control-Allow-Origin"] == origin
                return bool((await r.json())["error"]["code"] == "unauthorized")

        await eventually(expired, timeout=8, interval=0.2, what="the watch token to expire")
        fresh = await c.watch_links(job.id)
        async with s.get(fresh.status_url, headers=headers) as r:
            assert r.status == 200
        assert fresh.expires_at > links.expires_at


async def test_batch_is_all_or_nothing_with_the_item_path(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(redis_url)
    await st.start_service()
    p = await st.producer()
    async with Client(st.http) as c, aiohttp.ClientSession() as s:
        items: list[SubmitRequest | tuple[str, object]] = [("t.steps", {"n": i}) for i in range(5)]
        items[3] = ("t.steps", {"n": "three"})
        before = len(await c.jobs(limit=None))
        with pytest.raises(Invalid) as e:
            await c.submit_many(items)
        assert e.value.path == "$.jobs[3].payload.n"
        with pytest.raises(Invalid) as e:
            await p.submit_many(items)
        assert e.value.path == "$.jobs[3].payload.n"
        body: dict[str, object] = {
            "jobs": [{"task": "t.noop", "payload": {}}, {"task": "nope", "payload": {}}]
        }
        async with s.post(st.http + "/api/jobs/batch", json=body) as r:
            assert r.status == 422 and (await r.json())["error"]["path"] == "$.jobs[1].task"
        async with s.post(st.http + "/api/jobs/batch", json={"jobs": []}) as r:
            assert r.status == 422 and (await r.json())["error"]["path"] == "$.jobs"
        body = {"jobs": [{"task": "t.noop", "payload": {}, "bogus": 1}]}
        async with s.post(st.http + "/api/jobs/batch", json=body) as r:
            assert r.status == 422 and "$.jobs[0]" in (await r.json())["error"]["path"]
        assert len(await c.jobs(limit=None)) == before  # nothing was written

        jobs = await c.submit_many(
            [SubmitRequest(task="t.steps", payload={"n": i}, queue="batch") for i in range(600)]
        )
        assert [j.payload["n"] for j in jobs] == list(range(600))
        assert all(j.state == "queued" and j.events_url for j in jobs)
        # listing follows the service's pages (500 at most each)
        listed = await c.jobs(queue="batch", limit=None)
        assert sorted(j.id for j in listed) == sorted(j.id for j in jobs)
        assert len(await c.jobs(queue="batch", limit=550)) == 550
        stats = {q.name: q for q in await c.queues()}
        assert stats["batch"].queued == 600


async def test_sync_client(redis_url: str, stack_factory: Callable[..., Stack]) -> None:
    st = stack_factory(redis_url, **FAST)
    await asyncio.gather(st.start_service(), st.start_workers(1))

    def scenario(base: str) -> None:
        with SyncClient(base) as c:
            job = c.submit("t.steps", {"n": 3, "delay": 0.01})
            events = list(c.watch(job.id))
            types = [e.type for e in events]
            # progress is coalesced per job (worker.progress_interval_s): reports that come
            # faster may merge, but the newest value always lands before the finish
            assert types[:2] == ["queued", "started"] and types[-1] == "succeeded"
            assert 1 <= types.count("progress") <= 3 and len(types) == types.count("progress") + 3
            progress = [e.data for e in events if isinstance(e.data, ProgressEvent)]
            assert [e.current for e in progress] == sorted(e.current for e in progress)
            assert progress[-1].current == 3
            assert c.wait(job.id, timeout=10).result == {"n": 3, "attempt": 1}
            assert job.id in [j.id for j in c.jobs(state="succeeded")]
            sleeper = c.submit("t.sleep", {"seconds": 60})
            for ev in c.watch(sleeper.id):  # leaving a watch early closes its stream
                if ev.type == "progress":
                    break
            assert c.cancel(sleeper.id).state in ("running", "cancelled")
            assert c.wait(sleeper.id, timeout=10).state == "cancelled"
            failing = c.submit("t.fail", {}, max_attempts=1)
            assert c.wait(failing.id, timeout=10).state == "failed"
            assert failing.id in [j.id for j in c.dead("default")]
            assert {q.name: q for q in c.queues()}["default"].dead >= 1
            first = list(c.watch(failing.id))
            assert first[-1].type == "failed"
            again = c.retry(failing.id)
            assert again.id == failing.id  # (a worker may already have failed it again)
            # queued again, then run and failed once more: after the first failure's id
            later = [e.type for e in c.watch(failing.id, last_event_id=first[-1].id)]
            assert later[0] == "queued" and later[-1] == "failed" and "started" in later
            assert len(c.submit_many([("t.noop", {}), ("t.noop", {})])) == 2
            with pytest.raises(NotFound):
                c.get(NO_JOB)

    await asyncio.to_thread(scenario, st.http)


async def test_unreachable_service_is_a_typed_error() -> None:
    async with Client(f"http://127.0.0.1:{free_port()}", timeout=5) as c:
        with pytest.raises(Unreachable):
            await c.get(NO_JOB)


def test_sse_parser_reads_any_line_ending_and_split_chunks() -> None:
    stream = (
        b'retry: 300\n\n: hb\nid: 1-0\r\nevent: progress\rdata: {"a":\ndata: 1}\n\n'
        b": hb\n: hb\nid: 2-0\nevent: log\ndata: x\n\n"
    )
    for size in (1, 2, 7, len(stream)):
        parser = SseParser()
        blocks = []
        for i in range(0, len(stream), size):
            blocks += parser.feed(stream[i : i + size])
        assert [(b.id, b.event, b.data, b.retry) for b in blocks] == [
            (None, None, None, 300),
            ("1-0", "progress", '{"a":\n1}', None),
            ("2-0", "log", "x", None),
        ]


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    assert 0.1 <= backoff(0.2, 1) <= 0.2
    assert 0.4 <= backoff(0.2, 3) <= 0.8
    assert all(backoff(2.0, n) <= 10.0 for n in range(1, 40))
