"""Probes behind docs/cluster-facts.md: each starts the topology it needs (tests/topology.py),
measures one behaviour of redis-py 8.1 against it and prints what it saw.

    python -m bench.cluster_probes NAME [redis|valkey]     # NAME from `python -m ... list`

Not a benchmark and not collected by pytest; each probe stops every process it started.
"""

from __future__ import annotations

import asyncio
import shutil
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
from redis.exceptions import AskError, MovedError, ResponseError

from tests.topology import (
    Cluster,
    Node,
    SentinelSet,
    call,
    cut_replication,
    free_port,
    info,
    server_binaries,
    wait_until,
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
# 2. the async cluster client during a master kill; blocking reads; connections


class Recorder:
    """Calls one coroutine in a loop every 10 ms and records what each call did."""

    def __init__(self, name: str, make: Callable[[], Awaitable[Any]]) -> None:
        self.name = name
        self.make = make
        self.events: list[tuple[float, float, str]] = []  # (start, duration, outcome)
        self.ok = 0
        self.stop = False
        self.t_kill = 0.0

    async def run(self) -> None:
        while not self.stop:
            t0 = time.monotonic()
            try:
                await self.make()
                outcome = "ok"
                self.ok += 1
            except Exception as e:
                outcome = f"{type(e).__name__}: {str(e)[:90]}"
            self.events.append((t0, time.monotonic() - t0, outcome))
            await asyncio.sleep(0.01)

    def report(self) -> None:
        out(f"  [{self.name}] {len(self.events)} calls, {self.ok} ok")
        runs: list[list[Any]] = []
        for t0, dur, outcome in self.events:
            rel = t0 - self.t_kill
            if runs and runs[-1][0] == outcome:
                runs[-1][2] = rel
                runs[-1][3] += 1
                runs[-1][4] = max(runs[-1][4], dur)
            else:
                runs.append([outcome, rel, rel, 1, dur])
        for outcome, first, last, n, longest in runs:
            out(
                f"    {first:+7.3f}s .. {last:+7.3f}s  x{n:<4} longest call {longest:6.3f}s  {outcome}"
            )


async def kill_window_once(c: Cluster, label: str, **kwargs: Any) -> None:
    out(f"-- client {label}")
    rc = RedisCluster.from_url(c.url, **kwargs)
    await rc.initialize()
    victim, other = c.masters()[:2]
    kv, ko = key_on(c, victim, "kv"), key_on(c, other, "ko")
    await rc.delete(kv, ko)
    recs = [
        Recorder(f"INCR on the killed master's slot {kv}", lambda: rc.incr(kv)),
        Recorder(f"INCR on another master's slot {ko}", lambda: rc.incr(ko)),
    ]
    tasks = [asyncio.create_task(r.run()) for r in recs]
    await asyncio.sleep(0.5)
    t_kill = time.monotonic()
    for r in recs:
        r.t_kill = t_kill
    c.kill(victim)
    new = await asyncio.to_thread(c.wait_failover, victim, 20)
    out(f"  promoted {new.port} after {time.monotonic() - t_kill:.3f}s")
    await asyncio.sleep(2.0)
    for r in recs:
        r.stop = True
    await asyncio.gather(*tasks)
    for r in recs:
        r.report()
    out(f"  INCR value on the killed slot: {await rc.get(kv)!r} ({recs[0].ok} ok replies)")
    await rc.aclose()
    c.restart(victim)
    await asyncio.to_thread(c.wait_healthy, 30)


@probe
async def kill_window(binary: str) -> None:
    with Cluster(binary) as c:
        await kill_window_once(c, "with default settings")
        await kill_window_once(c, "retry=Retry(NoBackoff(), 0)", retry=Retry(NoBackoff(), 0))


@probe
async def blocking_reads(binary: str) -> None:
    with Cluster(binary) as c:
        rc = RedisCluster.from_url(c.url)
        await rc.initialize()
        try:
            s1 = "{b}:1"
            await rc.xgroup_create(s1, "g", id="$", mkstream=True)
            node = rc.get_node_from_key(s1)
            t0 = time.monotonic()
            await attempt(
                "XREADGROUP BLOCK 2000 (default socket_timeout)",
                rc.xreadgroup("g", "c", {s1: ">"}, block=2000),
            )
            out(f"    took {time.monotonic() - t0:.3f}s")
            t0 = time.monotonic()
            await attempt("XREAD BLOCK 4900", rc.xread({s1: "$"}, block=4900))
            out(f"    took {time.monotonic() - t0:.3f}s")
            t0 = time.monotonic()
            await attempt(
                "XREAD BLOCK 6000 (> socket_timeout 5 s)", rc.xread({s1: "$"}, block=6000)
            )
            out(f"    took {time.monotonic() - t0:.3f}s")
            out(f"  connections in the node's pool now: {len(node._connections)}")

            async def blocked(n: int) -> None:
                await asyncio.gather(*(rc.xread({s1: "$"}, block=1000) for _ in range(n)))

            await blocked(5)
            out(
                f"  after 5 concurrent XREAD BLOCK 1000 on one node: pool has {len(node._connections)}"
            )
            clients = call(node.port, "CLIENT", "LIST")
            out(f"  server CLIENT LIST lines: {len(clients.splitlines())}")
            small = RedisCluster.from_url(c.url, max_connections=2)
            await small.initialize()
            dflt = small.commands_parser.node
            masters = c.masters()
            on_default = (
                key_on(c, c.node(int(dflt.port)), "d")
                if c.node(int(dflt.port)) in masters
                else None
            )
            others = [m for m in masters if m.port != int(dflt.port)]
            ka, kb = key_on(c, others[0], "a"), key_on(c, others[1], "b")
            out(
                f"  max_connections=2; commands_parser/default node {dflt.port}; A={others[0].port} B={others[1].port}"
            )
            t0 = time.monotonic()
            res = await asyncio.gather(
                *(small.xread({ka: "$"}, block=1000) for _ in range(3)), return_exceptions=True
            )
            out(
                f"  3 concurrent XREAD BLOCK 1000 on A: {[err(r) if isinstance(r, Exception) else r for r in res]} ({time.monotonic() - t0:.3f}s)"
            )
            res = await asyncio.gather(
                small.xread({ka: "$"}, block=500),
                small.xread({ka + "2": "$"}, block=500),
                small.xread({kb: "$"}, block=500),
                return_exceptions=True,
            )
            out(
                f"  2 blocked on A + 1 on B: {[err(r) if isinstance(r, Exception) else r for r in res]}"
            )
            if on_default:
                res = await asyncio.gather(
                    small.xread({on_default: "$"}, block=500),
                    small.xread({on_default + "2": "$"}, block=500),
                    small.xread({kb: "0"}),
                    small.get(kb),
                    return_exceptions=True,
                )
                out(
                    f"  2 blocked on the default node + XREAD (no block) on B + GET on B: {[err(r) if isinstance(r, Exception) else r for r in res]}"
                )
            await small.aclose()

            out("  a blocked XREADGROUP while its master is SIGKILLed:")
            victim = c.master_for_key(s1)
            task = asyncio.create_task(rc.xreadgroup("g", "c", {s1: ">"}, block=2000))
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            c.kill(victim)
            try:
                r = await task
                out(f"    returned {r!r} after {time.monotonic() - t0:.3f}s")
            except Exception as e:
                out(f"    raised {err(e)} after {time.monotonic() - t0:.3f}s")
            t0 = time.monotonic()
            await attempt(
                "    next XREADGROUP BLOCK 2000 right away",
                rc.xreadgroup("g", "c", {s1: ">"}, block=2000),
            )
            out(f"    took {time.monotonic() - t0:.3f}s")
        finally:
            await rc.aclose()


@probe
async def movable_keys(binary: str) -> None:
    with Cluster(binary) as c:
        rc = RedisCluster.from_url(c.url)
        await rc.initialize()
        try:
            parser_node = rc.commands_parser.node
            out(
                f"  commands_parser.node = {parser_node.port}, default node = {rc.get_default_node().port}"
            )
            for n in c.alive():
                call(n.port, "CONFIG", "RESETSTAT")
            s1 = "{mk}:s"
            await rc.xgroup_create(s1, "g", id="$", mkstream=True)
            for _ in range(10):
                await rc.xreadgroup("g", "c", {s1: ">"}, count=1)
                await rc.xread({s1: "0"}, count=1)
            await rc.xadd(s1, {"a": "1"})
            await rc.get(s1 + "x")
            for n in c.alive():
                stats = info(n.port, "commandstats")
                got = {
                    k: v.split(",")[0]
                    for k, v in stats.items()
                    if "getkeys" in k or "xread" in k or "xadd" in k
                }
                if got:
                    out(f"  node {n.port}: {got}")
            for n in c.alive():
                call(n.port, "CONFIG", "RESETSTAT")
            node = rc.get_node_from_key(s1)
            for _ in range(10):
                await rc.execute_command(
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "c",
                    "COUNT",
                    1,
                    "STREAMS",
                    s1,
                    ">",
                    target_nodes=node,
                )
            r = await rc.execute_command("XREAD", "COUNT", 1, "STREAMS", s1, "0", target_nodes=node)
            out(f"  execute_command('XREAD', ..., target_nodes=node) -> {r!r}")
            for n in c.alive():
                stats = info(n.port, "commandstats")
                got = {
                    k: v.split(",")[0] for k, v in stats.items() if "getkeys" in k or "xread" in k
                }
                if got:
                    out(f"  with target_nodes: node {n.port}: {got}")
            slot = c.keyslot(s1)
            home = c.master_for_slot(slot)
            dst = next(m for m in c.masters() if m is not home)
            c.move_slot(slot, dst)
            r = await attempt(
                "  XREAD with target_nodes=<stale node> after the slot moved",
                rc.execute_command("XREAD", "COUNT", 1, "STREAMS", s1, "0", target_nodes=node),
            )
            out(
                f"  client maps the slot to {rc.get_node_from_key(s1).port} now (moved to {dst.port})"
            )
            c.move_slot(slot, home)

            victim = c.node(int(parser_node.port))
            if victim.role != "master":
                out("  parser node is a replica; skipping the kill part")
                return
            target = next(m for m in c.masters() if m is not victim)
            key = key_on(c, target, "mk")
            await rc.xadd(key, {"a": "1"})
            rec = Recorder(
                f"XREAD on {key} (master {target.port}) while parser node {victim.port} is killed",
                lambda: rc.xread({key: "0"}, count=1),
            )
            rec2 = Recorder(f"GET on {key}", lambda: rc.get(key + "x"))
            tasks = [asyncio.create_task(rec.run()), asyncio.create_task(rec2.run())]
            await asyncio.sleep(0.3)
            rec.t_kill = rec2.t_kill = time.monotonic()
            c.kill(victim)
            await asyncio.to_thread(c.wait_failover, victim, 20)
            await asyncio.sleep(1.5)
            rec.stop = rec2.stop = True
            await asyncio.gather(*tasks)
            rec.report()
            rec2.report()
            out(f"  commands_parser.node now {rc.commands_parser.node.port}")
        finally:
            await rc.aclose()


@probe
async def parser_node_death(binary: str) -> None:
    """Only XREAD calls (movable keys) while the commands-parser node dies: nothing else on
    the client triggers a topology refresh."""
    with Cluster(binary) as c:
        rc = RedisCluster.from_url(c.url)
        await rc.initialize()
        try:
            victim = c.node(int(rc.commands_parser.node.port))
            out(f"  commands_parser.node = default node = {victim.port} ({victim.role})")
            target = next(m for m in c.masters() if m is not victim)
            key = key_on(c, target, "pd")
            await rc.xadd(key, {"a": "1"})
            rec = Recorder(
                f"XREAD on {key} (master {target.port})", lambda: rc.xread({key: "0"}, count=1)
            )
            task = asyncio.create_task(rec.run())
            await asyncio.sleep(0.3)
            rec.t_kill = time.monotonic()
            c.kill(victim)
            await asyncio.to_thread(c.wait_failover, victim, 20)
            out(f"  failover done after {time.monotonic() - rec.t_kill:.3f}s")
            await asyncio.sleep(8)
            rec.stop = True
            await task
            rec.report()
            out(f"  commands_parser.node now {rc.commands_parser.node.port}")
            t0 = time.monotonic()
            await attempt("  one GET on the same client", rc.get(key + "x"))
            await attempt("  XREAD after that GET", rc.xread({key: "0"}, count=1))
            out(f"    {time.monotonic() - t0:.3f}s")
            node = rc.get_node_from_key(key)
            await attempt(
                "  execute_command('XREAD', ..., target_nodes=node)",
                rc.execute_command("XREAD", "COUNT", 1, "STREAMS", key, "0", target_nodes=node),
            )
            await rc.aclose()
            await attempt(
                "  XREAD after rc.aclose() (next call re-initializes)",
                rc.xread({key: "0"}, count=1),
            )
            out(f"  commands_parser.node now {rc.commands_parser.node.port}")
        finally:
            await rc.aclose()


@probe
async def multi_stream_read(binary: str) -> None:
    with Cluster(binary) as c:
        rc = RedisCluster.from_url(c.url)
        await rc.initialize()
        try:
            names = ["{tidings:3}:a", "{tidings:3}:b", "{tidings:3}:c"]
            out(f"  slots: {[c.keyslot(n) for n in names]}")
            for i, n in enumerate(names):
                await rc.xadd(n, {"i": str(i)})
                await rc.xgroup_create(n, "g", id="0")
            await attempt("XREAD over 3 streams, one tag", rc.xread(dict.fromkeys(names, "0")))
            await attempt(
                "XREADGROUP over 3 streams, one tag",
                rc.xreadgroup("g", "c", dict.fromkeys(names, ">")),
            )
            await attempt(
                "XREADGROUP BLOCK 500 over 3 streams, nothing new",
                rc.xreadgroup("g", "c", dict.fromkeys(names, ">"), block=500),
            )
            await attempt("XREAD over two tags", rc.xread({"{a}x": "0", "{b}x": "0"}))
        finally:
            await rc.aclose()


# ---------------------------------------------------------------------------------------------
# 4. EVALSHA routing, script cache and failover


@probe
async def scripts_failover(binary: str) -> None:
    with Cluster(binary) as c:
        rc = RedisCluster.from_url(c.url)
        await rc.initialize()
        try:
            for n in c.alive():
                call(n.port, "CONFIG", "RESETSTAT")
            sha = await rc.script_load(LUA_SET)
            await rc.function_load(LUA_LIB, replace=True)
            for n in c.alive():
                stats = info(n.port, "commandstats")
                loads = stats.get("cmdstat_script|load", "calls=0").split(",")[0]
                out(
                    f"  {n.port} {n.role:6} SCRIPT LOAD {loads}; SCRIPT EXISTS -> "
                    f"{call(n.port, 'SCRIPT', 'EXISTS', sha)}; FUNCTION LIST has plib -> "
                    f"{'plib' in str(call(n.port, 'FUNCTION', 'LIST'))}"
                )
            for n in c.alive():
                call(n.port, "CONFIG", "RESETSTAT")
            masters = c.masters()
            keys = [key_on(c, m, "es") for m in masters]
            for k in keys:
                await rc.evalsha(sha, 1, k, "v")
            calls = {
                m.port: info(m.port, "commandstats").get("cmdstat_evalsha", "calls=0").split(",")[0]
                for m in masters
            }
            out(f"  one EVALSHA per key, keys on each master -> per master {calls}")
            await attempt(
                "  evalsha with keys in two slots", rc.evalsha(sha, 2, keys[0], keys[1], "v")
            )
            for n in c.alive():
                call(n.port, "CONFIG", "RESETSTAT")
            sha0 = await rc.script_load("return 1")
            for _ in range(6):
                await rc.evalsha(sha0, 0)
            calls = {
                m.port: info(m.port, "commandstats").get("cmdstat_evalsha", "calls=0").split(",")[0]
                for m in c.alive()
            }
            out(f"  6 x EVALSHA with 0 keys -> per node {calls}")

            victim = masters[0]
            k = keys[0]
            c.kill(victim)
            new = await asyncio.to_thread(c.wait_failover, victim, 20)
            await asyncio.to_thread(c.wait_healthy, 20)
            out(f"  killed {victim.port}; promoted {new.port}")
            out(f"  promoted node SCRIPT EXISTS -> {call(new.port, 'SCRIPT', 'EXISTS', sha)}")
            await attempt(
                "  rc.evalsha(sha, 1, k) on the promoted master", rc.evalsha(sha, 1, k, "w")
            )
            await attempt(
                "  rc.fcall('pset', 1, k) on the promoted master", rc.fcall("pset", 1, k, "x")
            )
            script = rc.register_script(LUA_SET)
            await attempt("  rc.register_script(...)(keys=[k])", script(keys=[k], args=["y"]))
            out(f"  promoted node SCRIPT EXISTS now -> {call(new.port, 'SCRIPT', 'EXISTS', sha)}")
            c.restart(victim)
            await asyncio.to_thread(c.wait_healthy, 30)
            out(
                f"  restarted old master (now {victim.role}) SCRIPT EXISTS -> {call(victim.port, 'SCRIPT', 'EXISTS', sha)}"
            )
        finally:
            await rc.aclose()


# ---------------------------------------------------------------------------------------------
# 5. scripts and maxmemory; undeclared keys

SHEBANG_WRITE = "#!lua\nredis.call('SET', KEYS[1], 'a') redis.call('SET', KEYS[2], 'b') return 1"
PLAIN_WRITE = "redis.call('SET', KEYS[1], 'a') redis.call('SET', KEYS[2], 'b') return 1"
PLAIN_DEL_THEN_SET = "redis.call('DEL', KEYS[1]) redis.call('SET', KEYS[2], 'b') return 1"
SHEBANG_DEL_THEN_SET = "#!lua\n" + PLAIN_DEL_THEN_SET
SHEBANG_ALLOW_OOM = "#!lua flags=allow-oom\n" + PLAIN_WRITE
SHEBANG_NO_WRITES = "#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])"
UNDECLARED = "redis.call('SET', KEYS[1], 'a') redis.call('SET', ARGV[1], 'b') return 1"


async def oom_cases(port: int, tag: str) -> None:
    """Fill 400 kB with maxmemory off, then set maxmemory 200 kB under used_memory: the server
    is then clearly over the limit (not at the edge, where a command's own query buffer
    decides), and every case below starts from that state."""
    r = aioredis.Redis(port=port, retry=Retry(NoBackoff(), 0))
    try:
        await r.flushall()
        await r.config_set("maxmemory", "0")
        await r.config_set("maxmemory-policy", "noeviction")
        k1, k2 = f"{{{tag}}}1", f"{{{tag}}}2"
        for i in range(40):
            await r.set(f"{{{tag}}}fill{i}", "x" * 10_000)
        used = int((await r.info("memory"))["used_memory"])
        limit = str(used - 200_000)
        for name, lua in [
            ("#!lua, SET k1, SET k2", SHEBANG_WRITE),
            ("no shebang, SET k1, SET k2", PLAIN_WRITE),
            ("no shebang, DEL k1, SET k2", PLAIN_DEL_THEN_SET),
            ("#!lua, DEL k1, SET k2", SHEBANG_DEL_THEN_SET),
            ("#!lua flags=allow-oom, SET k1, SET k2", SHEBANG_ALLOW_OOM),
            ("#!lua flags=no-writes, GET", SHEBANG_NO_WRITES),
        ]:
            await r.config_set("maxmemory", "0")
            await r.set(k1, "keep")
            await r.delete(k2)
            await r.config_set("maxmemory", limit)
            try:
                await r.set(f"{{{tag}}}probe", "1")
                state = "plain SET accepted (NOT over maxmemory!)"
            except ResponseError as e:
                state = f"plain SET refused: {e}"
            out(f"  [{state}]")
            for attempt_no in (1, 2):
                await attempt(f"  {name} (EVAL #{attempt_no})", r.eval(lua, 2, k1, k2))
                await r.config_set("maxmemory", "0")
                out(f"      after: k1={await r.get(k1)!r} k2={await r.get(k2)!r}")
                await r.set(k1, "keep")
                await r.delete(k2)
                await r.config_set("maxmemory", limit)
        await r.config_set("maxmemory", "0")
        await r.flushall()
    finally:
        await r.aclose()


@probe
async def scripts_oom(binary: str) -> None:
    out("standalone server:")
    port = free_port()
    import tempfile
    from pathlib import Path

    from tests.topology import _server_argv

    d = Path(tempfile.mkdtemp(prefix="oom-"))
    node = Node(port=port, dir=d, argv=_server_argv(binary, port, d, False, "everysec", ()))
    node.start()
    try:
        await oom_cases(port, "o")
        r = aioredis.Redis(port=port)
        out("undeclared key, standalone:")
        await attempt("  no shebang", r.eval(UNDECLARED, 1, "{u}1", "{u}2"))
        await attempt("  #!lua", r.eval("#!lua\n" + UNDECLARED, 1, "{u}1", "{u}2"))
        await attempt("  #!lua, other slot", r.eval("#!lua\n" + UNDECLARED, 1, "{u}1", "{v}2"))
        await r.aclose()
    finally:
        node.kill()
        shutil.rmtree(d, ignore_errors=True)
    out("cluster:")
    with Cluster(binary) as c:
        k = "{u}1"
        m = c.master_for_key(k)
        await oom_cases(m.port, "u")
        rc = RedisCluster.from_url(c.url)
        await rc.initialize()
        try:
            out("undeclared key, cluster:")
            await attempt("  no shebang, same slot", rc.eval(UNDECLARED, 1, "{u}1", "{u}2"))
            await attempt("  #!lua, same slot", rc.eval("#!lua\n" + UNDECLARED, 1, "{u}1", "{u}2"))
            other = next(
                f"{{z{i}}}"
                for i in range(1000)
                if c.master_for_key(f"{{z{i}}}") is m and c.keyslot(f"{{z{i}}}") != c.keyslot(k)
            )
            await attempt("  no shebang, other slot same node", rc.eval(UNDECLARED, 1, k, other))
            await attempt(
                "  #!lua, other slot same node", rc.eval("#!lua\n" + UNDECLARED, 1, k, other)
            )
            await attempt(
                "  #!lua flags=allow-cross-slot-keys, other slot same node",
                rc.eval("#!lua flags=allow-cross-slot-keys\n" + UNDECLARED, 1, k, other),
            )
            far = next(f"{{f{i}}}" for i in range(1000) if c.master_for_key(f"{{f{i}}}") is not m)
            await attempt("  no shebang, key on another node", rc.eval(UNDECLARED, 1, k, far))
        finally:
            await rc.aclose()


# ---------------------------------------------------------------------------------------------
# 6. Sentinel clients across a failover


def describe_retry(conn: Any) -> str:
    r = conn.retry
    return (
        f"retries={r.get_retries()} backoff={type(r._backoff).__name__} "
        f"errors={sorted(e.__name__ for e in r._supported_errors)} "
        f"socket_timeout={conn.socket_timeout}"
    )


@probe
async def sentinel_failover(binary: str) -> None:
    with SentinelSet(binary) as ss:
        sent = Sentinel(ss.sentinels)
        client = sent.master_for(ss.master_name)
        conn = await client.connection_pool.get_connection()
        out(f"  master_for() defaults: {describe_retry(conn)}")
        await client.connection_pool.release(conn)
        await client.set("k", "v")

        out("-- SIGKILL the master; a loop of INCR every 10 ms through master_for()")
        rec = Recorder("INCR via master_for (defaults)", lambda: client.incr("n"))
        task = asyncio.create_task(rec.run())
        await asyncio.sleep(0.5)
        rec.t_kill = time.monotonic()
        old = ss.kill_master()
        new = await asyncio.to_thread(ss.wait_failover, old, 20)
        out(f"  sentinels agree on {new.port} after {time.monotonic() - rec.t_kill:.3f}s")
        await asyncio.sleep(1.5)
        rec.stop = True
        await task
        rec.report()

        out("-- restart the old master with the same command line (no --replicaof)")
        t0 = time.monotonic()
        ss.restart(old)
        direct = aioredis.Redis(port=old.port, retry=Retry(NoBackoff(), 0))
        out(f"  old master role right after restart: {old.role}")
        await attempt("  direct client writes to it", direct.set("split", "brain"))
        await asyncio.to_thread(ss.wait_ready, 30)
        out(f"  sentinel converted it to a replica after {time.monotonic() - t0:.3f}s")
        await attempt("  same direct connection, GET split", direct.get("split"))
        await attempt("  and again (new connection)", direct.get("split"))
        await direct.aclose()

        out("-- SENTINEL FAILOVER: the live master is demoted; pooled connections stay open")
        t_conns = [await client.connection_pool.get_connection() for _ in range(3)]
        for cn in t_conns:
            await cn.connect()
            await client.connection_pool.release(cn)
        await client.delete("m")
        rec = Recorder("INCR m via master_for (defaults)", lambda: client.incr("m"))
        plain = aioredis.Redis(port=new.port, retry=Retry(NoBackoff(), 0))
        await plain.ping()
        rec2 = Recorder(f"INCR via plain Redis(port={new.port})", lambda: plain.incr("n2"))
        tasks = [asyncio.create_task(rec.run()), asyncio.create_task(rec2.run())]
        await asyncio.sleep(0.3)
        rec.t_kill = rec2.t_kill = time.monotonic()
        call(ss.sentinel_nodes[0].port, "SENTINEL", "FAILOVER", ss.master_name)
        newer = await asyncio.to_thread(ss.wait_failover, new, 20)
        out(f"  sentinels agree on {newer.port} after {time.monotonic() - rec.t_kill:.3f}s")
        w = aioredis.Redis(port=new.port, retry=Retry(NoBackoff(), 0))
        await w.incr("w")
        await attempt("  deposed master, INCR w then WAIT 1 100 on that connection", w.wait(1, 100))
        await w.aclose()
        await asyncio.to_thread(wait_until, lambda: new.role == "slave", 30, "demotion")
        out(f"  {new.port} says it is a replica after {time.monotonic() - rec.t_kill:.3f}s")
        await asyncio.sleep(1.5)
        rec.stop = rec2.stop = True
        await asyncio.gather(*tasks)
        rec.report()
        rec2.report()
        final = await client.get("m")
        out(f"  INCR m: {rec.ok} ok replies, value on the new master {final!r}")
        await plain.aclose()
        await client.aclose()
        await sent.aclose()


# ---------------------------------------------------------------------------------------------
# 7. Retry on the plain async client


async def standalone(binary: str) -> Node:
    import tempfile
    from pathlib import Path

    from tests.topology import _server_argv

    port = free_port()
    d = Path(tempfile.mkdtemp(prefix="retry-"))
    node = Node(port=port, dir=d, argv=_server_argv(binary, port, d, False, "everysec", ()))
    node.start()
    return node


@probe
async def retry_semantics(binary: str) -> None:
    node = await standalone(binary)
    try:
        for label, kwargs in [
            ("Redis() defaults, socket_timeout=0.5", {"socket_timeout": 0.5}),
            (
                "retry=Retry(NoBackoff(), 0)",
                {"socket_timeout": 0.5, "retry": Retry(NoBackoff(), 0)},
            ),
            ("retry=None", {"socket_timeout": 0.5, "retry": None}),
        ]:
            out(f"-- {label}")
            r = aioredis.Redis(port=node.port, **kwargs)
            await r.delete("n")
            conn = await r.connection_pool.get_connection()
            out(f"  connection retry: {describe_retry(conn)}")
            await r.connection_pool.release(conn)
            node.freeze()
            t0 = time.monotonic()
            loop = asyncio.get_running_loop()
            loop.call_later(1.2, node.thaw)
            res = await attempt("  INCR n while the server is SIGSTOPped for 1.2 s", r.incr("n"))
            del res
            out(f"    returned after {time.monotonic() - t0:.3f}s")
            await asyncio.sleep(1.5)
            node.thaw()
            await asyncio.sleep(0.2)
            out(f"    n on the server afterwards: {call(node.port, 'GET', 'n')!r}")
            await r.aclose()

        out("-- ConnectionError: server killed and restarted under an idle pooled connection")
        r = aioredis.Redis(port=node.port)
        await r.set("x", "1")
        node.kill()
        node.start()
        t0 = time.monotonic()
        await attempt("  default client, next INCR on the stale pooled connection", r.incr("y"))
        out(f"    took {time.monotonic() - t0:.3f}s")
        await r.aclose()
        r = aioredis.Redis(port=node.port, retry=Retry(NoBackoff(), 0))
        await r.set("x", "1")
        node.kill()
        node.start()
        await attempt("  retry=Retry(NoBackoff(), 0), next INCR", r.incr("y"))
        await attempt("  and the one after", r.incr("y"))
        await r.aclose()
        out("-- server down: how long the default client tries")
        r = aioredis.Redis(port=node.port)
        await r.ping()
        node.kill()
        t0 = time.monotonic()
        await attempt("  default client INCR, server gone", r.incr("y"))
        out(f"    took {time.monotonic() - t0:.3f}s")
        await r.aclose()
    finally:
        node.thaw()
        node.kill()
        shutil.rmtree(node.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# 8. WAIT right after a promotion


@probe
async def wait_after_promotion(binary: str) -> None:
    with Cluster(binary) as c:
        victim = c.masters()[0]
        c.kill(victim)
        new = await asyncio.to_thread(c.wait_failover, victim, 20)
        r = aioredis.Redis(port=new.port)
        try:
            k = key_on(c, new, "w")
            await r.set(k, "1")
            for args in [(1, 100), (0, 100), (1, 1000)]:
                t0 = time.monotonic()
                await attempt(f"  WAIT {args[0]} {args[1]} on the promoted master", r.wait(*args))
                out(f"    took {time.monotonic() - t0:.3f}s")
            t0 = time.monotonic()
            task = asyncio.create_task(r.wait(1, 0))
            await asyncio.sleep(0.5)
            out(
                f"  WAIT 1 0 still blocked after 0.5 s: {not task.done()}; restarting the old master"
            )
            c.restart(victim)
            await attempt("  WAIT 1 0", task)
            out(f"    returned {time.monotonic() - t0:.3f}s after it was sent")
        finally:
            await r.aclose()


# ---------------------------------------------------------------------------------------------
# the replica-lag helpers: what a master kill loses with each


@probe
async def lag_helpers(binary: str) -> None:
    with Cluster(binary) as c:
        for how in ("cut_replication", "freeze (SIGSTOP) until after the kill"):
            master = c.masters()[0]
            (replica,) = c.replicas_of(master)
            key = key_on(c, master, "lag")
            r = aioredis.Redis(port=master.port, retry=Retry(NoBackoff(), 0))
            for i in range(100):
                await r.rpush(key, i)
            await attempt(f"-- {how}: 100 RPUSH, then WAIT 1 1000", r.wait(1, 1000))
            if how == "cut_replication":
                cut_replication(replica)
            else:
                replica.freeze()
            for i in range(100, 300):
                await r.rpush(key, i)
            await attempt("  200 more RPUSH acknowledged, then WAIT 1 200", r.wait(1, 200))
            await r.aclose()
            t0 = time.monotonic()
            c.kill(master)
            if how != "cut_replication":
                await asyncio.sleep(0.5)
                replica.thaw()
            new = await asyncio.to_thread(c.wait_failover, master, 30)
            out(
                f"  {new.port} promoted after {time.monotonic() - t0:.3f}s (was the replica: {new is replica})"
            )
            n = call(new.port, "LLEN", key)
            out(f"  LLEN on the promoted master: {n} of 300 acknowledged")
            if how == "cut_replication":
                # the promoted replica still carries the bad credentials: clear them
                call(new.port, "CONFIG", "SET", "masterauth", "")
                call(new.port, "CONFIG", "SET", "masteruser", "")
            c.restart(master)
            await asyncio.to_thread(c.wait_healthy, 30)


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
