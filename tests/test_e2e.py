"""End to end: the real service and real worker processes, over HTTP and SSE, on every server
kind available (Redis 7 and Valkey 9)."""

from __future__ import annotations

import json
from collections.abc import Callable

import aiohttp
import pytest

from tests.helpers import SseEvent, Stack, eventually, read_sse

pytestmark = pytest.mark.e2e


async def submit(s: aiohttp.ClientSession, base: str, body: dict[str, object]) -> dict[str, object]:
    async with s.post(base + "/api/jobs", json=body) as r:
        assert r.status == 201, await r.text()
        assert r.headers["Location"].endswith(str((await r.json())["id"]))
        job: dict[str, object] = await r.json()
        return job


async def stored_events(
    s: aiohttp.ClientSession, base: str, job_id: object
) -> list[dict[str, object]]:
    async with s.get(
        f"{base}/api/jobs/{job_id}/events", headers={"Accept": "application/json"}
    ) as r:
        assert r.status == 200
        events: list[dict[str, object]] = await r.json()
        return events


def as_tuples(events: list[SseEvent]) -> list[tuple[str | None, str, str]]:
    return [(e.id, e.event, e.data) for e in events]


async def test_job_streams_to_completion_then_204(
    e2e_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(e2e_url)
    await st.start_service()
    await st.start_workers(1)
    async with aiohttp.ClientSession() as s:
        job = await submit(s, st.http, {"task": "t.steps", "payload": {"n": 4, "delay": 0.02}})
        assert job["state"] == "queued" and job["created_at"]
        async with s.get(str(job["events_url"])) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            assert r.headers["Cache-Control"] == "no-cache"
            assert r.headers["X-Accel-Buffering"] == "no"
            assert "Content-Encoding" not in r.headers
            events = await read_sse(r)
        types = [e.event for e in events]
        assert types == [
            "queued",
            "started",
            "progress",
            "progress",
            "progress",
            "progress",
            "succeeded",
        ]
        ids = [tuple(map(int, str(e.id).split("-"))) for e in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert json.loads(events[-1].data)["result"] == {"n": 4, "attempt": 1}
        assert json.loads(events[2].data)["current"] == 1
        # what was streamed is exactly what is stored
        stored = await stored_events(s, st.http, job["id"])
        assert [(e["id"], e["event"]) for e in stored] == [(e.id, e.event) for e in events]
        # a reconnect after the terminal event gets 204, so EventSource stops
        async with s.get(
            str(job["events_url"]), headers={"Last-Event-ID": str(events[-1].id)}
        ) as r:
            assert r.status == 204
        async with s.get(f"{st.http}/api/jobs/{job['id']}") as r:
            done = await r.json()
        assert done["state"] == "succeeded" and done["attempt"] == 1
        assert done["progress"] == {"current": 4, "total": 4, "message": "step 4"}
        assert done["finished_at"] and done["started_at"]


async def test_resume_mid_job_has_no_gap_and_no_duplicate(
    e2e_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(e2e_url)
    await st.start_service()
    await st.start_workers(1)
    async with aiohttp.ClientSession() as s:
        job = await submit(s, st.http, {"task": "t.steps", "payload": {"n": 12, "delay": 0.05}})
        url = str(job["events_url"])
        async with s.get(url) as r:
            first = await read_sse(r, until=lambda ev: sum(e.event == "progress" for e in ev) >= 3)
        # dropped mid-job; the job keeps going while we are away
        async with s.get(url, headers={"Last-Event-ID": str(first[-1].id)}) as r:
            second = await read_sse(r)
        assert second[0].event == "progress"
        assert second[-1].event == "succeeded"
        stored = await stored_events(s, st.http, job["id"])
        got = as_tuples(first + second)
        assert [(i, t) for i, t, _ in got] == [(e["id"], e["event"]) for e in stored]
        # the first connection may also use ?last_event_id=
        sep = "&" if "?" in url else "?"
        async with s.get(f"{url}{sep}last_event_id={first[1].id}") as r:
            third = await read_sse(r)
        assert as_tuples(third) == got[2:]


async def test_bad_last_event_id_gets_snapshot_then_live(
    e2e_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(e2e_url)
    await st.start_service()
    await st.start_workers(1)
    async with aiohttp.ClientSession() as s:
        job = await submit(s, st.http, {"task": "t.steps", "payload": {"n": 6, "delay": 0.05}})
        for bad in ["garbage", "1-1", "99999999999999-0", "-1", "1-2-3", "x" * 500]:
            async with s.get(str(job["events_url"]), headers={"Last-Event-ID": bad}) as r:
                assert r.status == 200
                events = await read_sse(r)
            assert events[0].event == "snapshot", bad
            snap = json.loads(events[0].data)
            assert snap["job"] == job["id"] and snap["type"] == "snapshot"
            assert events[-1].event == "succeeded" or snap["state"] == "succeeded"


async def test_api_errors_are_json_and_change_nothing(
    e2e_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(e2e_url)
    await st.start_service()
    async with aiohttp.ClientSession() as s:
        cases: list[tuple[dict[str, object], int, str | None]] = [
            ({"json": {"task": "nope", "payload": {}}}, 422, "$.task"),
            ({"json": {"task": "t.steps", "payload": {"n": "x"}}}, 422, "$.payload.n"),
            ({"json": {"task": "t.steps", "payload": {}, "bogus": 1}}, 422, None),
            ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, None),
            (
                {
                    "data": b"task=t.steps",
                    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                },
                415,
                None,
            ),
            ({"json": {"task": "t.steps", "payload": {}, "delay_s": -1}}, 422, "$.delay_s"),
        ]
        for kw, status, path in cases:
            async with s.post(st.http + "/api/jobs", **kw) as r:  # type: ignore[arg-type]
                assert r.status == status, (kw, await r.text())
                body = await r.json()
                assert set(body["error"]) >= {"code", "message"}
                if path:
                    assert body["error"]["path"] == path
        async with s.get(st.http + "/api/jobs") as r:
            assert (await r.json())["jobs"] == []
        async with s.get(st.http + "/api/jobs/doesnotexist") as r:
            assert r.status == 404
        async with s.get(st.http + "/api/jobs/00000000000000000000000000/events") as r:
            assert r.status == 404


async def test_producer_submit_and_wait_through_real_workers(
    e2e_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(e2e_url)
    await st.start_workers(2)
    p = await st.producer()
    jobs = await p.submit_many([("t.steps", {"n": 2, "delay": 0.01}) for _ in range(50)])
    assert len({j.id for j in jobs}) == 50
    for j in jobs:
        done = await p.wait(j.id, timeout=20)
        assert done.state == "succeeded", done

    async def drained() -> bool:
        q = (await p.queues())["default"]
        return q.queued == 0 and q.running == 0 and q.workers == 2

    await eventually(drained, what="queue drained")


async def test_several_service_processes_share_the_port(
    e2e_url: str, stack_factory: Callable[..., Stack]
) -> None:
    st = stack_factory(e2e_url)
    await st.start_service(TIDINGS_HTTP_PROCESSES="2")
    await st.start_workers(1)
    pids: set[int] = set()

    async def two_processes() -> bool:
        # a new connection each time: the kernel spreads them over both listeners
        async with aiohttp.ClientSession() as s, s.get(st.http + "/healthz") as r:
            pids.add((await r.json())["pid"])
        return len(pids) >= 2

    await eventually(two_processes, timeout=20, interval=0.01, what="two service processes")
    # any process serves any watcher: submit through one, stream through whichever answers
    async with aiohttp.ClientSession() as s:
        job = await submit(s, st.http, {"task": "t.steps", "payload": {"n": 3, "delay": 0.02}})
    for _ in range(4):
        async with aiohttp.ClientSession() as s, s.get(str(job["events_url"])) as r:
            events = await read_sse(r)
        assert [e.event for e in events][-1] == "succeeded"
