"""The topology fixtures work: a real 3+3 Redis Cluster and a real Sentinel set, on Redis 7 and
Valkey 9, behave as redis-py 8.1 clients need (failover, rejoin, resharding, sentinel
discovery). The fixtures are session-scoped (conftest): one cluster and one sentinel set per
server kind, shared by every test (and by tests/test_cluster.py); a test that breaks one leaves
it healthy again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import AskError, ConnectionError, MovedError, RedisClusterException

from tests.conftest import healed_cluster, healed_sentinels
from tests.topology import (
    Cluster,
    Node,
    SentinelSet,
    call_many,
    cut_replication,
    info,
    restore_replication,
)

pytestmark = pytest.mark.e2e


# ---------------------------------------------------------------------------------------------
# fixtures: `cluster` and `sentinel_set` (session-scoped, one per server kind) are in conftest


@pytest.fixture
def healthy(cluster: Cluster) -> Cluster:
    """The session cluster, with every node running and every replica synced."""
    return healed_cluster(cluster)


@pytest.fixture
async def rc(healthy: Cluster) -> AsyncIterator[RedisCluster]:
    """An async cluster client with default settings."""
    client = RedisCluster.from_url(healthy.url)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def sentinels(sentinel_set: SentinelSet) -> SentinelSet:
    """The session sentinel set with every process running and the sentinels in agreement."""
    return healed_sentinels(sentinel_set)


def key_on(cluster: Cluster, master: Node, prefix: str = "k") -> str:
    """A key whose slot `master` serves."""
    for i in range(10_000):
        key = f"{{{prefix}{i}}}"
        if cluster.master_for_key(key) is master:
            return key
    raise LookupError(master)


# ---------------------------------------------------------------------------------------------
# cluster


async def test_cluster_comes_up_3_plus_3(healthy: Cluster, rc: RedisCluster) -> None:
    masters = healthy.masters()
    assert len(masters) == 3
    assert len(healthy.replicas()) == 3
    for m in masters:
        assert len(healthy.replicas_of(m)) == 1
    assert {r.port for r in healthy.slot_map()} == {m.port for m in masters}
    assert len(rc.get_primaries()) == 3 and len(rc.get_replicas()) == 3
    for i in range(30):
        await rc.set(f"up:{i}", i)
    values = await rc.mget_nonatomic([f"up:{i}" for i in range(30)])
    assert [int(v or 0) for v in values] == list(range(30))
    # every node's port and pid are known and distinct
    assert len({n.pid for n in healthy.nodes}) == 6


async def test_master_kill_promotes_replica_then_restart_rejoins(healthy: Cluster) -> None:
    victim = healthy.masters()[0]
    (replica,) = healthy.replicas_of(victim)
    key = key_on(healthy, victim, "kill")
    assert call_many(victim.port, ("SET", key, "before"), ("WAIT", 1, 1000)) == ["OK", 1]

    t0 = time.monotonic()
    healthy.kill(victim)
    new = await asyncio.to_thread(healthy.wait_failover, victim, 20)
    took = time.monotonic() - t0
    assert new is replica
    # cluster-node-timeout 2000 ms: promotion after ~3-4.5 s
    assert 2.0 < took < 10.0, took
    # right after a promotion the new master has no replica: WAIT 1 100 gives 0 at once
    t1 = time.monotonic()
    assert call_many(new.port, ("SET", key, "after"), ("WAIT", 1, 100)) == ["OK", 0]
    assert time.monotonic() - t1 < 0.5
    await asyncio.to_thread(healthy.wait_healthy, 20)
    assert victim not in healthy.alive()

    client = RedisCluster.from_url(healthy.url)
    try:
        assert await client.get(key) == b"after"
    finally:
        await client.aclose()

    healthy.restart(victim)
    await asyncio.to_thread(healthy.wait_healthy, 30)
    assert victim.role == "slave"
    assert healthy.replicas_of(new) == [victim]


async def test_reshard_moves_slots_and_client_follows(healthy: Cluster, rc: RedisCluster) -> None:
    src, dst = healthy.masters()[:2]
    before = {r for r in healthy.slot_map() if r.port == src.port}
    n_src = sum(r.end - r.start + 1 for r in before)
    first = min(r.start for r in before)
    key = next(
        f"rs:{i}" for i in range(100_000) if first <= healthy.keyslot(f"rs:{i}") < first + 10
    )
    await rc.set(key, "v")
    await asyncio.to_thread(healthy.reshard, src, dst, 10)
    after = sum(r.end - r.start + 1 for r in healthy.slot_map() if r.port == src.port)
    assert after == n_src - 10
    assert healthy.master_for_key(key) is dst
    # the client's slot cache is stale: MOVED is followed transparently
    assert await rc.get(key) == b"v"
    # and the slots go back (leave the shared cluster as it was)
    await asyncio.to_thread(healthy.reshard, dst, src, 10)


async def test_move_slot_moved_and_ask(healthy: Cluster, rc: RedisCluster) -> None:
    key = "{mv}a"
    slot = healthy.keyslot(key)
    await rc.set(key, "1")
    src = healthy.master_for_slot(slot)
    dst = next(m for m in healthy.masters() if m is not src)
    # half-way: the key is on dst, the slot still belongs to src -> ASK, followed by the client
    healthy.move_slot(slot, dst, finish=False)
    with pytest.raises(AskError):
        await rc.get_node(host="127.0.0.1", port=src.port).execute_command("GET", key)  # type: ignore[union-attr]
    assert await rc.get(key) == b"1"
    healthy.move_slot(slot, dst)
    with pytest.raises(MovedError):
        await rc.get_node(host="127.0.0.1", port=src.port).execute_command("GET", key)  # type: ignore[union-attr]
    assert await rc.get(key) == b"1"
    node = rc.get_node_from_key(key)
    assert node is not None and node.port == dst.port  # cache patched by the MOVED
    healthy.move_slot(slot, src)


async def test_cut_replication_makes_replica_lag(healthy: Cluster) -> None:
    master = healthy.masters()[0]
    (replica,) = healthy.replicas_of(master)
    key = key_on(healthy, master, "lag")
    cut_replication(replica)
    try:
        assert call_many(master.port, ("SET", key, "x"), ("WAIT", 1, 200)) == ["OK", 0]
        assert info(replica.port, "replication")["master_link_status"] == "down"
        assert replica.role == "slave"
    finally:
        restore_replication(replica)
    assert call_many(master.port, ("SET", key, "again"), ("WAIT", 1, 2000)) == ["OK", 1]


async def test_frozen_replica_stalls_but_keeps_the_bytes(healthy: Cluster) -> None:
    master = healthy.masters()[1]
    (replica,) = healthy.replicas_of(master)
    key = key_on(healthy, master, "frz")
    with replica.frozen():
        assert call_many(master.port, ("SET", key, "v"), ("WAIT", 1, 200)) == ["OK", 0]
        # WAIT on a connection that wrote nothing is no proof (Valkey: 1 at once)
    assert call_many(master.port, ("SET", key, "w"), ("WAIT", 1, 2000)) == ["OK", 1]
    assert call_many(replica.port, ("READONLY",), ("GET", key)) == ["OK", "w"]


async def test_evalsha_then_wait_on_one_connection(healthy: Cluster, rc: RedisCluster) -> None:
    sha = await rc.script_load("redis.call('SET', KEYS[1], ARGV[1]) return 7")
    key = "{ew}job"
    node = rc.get_node_from_key(key)
    assert node is not None
    # the pipeline refuses .evalsha() outright ...
    with pytest.raises(RedisClusterException, match="evalsha is blocked"):
        rc.pipeline().evalsha(sha, 1, key, "x")
    # ... but the same command through execute_command is sent, and WAIT can be pinned to the
    # key's node: both go out on one connection to that node, in order.
    pipe = rc.pipeline()
    pipe.execute_command("EVALSHA", sha, 1, key, "x")
    pipe.execute_command("WAIT", 1, 1000, target_nodes=node)
    assert await pipe.execute(raise_on_error=False, allow_redirections=False) == [7, 1]
    # the raw-connection form
    assert await evalsha_wait(rc, node, sha, [key], ["y"], 1, 1000) == (7, 1)
    assert await rc.get(key) == b"y"


async def evalsha_wait(
    rc: RedisCluster,
    node: ClusterNode,
    sha: str,
    keys: list[str],
    args: list[str],
    replicas: int,
    timeout_ms: int,
) -> tuple[object, int]:
    """EVALSHA then WAIT on one connection of `node`; returns (script reply or the error it
    raised, replicas acknowledged)."""
    conn = node.acquire_connection()
    try:
        await node.disconnect_if_needed(conn)
        await conn.send_packed_command(
            conn.pack_commands(
                [("EVALSHA", sha, len(keys), *keys, *args), ("WAIT", replicas, timeout_ms)]
            )
        )
        result: object
        try:
            result = await conn.read_response()
        except (MovedError, AskError) as e:
            result = e
        acked = int(await conn.read_response())
    except ConnectionError:
        await conn.disconnect()
        raise
    finally:
        node.release(conn)
    return result, acked


async def test_multi_stream_xread_with_one_hash_tag(rc: RedisCluster) -> None:
    a, b = "{ms}:a", "{ms}:b"
    await rc.xadd(a, {"n": "1"})
    await rc.xadd(b, {"n": "2"})
    got: Any = await rc.xread({a: "0", b: "0"})
    assert sorted(s for s, _ in got) == [a.encode(), b.encode()]
    for s in (a, b):
        await rc.xgroup_create(s, "g", id="0")
    got = await rc.xreadgroup("g", "c", {a: ">", b: ">"})
    assert len(got) == 2


async def test_blocking_xread_works_with_default_socket_timeout(rc: RedisCluster) -> None:
    t0 = time.monotonic()
    got = await rc.xread({"{blk}:s": "$"}, block=2000)
    assert not got
    assert 1.9 < time.monotonic() - t0 < 4.0


# ---------------------------------------------------------------------------------------------
# sentinel


async def test_sentinel_set_comes_up(sentinels: SentinelSet) -> None:
    master = sentinels.current_master()
    assert master.role == "master"
    assert [r.role for r in sentinels.data if r is not master] == ["slave"]
    m = sentinels.sentinel_master()
    assert m["num-other-sentinels"] == "2" and m["num-slaves"] == "1"
    s = Sentinel(sentinels.sentinels, socket_timeout=1)  # type: ignore[no-untyped-call]
    client = s.master_for(sentinels.master_name)
    try:
        await client.set("hello", "world")
        assert await client.get("hello") == b"world"
        assert await s.discover_master(sentinels.master_name) == master.addr
    finally:
        await client.aclose()
        await s.aclose()


async def test_sentinel_failover_seen_by_master_for(sentinels: SentinelSet) -> None:
    s = Sentinel(sentinels.sentinels, socket_timeout=1)  # type: ignore[no-untyped-call]
    client = s.master_for(sentinels.master_name, socket_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        await client.set("fo", "before")
        assert await client.wait(1, 1000) == 1
        old = sentinels.current_master()
        t0 = time.monotonic()
        sentinels.kill_master()
        errors: list[str] = []
        while True:  # keep calling, as a worker would
            try:
                await client.incr("fo:n")
                break
            except (ConnectionError, aioredis.RedisError) as e:
                errors.append(type(e).__name__)
                await asyncio.sleep(0.05)
            assert time.monotonic() - t0 < 20, errors
        took = time.monotonic() - t0
        new = await asyncio.to_thread(sentinels.wait_failover, old, 10)
        assert new is not old and new.role == "master"
        assert await client.get("fo") == b"before"
        assert 1.0 < took < 10.0, took
        assert errors and set(errors) <= {"ConnectionError", "MasterNotFoundError"}, errors
        # the failover settled first (the other replica following the new master, every
        # sentinel agreeing), so the old master does not rejoin in the middle of it
        await asyncio.to_thread(sentinels.wait_ready, 30)
        # the old master would come back as a master with stale data until a sentinel converts
        # it (~10 s, sentinel's INFO period); `as_replica` skips that wait
        sentinels.restart(old, as_replica=True)
        await asyncio.to_thread(sentinels.wait_ready, 30)
        assert old.role == "slave"
    finally:
        await client.aclose()
        await s.aclose()


def test_sentinel_conf_written(sentinel_set: SentinelSet) -> None:
    for n in sentinel_set.sentinel_nodes:
        assert Path(n.dir / "sentinel.conf").exists()
