"""Running the scripts that accept work (submit) and finish it, optionally waiting for replicas.

With `redis.wait_replicas = N`, the call is followed by `WAIT N timeout` on the same connection,
so the reply is given only once N replicas hold the write (or the timeout passed: then the
write is acknowledged anyway and counted in `unreplicated`). Replication stays asynchronous: a
master that dies in between can still lose it; WAIT narrows that window, it does not close it.
"""

from __future__ import annotations

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
        if is_cluster(self._r):
            raw, acked = await _cluster_run_and_wait(self._r, call, self.replicas, self.timeout_ms)
        else:
            raw, acked = await _pipeline_run_and_wait(self._r, call, self.replicas, self.timeout_ms)
        if acked < self.replicas:
            self.unreplicated += 1
            log.warning("redis.unreplicated", op=call.script.name, acked=acked, want=self.replicas)
        return call.decode(raw)


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
    """The same on a cluster: both commands in one pipeline to the node owning the keys (one
    connection, in order). Redirections are not followed inside the pair (the WAIT would count
    another node's replicas): a MOVED/ASK updates the slot map and is raised, and the caller's
    retry sends the pair again to the right node (a redirected script did not run)."""
    node = r.get_node_from_key(call.keys[0])
    for attempt in range(2):
        pipe = r.pipeline(transaction=False)
        pipe.execute_command("EVALSHA", *call.command())
        pipe.execute_command("WAIT", n, timeout_ms, target_nodes=node)
        res = await pipe.execute(raise_on_error=False, allow_redirections=False)
        first = res[0]
        # any error in place of the script's reply (a ConnectionError too, when the node died
        # under the pipeline) is raised: the caller's retry decides
        if isinstance(first, Exception):
            if is_noscript(first) and attempt == 0:
                await r.script_load(call.script.source)
                continue
            if isinstance(first, redis.exceptions.MovedError | redis.exceptions.AskError):
                manager = getattr(r, "nodes_manager", None)
                if manager is not None and isinstance(first, redis.exceptions.MovedError):
                    await manager.move_slot(first)
            raise first
        if isinstance(res[1], Exception):
            raise res[1]
        return first, int(res[1])
    raise AssertionError("unreachable")
