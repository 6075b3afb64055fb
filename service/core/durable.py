"""Running the scripts that accept work (submit) and finish it, optionally waiting for replicas.

With `redis.wait_replicas = N`, the call is followed by `WAIT N timeout` on the same connection,
so the reply is given only once N replicas hold the write (or the timeout passed: then the
write is acknowledged anyway and counted in `unreplicated`). Replication stays asynchronous: a
master that dies in between can still lose it; WAIT narrows that window, it does not close it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

import redis.exceptions
import structlog

from service.core.connect import is_cluster
from service.core.retry import retrying
from service.core.scripts import Call, is_noscript

R = TypeVar("R")
log = structlog.get_logger("tidings.redis")


class Durability:
    def __init__(self, r: Any, replicas: int = 0, timeout_ms: int = 500) -> None:
        self._r = r
        self.client = r
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self.unreplicated = 0  # writes acknowledged by fewer replicas than asked

    async def run(self, call: Call[R], *, retry: bool = True, deadline_s: float = 2.0) -> R:
        """Run `call` (waiting out transient errors for up to `deadline_s`: every script is
        idempotent under a re-send), then WAIT for replicas if configured."""

        async def once() -> R:
            if self.replicas <= 0:
                return await call.run(self._r)
            return await self._run_and_wait(call)

        if not retry:
            return await once()
        return await retrying(once, what=call.script.name, deadline_s=deadline_s)

    async def _run_and_wait(self, call: Call[R]) -> R:
        from service.core.resp import FastRedis

        if isinstance(self._r, FastRedis):
            raw, acked = await _fast_run_and_wait(self._r, call, self.replicas, self.timeout_ms)
        elif is_cluster(self._r):
            raw, acked = await _cluster_run_and_wait(self._r, call, self.replicas, self.timeout_ms)
        else:
            raw, acked = await _pipeline_run_and_wait(self._r, call, self.replicas, self.timeout_ms)
        if acked < self.replicas:
            self.unreplicated += 1
            log.warning("redis.unreplicated", op=call.script.name, acked=acked, want=self.replicas)
        return call.decode(raw)


async def _fast_run_and_wait(r: Any, call: Call[Any], n: int, timeout_ms: int) -> tuple[Any, int]:
    # issued in the same loop turn: one write, one connection, in this order
    for attempt in range(2):
        both: tuple[Any, Any] = await asyncio.gather(
            r.evalsha(*call.command()),
            r.execute_command("WAIT", n, timeout_ms),
            return_exceptions=True,
        )
        res, acked = both
        if isinstance(res, redis.exceptions.ResponseError) and is_noscript(res) and attempt == 0:
            await r.script_load(call.script.source)
            continue
        if isinstance(res, BaseException):
            raise res
        if isinstance(acked, BaseException):
            raise acked
        return res, int(acked)
    raise AssertionError("unreachable")


async def _pipeline_run_and_wait(
    r: Any, call: Call[Any], n: int, timeout_ms: int
) -> tuple[Any, int]:
    for attempt in range(2):
        async with r.pipeline(transaction=False) as pipe:
            pipe.execute_command("EVALSHA", *call.command())
            pipe.execute_command("WAIT", n, timeout_ms)
            res = await pipe.execute(raise_on_error=False)
        if isinstance(res[0], Exception):
            if is_noscript(res[0]) and attempt == 0:
                await r.script_load(call.script.source)
                continue
            raise res[0]
        if isinstance(res[1], Exception):
            raise res[1]
        return res[0], int(res[1])
    raise AssertionError("unreachable")


async def _cluster_run_and_wait(
    r: Any, call: Call[Any], n: int, timeout_ms: int
) -> tuple[Any, int]:
    """The same on a cluster: EVALSHA then WAIT on one connection of the node that owns the
    keys. Not through redis-py's cluster pipeline: that one answers a connection error by
    closing every connection of the client, under every other task's feet; with concurrent
    submits during a failover each of those failures closed them all again, and the storm
    outlived the failover by seconds. Here a failure costs its own connection only.

    Redirections are followed here (a redirected script did not run): MOVED patches the slot
    map and goes to the new owner; ASK (slot mid-migration) sends ASKING first to the target.
    The WAIT always runs on the connection that ran the script."""
    await r.initialize()  # a no-op once the client knows the slot map
    node = r.get_node_from_key(call.keys[0])
    asking = False
    loaded = False
    for _ in range(5):
        try:
            raw, acked = await _evalsha_wait(node, call, n, timeout_ms, asking=asking)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            await _refresh(r)  # the node may be gone: learn the slot map again
            raise
        if not isinstance(raw, Exception):
            return raw, acked
        asking = False
        if is_noscript(raw) and not loaded:
            await r.script_load(call.script.source)
            loaded = True
            continue
        if isinstance(raw, redis.exceptions.MovedError):
            await r.nodes_manager.move_slot(raw)
            node = r.get_node_from_key(call.keys[0])
            continue
        if isinstance(raw, redis.exceptions.AskError):
            target = r.get_node(host=raw.host, port=raw.port)
            if target is None:
                raise raw
            node, asking = target, True
            continue
        raise raw
    raise redis.exceptions.ClusterError(f"{call.script.name}: too many redirections")


async def _evalsha_wait(
    node: Any, call: Call[Any], n: int, timeout_ms: int, *, asking: bool
) -> tuple[Any, int]:
    """(script reply or the error it answered, replicas acknowledged), on one connection."""
    conn = await _acquire(node)
    try:
        await node.disconnect_if_needed(conn)
        cmds: list[tuple[Any, ...]] = [("ASKING",)] if asking else []
        cmds += [("EVALSHA", *call.command()), ("WAIT", n, timeout_ms)]
        await conn.send_packed_command(conn.pack_commands(cmds))
        if asking:
            await conn.read_response()
        raw: Any
        try:
            raw = await conn.read_response()
        except redis.exceptions.ResponseError as e:
            raw = e  # an error reply; the connection is fine and WAIT's reply follows
        acked = int(await conn.read_response())
    except BaseException:
        await conn.disconnect()  # state unknown: never reuse it as it is
        raise
    finally:
        node.release(conn)
    return raw, acked


async def _acquire(node: Any, wait_s: float = 2.0) -> Any:
    """A connection of the node's pool, waiting a little for one when all are in use (redis-py
    raises MaxConnectionsError at once). Right after a promotion every WAIT on the new master
    lasts its whole timeout (no replica yet), so its connections are all busy for a moment."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            return node.acquire_connection()
        except redis.exceptions.MaxConnectionsError:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.01)


async def _refresh(r: Any) -> None:
    """Re-read the cluster's slot map (at most one refresh at a time; a failure is left to
    the caller's next try)."""
    with contextlib.suppress(Exception):
        await r.nodes_manager.initialize()
