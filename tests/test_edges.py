"""The promises at the small edges (issue 14), each reproducing what once broke it: blank API
keys, hostile headers and cursors, firehose resumes from ids the stream never held, unbounded
queue names, a mixed worker fleet, a worker started from another directory, and the proxy,
metrics, logging and token details."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.exceptions
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis._parsers.base import BaseParser

from service.core import config as config_mod
from service.core.errors import Invalid
from service.core.queues import Queues
from service.core.retry import is_transient
from service.http.app import create_app
from service.http.auth import Auth
from service.http.state import AUTH as AUTH_KEY
from service.http.state import PRODUCER
from service.producer import Producer
from tests.conftest import make_config, task_registry
from tests.helpers import ROOT, Stack, base_env, eventually, read_sse, worker_children

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
KEY = "k-" + "c" * 30
BEARER = {"Authorization": f"Bearer {KEY}"}


def keyed(redis_url: str, prefix: str, tmp: Path, **env: str) -> config_mod.Config:
    return make_config(
        redis_url,
        prefix,
        TIDINGS_WORKERS_TASKS="tests.tasks",
        TIDINGS_AUTH_API_KEYS=KEY,
        TIDINGS_REDIS_EMBEDDED_DIR=str(tmp),
        **env,
    )


async def raw_request(client: Client, head: bytes) -> tuple[int, bytes]:
    """Send request bytes as they are (a client library would refuse them); status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(head)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def parsed(reply: str) -> Exception:
    """An error reply as redis-py raises it."""
    exc: Exception = BaseParser.parse_error(reply)  # type: ignore[no-untyped-call]
    return exc


# -- 3. which errors pass by themselves ---------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "OOM command not allowed when used memory > 'maxmemory'.",
        "READONLY You can't write against a read only replica.",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.",
        "LOADING Redis is loading the dataset in memory",
        "MOVED 3999 127.0.0.1:6381",
        "ASK 3999 127.0.0.1:6381",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "NOSCRIPT No matching script. Please use EVAL.",
        "NOREPLICAS Not enough good replicas to write.",
        "UNBLOCKED force unblock from blocking operation, instance state changed",
    ],
)
def test_transient_replies_as_redis_py_parses_them(reply: str) -> None:
    """redis-py turns several replies into classes of their own and drops their prefix: each
    must still read as "wait and retry" (503, backoff), not as a bug (500, traceback)."""
    assert is_transient(parsed(reply)), type(parsed(reply))


@pytest.mark.parametrize(
    "reply", ["ERR unknown command 'X'", "WRONGTYPE Operation against a key", "NOPERM no"]
)
def test_other_replies_are_not_transient(reply: str) -> None:
    assert not is_transient(parsed(reply))
    assert not is_transient(redis.exceptions.ResponseError(reply))


# -- 4. blank API keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("keys", ['[""]', '["   "]', '["good-key", ""]', '["two words"]'])
def test_blank_api_keys_stop_start_up_instead_of_turning_auth_off(
    tmp_path: Path, keys: str
) -> None:
    """`api_keys = [""]` once read as "no keys" (auth off) and passed the public-bind check."""
    conf = tmp_path / "config.toml"
    conf.write_text(f'[http]\nhost = "0.0.0.0"\n[auth]\napi_keys = {keys}\n')
    with pytest.raises(config_mod.ConfigError, match=r"auth\.api_keys"):
        config_mod.load(conf, environ={})
    proc = subprocess.run(
        [sys.executable, "-m", "service", "--config", str(conf)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "auth.api_keys" in lines[0], lines


# -- 6. hostile headers and cursors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [b"Bearer \xff", b"Bearer \xc3\xa9t\xc3\xa9", b"Bearer " + KEY.encode() + b"\xff"],
)
async def test_non_ascii_authorization_is_403_not_500(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Path, value: bytes
) -> None:
    c = await aiohttp_client(create_app(keyed(redis_url, prefix, tmp_path), redis_url))
    status, body = await raw_request(
        c, b"GET /api/queues HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n\r\n"
    )
    assert status == 403, body
    assert json.loads(body)["error"]["code"] == "forbidden"
    async with c.get("/api/queues", headers=BEARER) as r:
        assert r.status == 200


@pytest.mark.parametrize(
    "cursor",
    [
        "nan:x",
        "inf-0:x",
        "1.5-0:x",
        "-1-0:x",
        "1-:x",
        "99999999999999999999-0:x",
        "1-99999999999999999999:x",
        "0x10-0:x",
        "\uff11-0:x",  # a full-width digit: str.isdigit() says yes, int() reads it
        "²-0:x",  # a superscript: str.isdigit() says yes, int() raises
    ],
)
async def test_bad_list_cursor_is_422_not_500(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Path, cursor: str
) -> None:
    c = await aiohttp_client(create_app(keyed(redis_url, prefix, tmp_path), redis_url))
    async with c.get("/api/jobs", params={"cursor": cursor}, headers=BEARER) as r:
        assert r.status == 422, await r.text()
        assert (await r.json())["error"]["path"] == "cursor"


@pytest.mark.parametrize("limit", ["²", "\uff11\uff10", "1e3", " 5", "5\n"])
async def test_bad_limit_is_422_not_500(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Path, limit: str
) -> None:
    c = await aiohttp_client(create_app(keyed(redis_url, prefix, tmp_path), redis_url))
    async with c.get("/api/jobs", params={"limit": limit}, headers=BEARER) as r:
        assert r.status == 422, await r.text()


async def test_list_cursor_pages_through_everything(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    app = create_app(keyed(redis_url, prefix, tmp_path), redis_url, task_registry())
    c = await aiohttp_client(app)
    jobs = await app[PRODUCER].submit_many([("t.noop", {}) for _ in range(7)])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        async with c.get("/api/jobs", params=params, headers=BEARER) as r:
            assert r.status == 200
            page = await r.json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next"]
        if not cursor:
            break
        ms, _, rest = cursor.partition("-")
        assert ms.isdigit() and ":" in rest  # <ms>-<seq>:<id>
    assert seen == [j.id for j in reversed(jobs)]


# -- 8. firehose resumed from an id the stream does not hold -------------------------------------


@pytest.mark.parametrize("where", ["future", "other deployment", "trimmed", "future, 2 partitions"])
async def test_firehose_resume_from_an_id_it_never_held_gets_snapshot_then_live(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Path, where: str
) -> None:
    """A Last-Event-ID from a wiped Redis, another deployment or the future used to give a
    silent 200: no snapshot, every live event dropped (they all sort before it)."""
    env = {"TIDINGS_JOBS_FIREHOSE_MAXLEN": "100"}
    if "2 partitions" in where:
        env["TIDINGS_REDIS_PARTITIONS"] = "2"
    app = create_app(keyed(redis_url, prefix, tmp_path, **env), redis_url, task_registry())
    c = await aiohttp_client(app)
    p = app[PRODUCER]
    first = await p.submit("t.noop", {})
    now_ms = int(time.time() * 1000)
    if where.startswith("future"):
        last = ",".join([f"{now_ms + 86_400_000}-0"] * p.keys.partitions)
    elif where == "other deployment":
        last = f"{now_ms - 60_000}-7"  # well-formed, recent, never written here
    else:
        old = (await p.events(first.id))[0].id.decode()
        await p.submit_many([("t.noop", {}) for _ in range(400)])
        assert (await p.redis.xrange(p.keys.fire(0), count=1))[0][0].decode() != old
        last = old
    async with c.get("/api/events", headers={**BEARER, "Last-Event-ID": last}) as r:
        assert r.status == 200

        async def listening() -> bool:
            return app[PRODUCER].hub.subscribers >= 1

        await eventually(listening, what="firehose watcher subscribed")
        probe = await p.submit("t.noop", {})
        got = await read_sse(r, until=lambda ev: any(probe.id in e.data for e in ev))
    assert got[0].event == "snapshot", [e.event for e in got[:3]]
    assert [json.loads(e.data)["job"] for e in got[1:]][-1] == probe.id


# -- 5. unbounded queue names ------------------------------------------------------------------------


@pytest.mark.timeout(600)
async def test_sixty_thousand_queue_names_are_refused_past_the_cap(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """One job each in 60,000 queue names used to create 60,000 queues (Redis looping over
    them every tick, /api/queues taking seconds). Past `jobs.max_queues` a new name is refused
    with 422; known queues still take jobs, and /api/queues stays small and fast."""
    app = create_app(keyed(redis_url, prefix, tmp_path), redis_url, task_registry())
    c = await aiohttp_client(app)
    p = app[PRODUCER]
    cap = app[PRODUCER].jobs_config.max_queues
    assert cap == 100  # the default
    # a queue another process registered (a worker's, say) must stay usable when full
    elsewhere = Queues(p.redis, p.keys, p.ops, cap=cap)
    await elsewhere.ensure("theirs")
    outcome = {"accepted": 0, "refused": 0}

    async def one(i: int) -> None:
        try:
            await p.submit("t.noop", {}, queue=f"q{i}")
            outcome["accepted"] += 1
        except Invalid as e:
            assert "max_queues" in e.message and e.path == "$.queue", e.message
            outcome["refused"] += 1

    for start in range(0, 60_000, 20):  # 20 at a time: the app's pool has 20 connections
        await asyncio.gather(*(one(i) for i in range(start, start + 20)))
    assert outcome == {"accepted": cap - 1, "refused": 60_000 - cap + 1}
    assert await p.redis.hlen(p.keys.queues()) == cap
    async with c.post(
        "/api/jobs", json={"task": "t.noop", "payload": {}, "queue": "one-more"}, headers=BEARER
    ) as r:
        assert r.status == 422 and (await r.json())["error"]["path"] == "$.queue"
    for known in ("q0", "theirs"):
        async with c.post(
            "/api/jobs", json={"task": "t.noop", "payload": {}, "queue": known}, headers=BEARER
        ) as r:
            assert r.status == 201, await r.text()
    t0 = time.perf_counter()
    async with c.get("/api/queues", headers=BEARER) as r:
        body = await r.read()
    elapsed = time.perf_counter() - t0
    assert len(json.loads(body)["queues"]) == cap
    assert elapsed < 1.0 and len(body) < 50_000, (elapsed, len(body))


async def test_idle_queues_cost_the_workers_nothing(
    redis_url: str, prefix: str, stack_factory: Callable[..., Stack]
) -> None:
    """Maintenance once looped over every queue name in one script call per tick (230 ms with
    60k names, from every worker). Promotion now reads a per-partition `due` set: with 20,000
    queues holding far-off scheduled jobs (no cap), a tick costs the workers a handful of
    commands (counted by Redis itself, so the machine's load does not matter), and a job that
    falls due among them is promoted on time."""
    cfg = make_config(redis_url, prefix, TIDINGS_JOBS_MAX_QUEUES="0")
    async with Producer.from_url(redis_url, config=cfg, registry=task_registry()) as p:
        from service.producer import SubmitRequest

        r = p.redis
        # set up in bulk (registering 20,000 names one call at a time is not what is tested)
        names = [f"idle{i}" for i in range(20_000)]
        await r.script_load(p.ops.register_queue("x", 0, b"").script.source)
        async with r.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.evalsha(*p.ops.register_queue(n, 0, b"{}").command())
            await pipe.execute()
        for i in range(0, len(names), 100):
            news = [
                await p._prepare(SubmitRequest(task="t.noop", payload={}, queue=n, delay_s=3600))
                for n in names[i : i + 100]
            ]
            await p.ops.submit(0, news).run(r)
        assert (await p.queues())["idle19999"].scheduled == 1
        st = stack_factory(redis_url, TIDINGS_WORKERS_POLL_S="0.05", TIDINGS_JOBS_MAX_QUEUES="0")
        await st.start_workers(2)
        soon = await p.submit("t.noop", {}, delay_s=0.5)
        done = await p.wait(soon.id, timeout=20)
        assert done.state == "succeeded"
        events = await p.events(soon.id)  # scheduled, queued (promoted), started, succeeded
        assert events[1].key[0] - events[0].key[0] < 500 + 2000, [e.id for e in events]
        # the workers' start-up sweep (once a minute) is behind us: count what a tick costs
        z0, c0 = await zrange_calls(r), await all_calls(r)

        async def ticks() -> bool:
            return await zrange_calls(r) - z0 >= 40

        await eventually(ticks, timeout=30, what="maintenance ticks")
        calls, ticked = await all_calls(r) - c0, await zrange_calls(r) - z0
        per_tick = calls / ticked
        assert per_tick < 50, per_tick  # was over 20,000 (one ZRANGEBYSCORE per queue)


async def all_calls(r: Any) -> int:
    """Commands Redis ran so far (those run inside scripts included)."""
    stats = await r.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


async def zrange_calls(r: Any) -> int:
    """ZRANGEBYSCORE calls so far (the workers' promote reads the due set with it)."""
    stats = await r.info("commandstats")
    return int(stats.get("cmdstat_zrangebyscore", {}).get("calls", 0))
