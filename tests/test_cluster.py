"""Past one machine, on real servers: the end-to-end behaviours on a single Redis, a 3+3 Redis
Cluster (16 partitions) and a Sentinel set, with real service and worker processes; then the
faults: a master SIGKILLed mid-run (cluster and Sentinel) and a slot migration under load,
with a few hundred jobs, SSE watchers and readers, every HTTP answer recorded.

The clusters and sentinel sets are the session's (conftest `topologies`), shared with
tests/test_topology.py; a test that breaks one heals it before it ends. One service and one
worker supervisor per deployment serve the end-to-end tests of this module (module-scoped, on
the module's event loop); each fault test starts its own, with `redis.wait_replicas = 1`.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import time
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import pytest
import pytest_asyncio

from service.core.keys import Keys
from service.core.states import TERMINAL
from service.core.wire import event_key
from service.producer import Producer
from tests.conftest import (
    Topologies,
    healed_cluster,
    healed_sentinels,
    make_config,
    task_registry,
)
from tests.helpers import Stack, eventually, read_sse, worker_children
from tests.load import Load, Report
from tests.topology import Cluster, SentinelSet, call

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="module"),
    # redis-py 8.1 drops Connection objects of nodes that left the topology without closing
    # them (see `no_leaked_connections`); the garbage collector may find them mid-test
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

PARTITIONS = 16
FAST = {
    "TIDINGS_JOBS_LEASE_S": "4",
    "TIDINGS_JOBS_BACKOFF_BASE_S": "0.05",
    "TIDINGS_WORKERS_POLL_S": "0.1",
    "TIDINGS_WORKERS_CONCURRENCY": "24",
}


@pytest.fixture(autouse=True)
def no_leaked_connections() -> Iterator[None]:
    """redis-py 8.1's cluster and Sentinel clients drop the Connection objects of a node that
    left the topology (a killed master, a moved slot) without closing them; their `__del__`
    closes the socket and warns. Collected here, with that warning ignored, so that it is not
    raised (filterwarnings = error) in whatever test the garbage collector happens to run in
    later. The service and worker processes live with it (the socket is closed either way)."""
    yield
    collect_leaked_connections()


@pytest.fixture(scope="module", autouse=True)
def no_leaked_connections_after_the_loop() -> Iterator[None]:
    """The same once the module's event loop is closed (set up before it, torn down after):
    what the closed loop still referenced is garbage only now."""
    yield
    collect_leaked_connections()


def collect_leaked_connections() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@dataclass
class Deployment:
    """Where a stack points: a URL and the settings that say what kind of Redis it is."""

    name: str
    url: str
    env: dict[str, str]
    cluster: Cluster | None = None
    sentinels: SentinelSet | None = None
    partitions: int = 1


def cluster_deployment(c: Cluster, **env: str) -> Deployment:
    base = {
        "TIDINGS_REDIS_CLUSTER": "true",
        "TIDINGS_REDIS_PARTITIONS": str(PARTITIONS),
        "TIDINGS_REDIS_WAIT_REPLICAS": "1",
    }
    return Deployment("cluster", c.url, {**base, **env}, cluster=c, partitions=PARTITIONS)


def sentinel_deployment(s: SentinelSet, **env: str) -> Deployment:
    base = {
        "TIDINGS_REDIS_SENTINELS": ",".join(f"{h}:{p}" for h, p in s.sentinels),
        "TIDINGS_REDIS_SENTINEL_MASTER": s.master_name,
        "TIDINGS_REDIS_PARTITIONS": "4",
        "TIDINGS_REDIS_WAIT_REPLICAS": "1",
    }
    # redis.url only carries credentials and db here: the sentinels name the primary
    url = "redis://127.0.0.1:1/0"
    return Deployment("sentinel", url, {**base, **env}, sentinels=s, partitions=4)


@pytest.fixture(scope="module", params=["single", "cluster", "sentinel"])
def deployment(
    request: pytest.FixtureRequest, topologies: Topologies, server_pool: Callable[[str], Any]
) -> Deployment:
    if request.param == "single":
        url = server_pool("redis").url
        return Deployment("single", url, {"TIDINGS_REDIS_PARTITIONS": "4"}, partitions=4)
    if request.param == "cluster":
        return cluster_deployment(healed_cluster(topologies.cluster("redis")))
    return sentinel_deployment(healed_sentinels(topologies.sentinel("redis")))


async def start_stack(dep: Deployment, logdir: Path, *, workers: int = 2) -> tuple[Stack, Any]:
    st = Stack(
        url=dep.url,
        prefix="t" + uuid.uuid4().hex[:12],
        logdir=logdir,
        env={**FAST, **dep.env},
    )
    await st.start_service()
    sup = await st.start_workers(workers)
    return st, sup


@dataclass
class Running:
    """A stack and its worker supervisor."""

    st: Stack
    sup: Any


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    """The service and 2 worker processes on the deployment, shared by the module's tests,
    the fault tests included: the same processes live through every fault."""
    st, sup = await start_stack(deployment, tmp_path_factory.mktemp(f"stack-{deployment.name}"))
    try:
        yield Running(st, sup)
    finally:
        await st.close()
        collect_leaked_connections()


@pytest.fixture
def stack(running: Running) -> Stack:
    return running.st


async def submit(s: aiohttp.ClientSession, st: Stack, body: dict[str, Any]) -> dict[str, Any]:
    async with s.post(st.http + "/api/jobs", json=body) as r:
        assert r.status == 201, await r.text()
        job: dict[str, Any] = await r.json()
        return job


async def get_json(s: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with s.get(url, headers={"Accept": "application/json"}) as r:
        assert r.status == status, await r.text()
        return await r.json()


async def job_state(s: aiohttp.ClientSession, st: Stack, job_id: str, state: str) -> None:
    async def check() -> bool:
        return bool((await get_json(s, f"{st.http}/api/jobs/{job_id}"))["state"] == state)

    await eventually(check, timeout=20, what=f"{job_id} {state}")


# ---------------------------------------------------------------------------------------------
# end to end, on each deployment


async def test_submit_progress_resume_over_http(stack: Stack, deployment: Deployment) -> None:
    async with aiohttp.ClientSession() as s:
        job = await submit(s, stack, {"task": "t.steps", "payload": {"n": 8, "delay": 0.05}})
        url = str(job["events_url"])
        async with s.get(url) as r:
            assert r.status == 200
            first = await read_sse(r, until=lambda ev: sum(e.event == "progress" for e in ev) >= 3)
        async with s.get(url, headers={"Last-Event-ID": str(first[-1].id)}) as r:
            second = await read_sse(r)
        got = [(e.id, e.event) for e in first + second]
        assert [t for _, t in got] == ["queued", "started", *["progress"] * 8, "succeeded"]
        stored = await get_json(s, f"{stack.http}/api/jobs/{job['id']}/events")
        assert [(e["id"], e["event"]) for e in stored] == got
        assert json.loads(second[-1].data)["result"] == {"n": 8, "attempt": 1}
        async with s.get(url, headers={"Last-Event-ID": str(got[-1][0])}) as r:
            assert r.status == 204

        # many jobs over every partition (on a cluster: every master), through the batch API
        async with s.post(
            stack.http + "/api/jobs/batch",
            json={"jobs": [{"task": "t.steps", "payload": {"n": 2, "delay": 0.01}}] * 48},
        ) as r:
            assert r.status == 201, await r.text()
            batch = [j["id"] for j in (await r.json())["jobs"]]
        keys = Keys(stack.prefix, deployment.partitions)
        assert len({keys.partition(j) for j in batch}) >= min(deployment.partitions, 4)
        p = await stack.producer()
        for j in batch:
            assert (await p.wait(j, timeout=30)).state == "succeeded"
        # the read API spans partitions (one read per slot)
        listed = await get_json(s, f"{stack.http}/api/jobs?limit=100&state=succeeded")
        assert set(batch) <= {j["id"] for j in listed["jobs"]}
        queues = {q["name"]: q for q in (await get_json(s, f"{stack.http}/api/queues"))["queues"]}
        assert queues["default"]["workers"] == 2
        assert queues["default"]["queued"] == 0
        workers = await get_json(s, f"{stack.http}/api/workers")
        assert len(workers["workers"]) == 2
        tasks = await get_json(s, f"{stack.http}/api/tasks")
        assert "t.steps" in json.dumps(tasks)


async def test_cancel_queued_and_running(stack: Stack) -> None:
    async with aiohttp.ClientSession() as s:
        later = await submit(s, stack, {"task": "t.steps", "payload": {}, "delay_s": 60})
        async with s.post(f"{stack.http}/api/jobs/{later['id']}/cancel") as r:
            assert r.status == 200 and (await r.json())["state"] == "cancelled"
        running = await submit(s, stack, {"task": "t.sleep", "payload": {"seconds": 60}})
        await job_state(s, stack, running["id"], "running")
        async with s.post(f"{stack.http}/api/jobs/{running['id']}/cancel") as r:
            assert r.status == 202
        await job_state(s, stack, running["id"], "cancelled")
        async with s.post(f"{stack.http}/api/jobs/{running['id']}/cancel") as r:
            assert r.status == 409
        async with s.get(str(running["events_url"])) as r:
            events = [e.event for e in await read_sse(r)]
        assert events[0] == "queued" and events[-1] == "cancelled"
        assert sum(e in TERMINAL for e in events) == 1


async def test_failure_dead_letter_and_retry(stack: Stack) -> None:
    async with aiohttp.ClientSession() as s:
        job = await submit(
            s, stack, {"task": "t.fail", "payload": {"message": "nope"}, "max_attempts": 2}
        )
        await job_state(s, stack, job["id"], "failed")
        dead = await get_json(s, f"{stack.http}/api/queues/default/dead")
        assert job["id"] in {j["id"] for j in dead["jobs"]}
        async with s.post(f"{stack.http}/api/jobs/{job['id']}/retry") as r:
            assert r.status == 200, await r.text()
        await job_state(s, stack, job["id"], "failed")
        events = await get_json(s, f"{stack.http}/api/jobs/{job['id']}/events")
        kinds = Counter(e["event"] for e in events)
        assert kinds["failed"] == 2 and kinds["retrying"] == 2 and kinds["started"] == 4
        async with s.post(f"{stack.http}/api/jobs/{job['id']}/retry") as r:
            assert r.status == 200
        async with s.post(f"{stack.http}/api/jobs/{job['id']}/retry") as r:
            assert r.status in (200, 409)  # queued again (or already running): not retryable


async def test_firehose_spans_partitions_and_resumes(stack: Stack, deployment: Deployment) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{stack.http}/api/events?task=t.noop") as fire:
            assert fire.status == 200
            ids = [
                (await submit(s, stack, {"task": "t.noop", "payload": {}}))["id"] for _ in range(12)
            ]
            seen = await read_sse(
                fire, until=lambda ev: sum(e.event == "succeeded" for e in ev) >= len(ids)
            )
        assert {json.loads(e.data)["job"] for e in seen if e.event == "succeeded"} == set(ids)
        last = seen[-1].id
        assert last is not None and len(last.split(",")) == deployment.partitions
        # per partition the positions only move forward
        positions = [e.id.split(",") for e in seen if e.id]
        for a, b in itertools.pairwise(positions):
            assert all(
                event_key(y.encode()) >= event_key(x.encode()) for x, y in zip(a, b, strict=True)
            )
        # resume from the last id: exactly the events written since, nothing before
        more = [(await submit(s, stack, {"task": "t.noop", "payload": {}}))["id"] for _ in range(6)]
        p = await stack.producer()
        for j in more:
            await p.wait(j, timeout=20)
        async with s.get(
            f"{stack.http}/api/events?task=t.noop", headers={"Last-Event-ID": last}
        ) as fire:
            resumed = await read_sse(
                fire, until=lambda ev: sum(e.event == "succeeded" for e in ev) >= len(more)
            )
        assert {json.loads(e.data)["job"] for e in resumed} == set(more)
        assert [e.event for e in resumed if e.event == "snapshot"] == []


# ---------------------------------------------------------------------------------------------
# the cluster itself


async def test_partitions_spread_evenly_over_three_masters(topologies: Topologies) -> None:
    c = healed_cluster(topologies.cluster("redis"))
    ranges = c.slot_map()

    def master(slot: int) -> int:
        return next(r.port for r in ranges if r.start <= slot <= r.end)

    keys = Keys("tidings", PARTITIONS)
    per_master = Counter(master(keys.slot(k)) for k in range(PARTITIONS))
    print(f"\n16 partitions over 3 masters: {sorted(per_master.values())}")
    assert len(per_master) == 3
    assert max(per_master.values()) - min(per_master.values()) <= 1
    # the naive tags would not: {tidings:0}..{tidings:15}
    naive = Counter(master(c.keyslot(f"{{tidings:{k}}}")) for k in range(PARTITIONS))
    assert max(naive.values()) - min(naive.values()) > 1


async def test_valkey_cluster_smoke(topologies: Topologies, tmp_path: Path) -> None:
    dep = cluster_deployment(healed_cluster(topologies.cluster("valkey")))
    st, _ = await start_stack(dep, tmp_path, workers=1)
    try:
        async with aiohttp.ClientSession() as s:
            job = await submit(s, st, {"task": "t.steps", "payload": {"n": 3, "delay": 0.01}})
            async with s.get(str(job["events_url"])) as r:
                events = await read_sse(r)
            kinds = [e.event for e in events]
            # progress may be coalesced under load; the last value never is
            assert kinds[:2] == ["queued", "started"] and kinds[-1] == "succeeded", kinds
            assert set(kinds[2:-1]) == {"progress"}
            assert json.loads(events[-2].data)["current"] == 3
        p = await st.producer()
        jobs = await p.submit_many([("t.steps", {"n": 1, "delay": 0}) for _ in range(32)])
        for j in jobs:
            assert (await p.wait(j.id, timeout=30)).state == "succeeded"
    finally:
        await st.close()


async def test_durable_submit_follows_noscript_moved_and_ask(topologies: Topologies) -> None:
    """wait_replicas = 1 on a cluster: the script and its WAIT on one connection of the right
    node, through an empty script cache, a slot moved behind the client's back (MOVED) and a
    slot mid-migration (ASK, then TRYAGAIN until the move ends)."""
    c = healed_cluster(topologies.cluster("redis"))
    cfg = make_config(
        c.url,
        "t" + uuid.uuid4().hex[:12],
        TIDINGS_REDIS_CLUSTER="true",
        TIDINGS_REDIS_PARTITIONS=str(PARTITIONS),
        TIDINGS_REDIS_WAIT_REPLICAS="1",
    )
    keys = Keys(cfg.redis.prefix, PARTITIONS)

    async def submit_to(p: Producer, k: int) -> str:
        while True:
            job = await p.submit("t.noop", {})
            if keys.partition(job.id) == k:
                return job.id

    async with Producer.from_url(c.url, config=cfg, registry=task_registry()) as p:
        await p.submit("t.noop", {})
        for m in c.masters():
            call(m.port, "SCRIPT", "FLUSH")
        await submit_to(p, 0)
        slot = keys.slot(3)
        home = c.master_for_slot(slot)
        other = next(m for m in c.masters() if m is not home)
        try:
            c.move_slot(slot, other)  # the client still sends partition 3 to `home`
            moved = await submit_to(p, 3)
            assert c.master_for_key(keys.job(moved)) is other
            c.move_slot(slot, home, finish=False)  # half-way back: ASK, TRYAGAIN
            pending = asyncio.create_task(submit_to(p, 3))
            await asyncio.sleep(0.3)
            c.move_slot(slot, home)
            asked = await pending
        finally:
            c.move_slot(slot, home)
        assert c.master_for_key(keys.job(asked)) is home
        assert p.durability.unreplicated == 0  # every WAIT counted the script's own write
        assert (await p.get(asked)).state == "queued"


# ---------------------------------------------------------------------------------------------
# faults


@dataclass
class Pids:
    service: int
    workers: list[int] = field(default_factory=list)


def pids_of(st: Stack, sup: Any) -> Pids:
    assert st.service is not None
    return Pids(st.service.pid, sorted(worker_children(sup)))


async def run_through(
    st: Stack,
    sup: Any,
    fault: Callable[[], Any],
    *,
    jobs: int = 300,
    rate: float = 60.0,
    fault_after: int = 90,
) -> tuple[Report, float]:
    """Load on a running stack; `fault()` (run in a thread) once `fault_after` jobs were
    accepted; returns the checked report and when the fault began."""
    before = pids_of(st, sup)
    # the test's own clients are made after the fault (see `no_leaked_connections`)
    await st.close_producer()
    # enough submitters that the rate holds while a master without replica makes every
    # submit to its slots wait out the WAIT timeout
    load = Load(st.http, jobs=jobs, rate=rate, submitters=32, watch_every=10)
    try:
        await load.start()
        await load.wait_accepted(fault_after)
        t_fault = time.monotonic()
        await asyncio.to_thread(fault)
        await load.finished(timeout=120)
        report = await load.check(await st.producer(), timeout=90)
    finally:
        await load.close()
        await st.close_producer()
    # nothing was restarted: the same service and worker processes did all of it
    assert st.service is not None and st.service.poll() is None, st.log("service")
    assert pids_of(st, sup) == before, st.log("workers-0")
    return report, t_fault


def summary(name: str, rep: Report, t_fault: float) -> str:
    first_503, back = rep.window(t_fault)
    return (
        f"\n{name}: accepted {len(rep.accepted)}, states {dict(rep.states)}, "
        f"retried {rep.retried}, watchers {len(rep.watched)}, "
        f"submit answers {dict(rep.statuses('submit'))}, "
        f"reads {dict(rep.statuses('queues') + rep.statuses('list') + rep.statuses('get'))}, "
        f"window: first 503 at +{first_503}s, first 201 after at +{back}s"
    )


@pytest.mark.parametrize("deployment", ["cluster"], indirect=True)
async def test_cluster_master_killed_mid_run(deployment: Deployment, running: Running) -> None:
    c = deployment.cluster
    assert c is not None
    healed_cluster(c)
    # not the node redis.url names: a process starting while that node is down cannot learn
    # the cluster from it (the running ones know every node)
    victim = next(m for m in c.masters() if m.port != urlparse(deployment.url).port)

    def kill() -> None:
        c.kill(victim)
        c.wait_failover(victim, 20)

    try:
        rep, t_fault = await run_through(running.st, running.sup, kill)
        print(summary("cluster master SIGKILL", rep, t_fault))
        problems = rep.problems()
        assert not problems, "\n".join(problems)
        # the killed master comes back as a replica of its successor; work goes on
        await asyncio.to_thread(healed_cluster, c)
        assert victim.role == "slave"
        await all_succeed(running.st, 32)
    finally:
        healed_cluster(c)


@pytest.mark.parametrize("deployment", ["sentinel"], indirect=True)
async def test_sentinel_primary_killed_mid_run(deployment: Deployment, running: Running) -> None:
    s = deployment.sentinels
    assert s is not None
    healed_sentinels(s)

    def kill() -> None:
        old = s.kill_master()
        s.wait_failover(old, 20)

    try:
        rep, t_fault = await run_through(running.st, running.sup, kill)
        print(summary("sentinel primary SIGKILL", rep, t_fault))
        problems = rep.problems()
        assert not problems, "\n".join(problems)
        await asyncio.to_thread(healed_sentinels, s)
        await all_succeed(running.st, 16)
    finally:
        healed_sentinels(s)


@pytest.mark.parametrize("deployment", ["cluster"], indirect=True)
async def test_slot_migration_under_load(deployment: Deployment, running: Running) -> None:
    c = deployment.cluster
    assert c is not None
    healed_cluster(c)
    keys = Keys(running.st.prefix, PARTITIONS)
    src = c.master_for_slot(0)
    dst = next(m for m in c.masters() if m is not src)
    # the lowest 1100 slots hold partition 0 (its tag sits near slot 512)
    moved = 1100
    assert keys.slot(0) < moved and c.master_for_slot(keys.slot(0)) is src

    def reshard() -> None:
        c.reshard(src, dst, moved)

    try:
        rep, t_fault = await run_through(running.st, running.sup, reshard, jobs=200)
        print(summary("reshard of 1100 slots", rep, t_fault))
        problems = rep.problems()
        assert not problems, "\n".join(problems)
        assert c.master_for_slot(keys.slot(0)) is dst
        await all_succeed(running.st, 16)
    finally:
        if c.master_for_slot(0) is not src:
            await asyncio.to_thread(c.reshard, dst, src, moved)
        healed_cluster(c)


async def all_succeed(st: Stack, n: int) -> None:
    p = await st.producer()
    for j in await p.submit_many([("t.steps", {"n": 1, "delay": 0}) for _ in range(n)]):
        assert (await p.wait(j.id, timeout=30)).state == "succeeded"
