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
from service.http.state import PRODUCER
from service.producer import Producer
from tests.conftest import make_config, task_registry
from tests.helpers import ROOT, Stack, eventually, read_sse, worker_children

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


# -- 9. a mixed worker fleet ---------------------------------------------------------------------


@pytest.mark.e2e
async def test_a_mixed_fleet_runs_every_job_and_fails_none(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    """Worker A lacks the task `x.only_b`, worker B has it, both consume its queue. A used to
    fail such jobs at once (UnknownTask, no retry): a third of the jobs dead-lettered. Now A
    puts them aside (still queued, one `queued` event saying why) and B runs them all. A
    producer that does not import the task learns its limits and queue from the catalog B
    publishes, and refuses a name no one has."""
    st = stack_factory(redis_url, TIDINGS_WORKERS_POLL_S="0.05")
    queues = ["--queues", "default,xq"]
    a = await st.start_workers(1, "--tasks", "tests.tasks", *queues)
    b = await st.start_workers(
        1, "--tasks", "tests.tasks", "tests.tasks_extra", *queues, wait=False
    )
    p = await st.producer()  # imports tests.tasks and workers.demo, not tests.tasks_extra

    async def both() -> bool:
        return len(await p.queries.workers()) == 2

    await eventually(both, timeout=20, what="both workers registered")
    (b_pid,) = worker_children(b)
    first = await p.submit("x.only_b", {})
    assert (first.queue, first.max_attempts, first.timeout_s) == ("xq", 5, 30.0)
    with pytest.raises(Invalid, match="unknown task"):
        await p.submit("x.nobody", {})
    jobs = [first, *await p.submit_many([("x.only_b", {}) for _ in range(39)])]
    others = await p.submit_many([("t.noop", {}) for _ in range(40)])
    for j in jobs + others:
        done = await p.wait(j.id, timeout=90)
        assert done.state == "succeeded", (j.id, done.state, done.error)
    for j in jobs:
        assert (await p.get(j.id)).result == b_pid
        types = [e.type for e in await p.events(j.id)]
        assert "failed" not in types and "retrying" not in types, types
        assert types.count("queued") <= 2 and types[-2:] == ["started", "succeeded"], types
    # A did meet them, and said so once per job at most
    deferred = [
        e.body for j in jobs for e in await p.events(j.id) if b"waiting for a worker" in e.body
    ]
    assert deferred, "worker A never fetched an x.only_b job: the test proved nothing"
    assert a.poll() is None and b.poll() is None


# -- 10. a process started from another directory ---------------------------------------------------


def spawn(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@pytest.mark.e2e
async def test_embedded_workers_from_another_directory_attach_or_refuse(
    tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `redis.url = "embedded"`, `python -m workers` run outside the directory of the
    running server used to start a second, empty server and wait there for good. It now
    attaches to the running one (found through the user-wide record), or, with none running,
    refuses in one line with exit status 2 and starts nothing; `Producer.from_url("embedded")`
    finds it too."""
    from service.core.embedded import free_port

    app_dir, elsewhere, xdg, empty = (tmp_path / d for d in ("app", "elsewhere", "xdg", "none"))
    for d in (app_dir, elsewhere, xdg, empty):
        d.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "XDG_RUNTIME_DIR": str(xdg),  # never the user's own record
        "TIDINGS_CONFIG": os.devnull,  # defaults: redis.url = "embedded", embedded_dir = "var"
        "TIDINGS_REDIS_PREFIX": prefix,
        "TIDINGS_HTTP_PORT": str(port),
        "TIDINGS_WORKERS_TASKS": "tests.tasks",
        "TIDINGS_LOG_FORMAT": "json",
    }
    env.pop("TIDINGS_REDIS_URL", None)
    service = spawn([sys.executable, "-m", "service"], app_dir, env, tmp_path / "service.log")
    workers: subprocess.Popen[bytes] | None = None
    try:
        base = f"http://127.0.0.1:{port}"

        async def up() -> bool:
            assert service.poll() is None, (tmp_path / "service.log").read_text()
            try:
                async with aiohttp.ClientSession() as s, s.get(base + "/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(up, timeout=30, what="service with its embedded server")
        assert (xdg / "tidings" / "embedded.json").exists()
        # no server running for this user: refuse loudly, start nothing
        refused = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "workers", "--processes", "1"],
            cwd=elsewhere,
            env={**env, "XDG_RUNTIME_DIR": str(empty)},
            capture_output=True,
            timeout=60,
        )
        assert refused.returncode == 2, refused.stderr[-2000:]
        lines = refused.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "embedded" in lines[0], lines
        assert not (elsewhere / "var").exists()
        # the running one: attach
        workers = spawn(
            [sys.executable, "-m", "workers", "--processes", "1"],
            elsewhere,
            env,
            tmp_path / "workers.log",
        )
        async with aiohttp.ClientSession() as s:

            async def attached() -> bool:
                async with s.get(base + "/api/workers") as r:
                    return len((await r.json())["workers"]) == 1

            await eventually(attached, timeout=30, what="workers attached to the running server")
            async with s.post(base + "/api/jobs", json={"task": "t.noop", "payload": {}}) as r:
                assert r.status == 201
                job_id = (await r.json())["id"]
        assert not (elsewhere / "var").exists(), "a second server was started"
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
        monkeypatch.chdir(elsewhere)
        cfg = config_mod.load(os.devnull, environ={"TIDINGS_REDIS_PREFIX": prefix})
        async with Producer.from_url("embedded", config=cfg) as p:
            assert (await p.wait(job_id, timeout=30)).state == "succeeded"
    finally:
        if workers is not None:
            stop(workers)
        stop(service)


# -- 11. metrics, proxies, logs, tokens -------------------------------------------------------------


async def test_metrics_needs_a_key_only_when_configured(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    public = await aiohttp_client(create_app(keyed(redis_url, prefix, tmp_path), redis_url))
    async with public.get("/metrics") as r:
        assert r.status == 200  # http.metrics_public = true (the default): scrapers need no key
    closed = await aiohttp_client(
        create_app(
            keyed(redis_url, prefix, tmp_path, TIDINGS_HTTP_METRICS_PUBLIC="false"), redis_url
        )
    )
    async with closed.get("/metrics") as r:
        assert r.status == 401
    async with closed.get("/metrics", headers=BEARER) as r:
        assert r.status == 200 and "tidings_" in await r.text()


@pytest.mark.parametrize("trust", [True, False])
async def test_session_cookie_is_secure_behind_a_trusted_tls_proxy(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Path, trust: bool
) -> None:
    """Behind the documented TLS proxy `request.secure` is false, so the cookie never got
    `Secure`. With `http.trust_proxy` the proxy's X-Forwarded-Proto decides; without it, a
    client cannot claim https by sending the header itself."""
    cfg = keyed(redis_url, prefix, tmp_path, TIDINGS_HTTP_TRUST_PROXY=str(trust).lower())
    c = await aiohttp_client(create_app(cfg, redis_url))
    async with c.post(
        "/api/session", json={"key": KEY}, headers={"X-Forwarded-Proto": "https"}
    ) as r:
        assert r.status == 200
        cookie = r.headers["Set-Cookie"]
    assert ("Secure" in cookie) is trust, cookie
    async with c.post("/api/session", json={"key": KEY}) as r:
        assert "Secure" not in r.headers["Set-Cookie"]  # plain http through the proxy


async def test_sign_in_limit_is_per_client_behind_a_trusted_proxy(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """Every user behind a proxy shares its address: one user guessing keys must not lock the
    others out. With `http.trust_proxy` the limit is per X-Forwarded-For client (last hop)."""
    for trust in (True, False):
        cfg = keyed(redis_url, prefix, tmp_path, TIDINGS_HTTP_TRUST_PROXY=str(trust).lower())
        c = await aiohttp_client(create_app(cfg, redis_url))
        for _ in range(5):  # the budget is per second: retry if a second boundary split it
            second = int(time.time())
            statuses = []
            for _ in range(8):
                async with c.post(
                    "/api/session",
                    json={"key": "wrong"},
                    headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.1"},
                ) as r:
                    statuses.append(r.status)
            async with c.post(
                "/api/session", json={"key": "wrong"}, headers={"X-Forwarded-For": "203.0.113.2"}
            ) as r:
                other = r.status
            if int(time.time()) == second:
                break
        assert 429 in statuses, statuses
        assert other == (403 if trust else 429), (trust, other)


@pytest.mark.e2e
async def test_malformed_request_is_logged_without_its_bytes(
    redis_url: str, stack_factory: Callable[..., Stack]
) -> None:
    """aiohttp logged a malformed request with its first bytes, which can be an Authorization
    header: the line stays, the bytes go."""
    st = stack_factory(redis_url, TIDINGS_AUTH_API_KEYS=KEY)
    await st.start_service()
    secret = "s3cr3t-" + "q" * 20
    reader, writer = await asyncio.open_connection("127.0.0.1", st.port)
    writer.write(
        b"GET /api/queues HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + secret.encode()
        + b"x" * 9000
        + b"\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.read(200), 10)
    writer.close()
    assert head.split(b" ")[1] == b"400", head

    async def logged() -> bool:
        return "aiohttp.server" in st.log("service")

    await eventually(logged, what="the bad request logged")
    text = st.log("service")
    assert "s3cr3t" not in text, text[-1500:]
    assert "bad HTTP request from a client: LineTooLong" in text


async def test_watch_tokens_parse_strictly(
    aiohttp_client: MakeClient, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """A token's expiry is hex as written; `0x…`, `+…`, `_`, upper case or spaces once parsed
    to the same number: a token could be rewritten (not forged) into another that passed."""
    app = create_app(keyed(redis_url, prefix, tmp_path), redis_url, task_registry())
    c = await aiohttp_client(app)
    async with c.post("/api/jobs", json={"task": "t.noop", "payload": {}}, headers=BEARER) as r:
        job = await r.json()
    token = str(job["status_url"]).split("token=")[1]
    exp, mac = token.split(".")
    path = f"/api/jobs/{job['id']}"
    async with c.get(path, params={"token": token}) as r:
        assert r.status == 200
    rewrites = ["0x" + exp, "+" + exp, exp[:2] + "_" + exp[2:], exp.upper(), " " + exp, exp + " "]
    for bad in rewrites:
        assert int(bad.strip(), 16) == int(exp, 16)  # the same number to a lenient parser
        async with c.get(path, params={"token": f"{bad}.{mac}"}) as r:
            assert r.status == 403, (bad, r.status)


async def test_lean_client_first_calls_all_get_the_new_connection(redis_url: str) -> None:
    """Calls made while the lean client connects, one per loop turn: one of them comes in the
    turn the connection is made, before its callback ran (it was failed "connection lost",
    a 503 for the first SSE requests after a start)."""
    from service.core.resp import FastRedis

    for _ in range(10):
        r = FastRedis(redis_url)
        calls: list[asyncio.Future[Any]] = []
        for _turn in range(300):
            calls.append(asyncio.ensure_future(r.execute_command("PING")))
            await asyncio.sleep(0)
        replies = await asyncio.gather(*calls, return_exceptions=True)
        await r.aclose()
        assert replies == [b"PONG"] * len(calls)


async def test_lean_client_closed_while_connecting_leaves_no_socket(redis_url: str) -> None:
    """A caller cancelled while the connection is being made, then the client closed: the
    connection made meanwhile is closed too (it was left open, a ResourceWarning later)."""
    import redis.asyncio as aioredis

    from service.core.resp import FastRedis

    probe = aioredis.Redis.from_url(redis_url)
    before = (await probe.info("clients"))["connected_clients"]
    r = FastRedis(redis_url)
    call = asyncio.ensure_future(r.execute_command("PING"))
    await asyncio.sleep(0)
    call.cancel()
    await asyncio.sleep(0.2)  # the connection is made meanwhile
    await r.aclose()

    async def none_left() -> bool:
        return bool((await probe.info("clients"))["connected_clients"] <= before)

    await eventually(none_left, timeout=5)
    await probe.aclose()
