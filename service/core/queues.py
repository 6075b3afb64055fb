"""The deployment's queues: created on first use up to `jobs.max_queues`, paused and resumed.

Bounding the number of queues bounds every per-queue cost (maintenance, stats, metrics labels):
a client cannot make Redis loop over 60,000 names by submitting to 60,000 of them.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from service.core.errors import Invalid
from service.core.keys import Keys
from service.core.scripts import Ops
from service.core.wire import QUEUE_RE

_encode = msgspec.json.Encoder().encode
# how long a queue known to be registered is not checked again: short, so a Redis that lost
# its data (or a FLUSHALL) gets the queue back in its registry within seconds
KNOWN_S = 10.0


class Queues:
    def __init__(self, r: Any, keys: Keys, ops: Ops, *, cap: int) -> None:
        self._r = r
        self._keys = keys
        self._ops = ops
        self._cap = cap
        self._known: set[str] = set()
        self._known_at = 0.0
        self._full_until = 0.0  # the registry said "full" lately: refuse new names locally

    async def ensure(self, name: str) -> None:
        """Register `name` if it is new (Invalid when the cap is reached)."""
        if not QUEUE_RE.match(name):
            raise Invalid("invalid queue name", path="$.queue")
        if name in self._known and time.monotonic() - self._known_at < KNOWN_S:
            return
        if time.monotonic() < self._full_until:
            raise self._full()  # a flood of new names costs Redis nothing
        verdict = await self._ops.register_queue(
            name, self._cap, _encode({"created": int(time.time() * 1000)})
        ).run(self._r)
        if verdict == "full":
            # remember every name there is (at most the cap), so existing queues still pass
            now = time.monotonic()
            self._known, self._known_at, self._full_until = set(await self.names()), now, now + 1
            if name in self._known:
                return
            raise self._full()
        if verdict != "ok":
            raise Invalid(f"queue {name!r} refused ({verdict})", path="$.queue")
        if time.monotonic() - self._known_at >= KNOWN_S:
            self._known = set()
            self._known_at = time.monotonic()
        self._known.add(name)

    def _full(self) -> Invalid:
        return Invalid(
            f"too many queues (jobs.max_queues = {self._cap}); use an existing one",
            path="$.queue",
        )

    # plain commands through `execute_command`: the client may be redis-py's or the lean one
    # for hot calls (`resp.FastRedis`), which has no per-command methods

    async def names(self) -> list[str]:
        raw = await self._r.execute_command("HKEYS", self._keys.queues())
        return sorted(n.decode() for n in raw)

    async def paused(self) -> set[str]:
        return {n.decode() for n in await self._r.execute_command("SMEMBERS", self._keys.paused())}

    async def set_paused(self, name: str, paused: bool) -> None:
        await self._r.execute_command("SADD" if paused else "SREM", self._keys.paused(), name)
