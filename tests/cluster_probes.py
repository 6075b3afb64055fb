"""Probes behind docs/cluster-facts.md: each starts the topology it needs (tests/topology.py),
measures one behaviour of redis-py 8.1 against it and prints what it saw.

    python -m tests.cluster_probes NAME [redis|valkey]     # NAME from `python -m ... list`

Not collected by pytest (no test_ prefix); each probe stops every process it started.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import AskError, ConnectionError, MovedError, ResponseError

from tests.topology import (
    Cluster,
    Node,
    SentinelSet,
    call,
    cut_replication,
    free_port,
    info,
    restore_replication,
    server_binaries,
)

Probe = Callable[[str], Awaitable[None]]
PROBES: dict[str, Probe] = {}


def probe(fn: Probe) -> Probe:
    PROBES[fn.__name__] = fn
    return fn


def out(*parts: Any) -> None:
    print(*parts, flush=True)


def err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


async def attempt(what: str, coro: Awaitable[Any]) -> Any:
    try:
        res = await coro
    except Exception as e:
        out(f"  {what} -> raised {err(e)}")
        return e
    out(f"  {what} -> {res!r}")
    return res


def try_sync(what: str, fn: Callable[[], Any]) -> Any:
    try:
        res = fn()
    except Exception as e:
        out(f"  {what} -> raised {err(e)}")
        return e
    out(f"  {what} -> {res!r}")
    return res


def key_on(c: Cluster, master: Node, prefix: str) -> str:
    for i in range(10_000):
        key = f"{{{prefix}{i}}}"
        if c.master_for_key(key) is master:
            return key
    raise LookupError(master)


# ---------------------------------------------------------------------------------------------
# 1. scripts in cluster pipelines; EVALSHA + WAIT on one connection

LUA_SET = "redis.call('SET', KEYS[1], ARGV[1]) return 7"
LUA_LIB = "#!lua name=plib\nredis.register_function('pset', function(k, a) "
LUA_LIB += "redis.call('SET', k[1], a[1]) return 8 end)"


async def evalsha_wait(
    node: ClusterNode,
    sha: str,
    keys: list[str],
    args: list[Any],
    replicas: int,
    timeout_ms: int,
    asking: bool = False,
) -> tuple[Any, int]:
    """EVALSHA then WAIT on one connection taken from `node`'s pool: (script reply or the
    redirection error it got, replicas acknowledged). Nothing is retried."""
    conn = node.acquire_connection()
    try:
        await node.disconnect_if_needed(conn)
        cmds: list[tuple[Any, ...]] = [("ASKING",)] if asking else []
        cmds += [("EVALSHA", sha, len(keys), *keys, *args), ("WAIT", replicas, timeout_ms)]
        await conn.send_packed_command(conn.pack_commands(cmds))
        if asking:
            await conn.read_response()
        result: Any
        try:
            result = await conn.read_response()
        except (MovedError, AskError) as e:
            result = e
        acked = int(await conn.read_response())
    except BaseException:
        await conn.disconnect()  # unknown state: never reuse
        raise
    finally:
        node.release(conn)
    return result, acked


async def evalsha_wait_routed(
    rc: RedisCluster, sha: str, keys: list[str], args: list[Any], replicas: int, timeout_ms: int
) -> tuple[Any, int]:
    """`evalsha_wait` on the node that owns keys[0]'s slot, following MOVED (patching the
    client's slot cache) and ASK, at most 5 redirections."""
    node = rc.get_node_from_key(keys[0])
    asking = False
    for _ in range(5):
        result, acked = await evalsha_wait(node, sha, keys, args, replicas, timeout_ms, asking)
        if isinstance(result, MovedError):
            await rc.nodes_manager.move_slot(result)
            node = rc.get_node_from_key(keys[0])
            asking = False
        elif isinstance(result, AskError):
            node = rc.get_node(host=result.host, port=result.port) or ClusterNode(
                result.host, result.port, **rc.get_connection_kwargs()
            )
            asking = True
        else:
            return result, acked
    raise RuntimeError("too many redirections")


@probe
async def pipelines(binary: str) -> None:
    with Cluster(binary) as c:
        rc = RedisCluster.from_url(c.url)
        await rc.initialize()
        try:
            sha = await rc.script_load(LUA_SET)
            await rc.function_load(LUA_LIB, replace=True)
            k = "{p}k"
            out("pipeline(transaction=False):")
            pipe = rc.pipeline(transaction=False)
            try_sync("pipe.evalsha(sha, 1, k, 'a')", lambda: pipe.evalsha(sha, 1, k, "a"))
            try_sync("pipe.script_load(...)", lambda: pipe.script_load(LUA_SET))
            pipe = rc.pipeline(transaction=False)
            pipe.eval(LUA_SET, 1, k, "b")
            pipe.fcall("pset", 1, k, "c")
            pipe.execute_command("EVALSHA", sha, 1, k, "d")
            pipe.get(k)
            await attempt("eval + fcall + execute_command('EVALSHA') + get", pipe.execute())
            pipe = rc.pipeline(transaction=False)
            pipe.execute_command("EVALSHA", "0" * 40, 1, k)
            pipe.get(k)
            await attempt("unknown sha", pipe.execute(raise_on_error=False))

            out("pipeline(transaction=True), each case on a fresh client:")
            cases: list[tuple[str, Callable[[Any], Any]]] = [
                ("evalsha()", lambda p: p.evalsha(sha, 1, k, "a")),
                ("eval()", lambda p: p.eval(LUA_SET, 1, k, "b")),
                (
                    "execute_command('EVALSHA')",
                    lambda p: p.execute_command("EVALSHA", sha, 1, k, "d"),
                ),
                ("fcall()", lambda p: p.fcall("pset", 1, k, "c")),
                ("xadd()", lambda p: p.xadd("{p}s", {"a": "1"})),
                ("xread()", lambda p: p.xread({"{p}s": "0"})),
                ("get()", lambda p: p.get(k)),
            ]
            for name, add in cases:
                fresh = RedisCluster.from_url(c.url)
                await fresh.initialize()
                try:
                    p = fresh.pipeline(transaction=True)
                    if isinstance(
                        try_sync(f"queue {name}", lambda p=p, add=add: add(p)), Exception
                    ):
                        continue
                    await attempt(f"execute [{name}]", p.execute())
                finally:
                    await fresh.aclose()

            out("EVALSHA then WAIT on one connection:")
            node = rc.get_node_from_key(k)
            pipe = rc.pipeline()
            pipe.execute_command("EVALSHA", sha, 1, k, "e")
            pipe.execute_command("WAIT", 1, 1000, target_nodes=node)
            await attempt(
                "pipeline EVALSHA + WAIT(target_nodes=node)",
                pipe.execute(raise_on_error=False, allow_redirections=False),
            )
            await attempt(
                "raw connection evalsha_wait", evalsha_wait(node, sha, [k], ["f"], 1, 1000)
            )

            out("WAIT belongs to the connection that wrote:")
            master = c.master_for_key(k)
            (replica,) = c.replicas_of(master)
            await rc.set(k, "warm")
            with replica.frozen():
                t0 = time.monotonic()
                await attempt(
                    "  replica SIGSTOPped; evalsha_wait(... WAIT 1 300)",
                    evalsha_wait(node, sha, [k], ["g"], 1, 300),
                )
                out(f"    took {time.monotonic() - t0:.3f}s")
                t0 = time.monotonic()
                await attempt("  rc.wait(1, 300) (default node, pooled conn)", rc.wait(1, 300))
                out(f"    took {time.monotonic() - t0:.3f}s")
                fresh = aioredis.Redis(port=master.port)
                t0 = time.monotonic()
                await attempt(
                    "  WAIT 1 300 on a fresh connection to the master", fresh.wait(1, 300)
                )
                out(f"    took {time.monotonic() - t0:.3f}s")
                await fresh.aclose()

            out("  WAIT on another connection is about that connection's previous command:")
            other = aioredis.Redis(port=master.port)
            await other.ping()  # its last command: now, replica in sync
            await asyncio.sleep(1.2)  # let the replica ACK (REPLCONF ACK every 1 s)
            with replica.frozen():
                await rc.set(k, "unreplicated")  # through the cluster client's own pool
                t0 = time.monotonic()
                await attempt(
                    "  WAIT 1 300 on a conn whose last command was before the SET",
                    other.wait(1, 300),
                )
                out(f"    took {time.monotonic() - t0:.3f}s")
                await other.ping()
                await attempt("  same conn after one more PING", other.wait(1, 300))
            await other.aclose()

            out("MOVED in that path (slot moved behind the client's back):")
            slot = c.keyslot(k)
            dst = next(m for m in c.masters() if m is not master)
            c.move_slot(slot, dst)
            stale = rc.get_node_from_key(k)
            out(f"  client still maps slot {slot} to {stale.port}; now on {dst.port}")
            await attempt(
                "  raw evalsha_wait on the stale node", evalsha_wait(stale, sha, [k], ["h"], 1, 500)
            )
            pipe = rc.pipeline()
            pipe.execute_command("EVALSHA", sha, 1, k, "i")
            pipe.execute_command("WAIT", 1, 500, target_nodes=stale)
            await attempt(
                "  pipeline, allow_redirections=False",
                pipe.execute(raise_on_error=False, allow_redirections=False),
            )
            pipe = rc.pipeline()
            pipe.execute_command("EVALSHA", sha, 1, k, "j")
            pipe.execute_command("WAIT", 1, 500, target_nodes=stale)
            await attempt(
                "  pipeline, allow_redirections=True (default)",
                pipe.execute(raise_on_error=False),
            )
            out(f"  client now maps slot to {rc.get_node_from_key(k).port}")
            c.move_slot(slot, master)
            await attempt(
                "  evalsha_wait_routed after moving it back",
                evalsha_wait_routed(rc, sha, [k], ["k"], 1, 500),
            )
            out(f"  client now maps slot to {rc.get_node_from_key(k).port}")
            out("ASK in that path (slot half-migrated, key already moved):")
            c.move_slot(slot, dst, finish=False)
            await attempt(
                "  raw evalsha_wait", evalsha_wait(rc.get_node_from_key(k), sha, [k], ["l"], 1, 500)
            )
            await attempt("  evalsha_wait_routed", evalsha_wait_routed(rc, sha, [k], ["m"], 1, 500))
            c.move_slot(slot, dst)
            await attempt("  rc.get(k)", rc.get(k))
        finally:
            await rc.aclose()


# ---------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in PROBES:
        print("probes:", " ".join(PROBES))
        return
    kind = sys.argv[2] if len(sys.argv) > 2 else "redis"
    binary = server_binaries()[kind]
    out(f"== {sys.argv[1]} on {kind} ({binary}), redis-py {redis.__version__}")
    asyncio.run(PROBES[sys.argv[1]](binary))


if __name__ == "__main__":
    main()
