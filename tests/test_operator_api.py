"""The operator's endpoints, in-process: bulk cancel and retry, a queue's dead letters retried or
purged, finished jobs purged by age, pause and resume, the trend, and the firehose's `stats`
event. Jobs are moved through the real scripts the way a worker moves them (`Mover`), so a test
decides what is running, finished or dead. Bad input gets a 4xx JSON error and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.exceptions
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from service.core import scripts as S
from service.core import wire
from service.core.scripts import BUCKETS_MS
from service.http.app import create_app
from service.http.state import STATS
from service.producer import Producer, SubmitRequest
from service.stats import percentiles
from tests.conftest import make_config, task_registry
from tests.helpers import SseEvent, eventually, read_sse

Client = TestClient[web.Request, web.Application]


class Mover:
    """Starts jobs and finishes them through the scripts, as a worker would."""

    def __init__(self, p: Producer) -> None:
        self.p = p
        self.r: Any = p.redis
        self.keys = p.keys
        self.runs: dict[str, tuple[int, str]] = {}

    async def submit(self, n: int, queue: str, **kw: Any) -> list[str]:
        jobs = await self.p.submit_many(
            [SubmitRequest(task="t.noop", payload={}, queue=queue, **kw) for _ in range(n)]
        )
        return [j.id for j in jobs]

    async def start(self, queue: str, ids: list[str]) -> None:
        want = set(ids)
        stream = self.keys.queue(0, queue)
        with contextlib.suppress(redis.exceptions.ResponseError):
            await self.r.xgroup_create(stream, S.GROUP, id="0", mkstream=True)
        resp = await self.r.xreadgroup(S.GROUP, "mover", {stream: ">"}, count=100_000)
        entries = [
            S.Entry(f[b"j"].decode(), queue, eid.decode())
            for _, rows in resp or []
            for eid, f in rows
            if f[b"j"].decode() in want
        ]
        minute = int(time.time() // 60)
        for i in range(0, len(entries), 100):
            rows = await self.p.ops.start(0, "mover", entries[i : i + 100], minute).run(self.r)
            for row in rows:
                assert row.verdict == "run", row
                self.runs[row.id] = (row.run, queue)
        assert want <= set(self.runs)

    async def finish(self, ids: list[str], how: str) -> None:
        """how: succeeded | fail (for good: a dead letter) | cancelled."""
        body = b"null" if how == "succeeded" else b'{"type":"E","message":"no"}'
        writes = [S.Write("f", j, self.runs[j][1], self.runs[j][0], 1, body, how, 0) for j in ids]
        minute = int(time.time() // 60)
        for i in range(0, len(writes), 100):
            res = await self.p.ops.apply(0, writes[i : i + 100], minute).run(self.r)
            assert "fenced" not in res, res

    async def dead(self, n: int, queue: str) -> list[str]:
        ids = await self.submit(n, queue)
        await self.start(queue, ids)
        await self.finish(ids, "fail")
        return ids


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, redis_url: str, prefix: str) -> Client:
    cfg = make_config(
        redis_url, prefix, TIDINGS_WORKERS_TASKS="tests.tasks", TIDINGS_SSE_STATS_INTERVAL_S="0.2"
    )
    return await aiohttp_client(create_app(cfg, redis_url, task_registry()))


@pytest.fixture
def mover(producer: Producer) -> Mover:
    return Mover(producer)


async def post(c: Client, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    async with c.post(path, json=body, **kw) as r:
        return r.status, await r.json()


async def queue_stats(c: Client, name: str) -> dict[str, Any]:
    async with c.get("/api/queues") as r:
        assert r.status == 200
        found = [q for q in (await r.json())["queues"] if q["name"] == name]
    assert found, name
    return dict(found[0])


async def states(p: Producer, ids: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for j in await p.queries.store.many(ids):
        key = j.state if j is not None else "gone"
        out[key] = out.get(key, 0) + 1
    return out


async def assert_error(resp: tuple[int, Any], status: int, path: str | None = None) -> None:
    got, body = resp
    assert got == status, body
    assert set(body) == {"error"} and body["error"]["code"], body
    if path is not None:
        assert body["error"].get("path") == path, body


# -- a list of jobs ----------------------------------------------------------------------------


async def test_bulk_cancel_and_retry_act_on_each_job_once(
    client: Client, producer: Producer, mover: Mover
) -> None:
    # started first: a consumer that reads a queue takes every entry in it
    running = await mover.submit(3, "bulk")
    await mover.start("bulk", running)
    done = await mover.submit(2, "bulk")
    await mover.start("bulk", done)
    await mover.finish(done, "succeeded")
    queued = await mover.submit(40, "bulk")
    later = await mover.submit(5, "bulk", delay_s=600)
    unknown = wire.new_job_id()
    ids = [*queued, *later, *running, *done, unknown, queued[0]]  # a duplicate

    status, dry = await post(client, "/api/jobs/bulk?dry_run=1", {"action": "cancel", "ids": ids})
    assert status == 200, dry
    assert dry["dry_run"] is True and dry["count"] == 48
    assert dry["outcomes"] == {"cancelled": 45, "requested": 3, "finished": 2, "missing": 1}
    assert len(dry["results"]) == len(set(ids))
    assert await states(producer, queued) == {"queued": 40}  # a dry run changes nothing

    status, res = await post(client, "/api/jobs/bulk", {"action": "cancel", "ids": ids})
    assert status == 200, res
    assert res["count"] == 48 and res["dry_run"] is False
    assert res["outcomes"] == {"cancelled": 45, "requested": 3, "finished": 2, "missing": 1}
    by_id = {r["id"]: r["outcome"] for r in res["results"]}
    assert by_id[unknown] == "missing" and by_id[running[0]] == "requested"
    assert await states(producer, [*queued, *later]) == {"cancelled": 45}
    # the same again: nothing left to cancel, and nothing breaks
    status, again = await post(client, "/api/jobs/bulk", {"action": "cancel", "ids": queued})
    assert again["count"] == 0 and again["outcomes"] == {"finished": 40}

    status, res = await post(client, "/api/jobs/bulk", {"action": "retry", "ids": ids})
    assert status == 200, res
    assert res["outcomes"] == {"retried": 45, "conflict": 5, "missing": 1}
    assert await states(producer, [*queued, *later]) == {"queued": 45}
    assert (await queue_stats(client, "bulk"))["queued"] == 45


async def test_bulk_bad_input_is_refused_and_changes_nothing(
    client: Client, producer: Producer, mover: Mover
) -> None:
    ids = await mover.submit(3, "bulk")
    ok = {"action": "cancel", "ids": ids}
    bad: list[tuple[Any, int, str | None]] = [
        ({"action": "nuke", "ids": ids}, 422, "$.action"),
        ({"action": "cancel", "ids": []}, 422, "$.ids"),
        ({"action": "cancel", "ids": [ids[0]] * 1001}, 422, "$.ids"),
        ({"action": "cancel", "ids": [ids[0], "nope"]}, 422, "$.ids[1]"),
        ({"action": "cancel", "ids": [ids[0], 7]}, 422, None),
        ({**ok, "force": True}, 422, None),
        ({"ids": ids}, 422, None),
    ]
    for body, status, path in bad:
        await assert_error(await post(client, "/api/jobs/bulk", body), status, path)
    await assert_error(await post(client, "/api/jobs/bulk?dry_run=maybe", ok), 422, "dry_run")
    async with client.post("/api/jobs/bulk", data=json.dumps(ok)) as r:
        assert r.status == 415
    async with client.post(
        "/api/jobs/bulk", data=b"{nope", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400 and "error" in await r.json()
    assert await states(producer, ids) == {"queued": 3}


# -- a queue's dead letters --------------------------------------------------------------------


async def test_dead_letters_are_retried_then_purged_in_batches(
    client: Client, producer: Producer, mover: Mover
) -> None:
    ids = await mover.dead(450, "dq")  # more than two batches
    other = await mover.dead(3, "other")
    assert (await queue_stats(client, "dq"))["dead"] == 450

    status, dry = await post(client, "/api/queues/dq/dead/retry?dry_run=1")
    assert status == 200 and dry["count"] == 450 and dry["dry_run"] is True, dry
    assert (await queue_stats(client, "dq"))["dead"] == 450

    status, res = await post(client, "/api/queues/dq/dead/retry")
    assert status == 200, res
    assert res["count"] == 450 and res["outcomes"] == {"retried": 450} and res["queue"] == "dq"
    stats = await queue_stats(client, "dq")
    assert (stats["queued"], stats["dead"]) == (450, 0)
    assert await states(producer, ids) == {"queued": 450}
    assert (await queue_stats(client, "other"))["dead"] == 3  # another queue's stay

    # dead again, then purged: the jobs, their dead-letter and index entries are gone
    mover.runs.clear()
    await mover.start("dq", ids)
    await mover.finish(ids, "fail")
    status, dry = await post(client, "/api/queues/dq/dead/purge?dry_run=1")
    assert dry["count"] == 450
    assert await states(producer, ids) == {"failed": 450}
    status, res = await post(client, "/api/queues/dq/dead/purge")
    assert status == 200 and res["count"] == 450 and res["outcomes"] == {"purged": 450}, res
    assert await states(producer, ids) == {"gone": 450}
    assert (await queue_stats(client, "dq"))["dead"] == 0
    async with client.get(f"/api/jobs/{ids[0]}") as r:
        assert r.status == 404
    for k in range(producer.keys.partitions):
        left = await producer.redis.xrange(producer.keys.index(k))
        assert {f[b"j"].decode() for _, f in left}.isdisjoint(ids)
    status, res = await post(client, "/api/queues/dq/dead/purge")
    assert res["count"] == 0  # idempotent
    assert await states(producer, other) == {"failed": 3}


async def test_queue_endpoints_refuse_bad_input(client: Client, mover: Mover) -> None:
    await mover.dead(2, "dq")
    for path in ("dead/retry", "dead/purge", "pause", "resume"):
        await assert_error(await post(client, f"/api/queues/nosuch/{path}"), 404)
        await assert_error(await post(client, f"/api/queues/bad%20name/{path}"), 422, "queue")
    await assert_error(await post(client, "/api/queues/dq/dead/retry?dry_run=2"), 422, "dry_run")
    for body in ({}, {"finished_before": -1}, {"finished_before": "yesterday"}, {"x": 1}):
        await assert_error(await post(client, "/api/queues/dq/purge", body), 422)
    async with client.post("/api/queues/dq/purge", data="{}") as r:
        assert r.status == 415
    stats = await queue_stats(client, "dq")
    assert (stats["dead"], stats["queued"], stats["paused"]) == (2, 0, False)


async def test_purge_finished_deletes_only_what_finished_before_the_time(
    client: Client, producer: Producer, mover: Mover
) -> None:
    old = await mover.submit(30, "pq")
    await mover.start("pq", old)
    await mover.finish(old[:20], "succeeded")
    await mover.finish(old[20:25], "fail")
    await mover.finish(old[25:], "cancelled")
    sec, usec = await producer.redis.time()
    cutoff = sec * 1000 + usec // 1000 + 1

    async def past_cutoff() -> bool:
        s, u = await producer.redis.time()
        return bool(s * 1000 + u // 1000 > cutoff)

    await eventually(past_cutoff, what="the server clock past the cutoff")
    recent = await mover.submit(5, "pq")
    await mover.start("pq", recent)
    await mover.finish(recent, "succeeded")
    waiting = await mover.submit(4, "pq")
    elsewhere = await mover.submit(3, "elsewhere")
    await mover.start("elsewhere", elsewhere)
    await mover.finish(elsewhere, "succeeded")

    body = {"finished_before": cutoff}
    status, dry = await post(client, "/api/queues/pq/purge?dry_run=1", body)
    assert status == 200 and dry["count"] == 30, dry
    assert await states(producer, old) == {"succeeded": 20, "failed": 5, "cancelled": 5}
    status, res = await post(client, "/api/queues/pq/purge", body)
    assert status == 200 and res["count"] == 30, res
    assert await states(producer, old) == {"gone": 30}
    assert await states(producer, recent) == {"succeeded": 5}
    assert await states(producer, waiting) == {"queued": 4}
    assert await states(producer, elsewhere) == {"succeeded": 3}
    assert (await queue_stats(client, "pq"))["dead"] == 0  # the failed ones' entries too
    async with client.get("/api/jobs?queue=pq&limit=100") as r:
        listed = {j["id"] for j in (await r.json())["jobs"]}
    assert listed == {*recent, *waiting}


# -- pause -------------------------------------------------------------------------------------


async def test_pause_and_resume_show_in_the_queue_figures(client: Client, mover: Mover) -> None:
    await mover.submit(2, "pz")
    status, body = await post(client, "/api/queues/pz/pause")
    assert status == 200 and body["paused"] is True and body["queued"] == 2
    assert (await queue_stats(client, "pz"))["paused"] is True
    status, body = await post(client, "/api/queues/pz/resume")
    assert status == 200 and body["paused"] is False


# -- trend -------------------------------------------------------------------------------------


def test_percentiles_from_bucket_counts() -> None:
    assert percentiles({}) is None
    # all in (10, 25]: linear within the bucket
    p = percentiles({3: 100})
    assert p is not None and (p.p50, p.p95, p.count) == (18, 24, 100)
    # 90 fast, 10 slow: p50 in the first bucket, p95 and p99 in the slow one
    p = percentiles({1: 90, 9: 10})
    assert p is not None
    assert p.p50 <= BUCKETS_MS[0] and BUCKETS_MS[7] <= p.p95 <= p.p99 <= BUCKETS_MS[8]
    p = percentiles({len(BUCKETS_MS) + 1: 4})  # +Inf: its lower bound
    assert p is not None and p.p99 == BUCKETS_MS[-1]


async def test_trend_counts_outcomes_per_queue_and_task(client: Client, mover: Mover) -> None:
    ids = await mover.submit(15, "tq")
    await mover.start("tq", ids)
    await mover.finish(ids[:10], "succeeded")
    await mover.finish(ids[10:13], "fail")
    await mover.finish(ids[13:], "cancelled")
    cancelled = await mover.submit(2, "tq")
    for j in cancelled:
        await post(client, f"/api/jobs/{j}/cancel")
    other = await mover.submit(1, "tq2")
    await mover.start("tq2", other)
    await mover.finish(other, "succeeded")

    async with client.get("/api/stats/trend?minutes=5&queue=tq") as r:
        assert r.status == 200
        t = await r.json()
    assert len(t["points"]) == 5 and t["minutes"] == 5 and t["queue"] == "tq"
    total = t["total"]
    assert (total["succeeded"], total["failed"], total["cancelled"]) == (10, 3, 4)
    assert total["wait_ms"]["count"] == 15 and total["run_ms"]["count"] == 15
    assert sum(p["succeeded"] for p in t["points"]) == 10
    assert {"tq", "tq2"} <= set(t["queues"]) and "t.noop" in t["tasks"]
    async with client.get("/api/stats/trend?minutes=5&task=t.noop") as r:
        assert (await r.json())["total"]["succeeded"] == 11
    async with client.get("/api/stats/trend?minutes=5&task=t.other") as r:
        body = await r.json()
    assert body["total"]["succeeded"] == 0 and body["total"]["wait_ms"] is None
    for q in ("minutes=0", "minutes=121", "minutes=x", "queue=a%20b", "task=%7C"):
        async with client.get(f"/api/stats/trend?{q}") as r:
            assert r.status == 422, q
            assert "error" in await r.json()


# -- the firehose's stats event ------------------------------------------------------------------


async def test_firehose_stats_event_matches_the_queue_figures(client: Client, mover: Mover) -> None:
    await mover.dead(2, "sq")
    await mover.submit(3, "sq")
    async with client.get("/api/events?stats=only") as r:
        assert r.status == 200
        first = await read_sse(r, until=lambda evs: len(evs) >= 1, timeout=10)
        assert first[0].event == "stats" and first[0].id is None
        data = msgspec.json.decode(first[0].data)
        assert data["type"] == "stats"
        async with client.get("/api/queues") as q:
            api = (await q.json())["queues"]
        assert data["queues"] == api
        assert data["states"]["failed"] >= 2 and data["states"]["queued"] >= 3
        assert data["last_hour"]["sq"]["failed"] == 2
        # a change shows in a later event, within a few ticks
        await post(client, "/api/queues/sq/pause")

        def paused(evs: list[SseEvent]) -> bool:
            last = msgspec.json.decode(evs[-1].data)
            return any(q["name"] == "sq" and q["paused"] for q in last["queues"])

        t0 = time.monotonic()
        more = await read_sse(r, until=paused, timeout=10)
        assert time.monotonic() - t0 < 5
        assert all(e.event == "stats" and e.id is None for e in more)
    async with client.get("/api/events?stats=sometimes") as r:
        assert r.status == 422


async def test_firehose_with_stats_keeps_the_job_events_and_their_ids(
    client: Client, mover: Mover
) -> None:
    async with client.get("/api/events?stats=1") as r:
        await read_sse(r, until=lambda evs: any(e.event == "stats" for e in evs), timeout=10)
        ids = await mover.submit(2, "sq")
        evs = await read_sse(
            r, until=lambda evs: sum(e.event == "queued" for e in evs) >= 2, timeout=10
        )
        queued = [e for e in evs if e.event == "queued"]
        assert {json.loads(e.data)["job"] for e in queued} == set(ids)
        assert all(e.id for e in queued)


async def test_stats_event_is_computed_once_per_tick_for_many_watchers(
    client: Client, mover: Mover
) -> None:
    await mover.submit(1, "sq")
    app = client.app
    assert app is not None
    feed = app[STATS]
    streams: list[aiohttp.ClientResponse] = []
    try:
        for _ in range(20):
            streams.append(await client.get("/api/events?stats=only"))
        before, t0 = feed.computed, time.monotonic()
        got = await asyncio.gather(
            *(read_sse(s, until=lambda evs: len(evs) >= 4, timeout=15) for s in streams)
        )
        ticks = (time.monotonic() - t0) / feed.interval_s
        assert all(e.event == "stats" for evs in got for e in evs)
        # one computation per tick for all 20 watchers, not one per watcher
        assert feed.computed - before <= ticks + 2, (feed.computed - before, ticks)
    finally:
        for s in streams:
            s.close()
