"""The lease thread: renews running jobs' leases and the worker's heartbeat.

It runs on its own thread and connection, so a task that hogs the event loop or the CPU cannot
starve it. Each renewal also tells the worker which of its jobs were cancelled or taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from service.core.keys import Keys
from service.core.retry import is_transient
from service.core.scripts import Ops
from service.core.wire import iso
from workers.writer import Running

log = structlog.get_logger("tidings.worker")
_encode = msgspec.json.Encoder().encode


class LeaseThread:
    def __init__(
        self,
        *,
        make_client: Callable[[], Any],
        keys: Keys,
        ops: Ops,
        name: str,
        info: dict[str, Any],
        interval: float,
        running: Callable[[], list[Running]],
        on_verdict: Callable[[str, int, str], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._make_client = make_client
        self._keys = keys
        self._ops = ops
        self._name = name
        self._info = info
        self._interval = interval
        self._running = running
        self._on_verdict = on_verdict
        self._loop = loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="lease", daemon=True)
        self.last_ok = time.monotonic()
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _main(self) -> None:
        r = self._make_client()
        try:
            while not self._stop.wait(self._interval):
                try:
                    self._renew(r)
                    self._heartbeat(r)
                    self.last_ok = time.monotonic()
                    if self._failing:
                        log.info("lease.recovered")
                        self._failing = False
                except Exception as e:
                    # say it once per episode, not every second (an OOM or a failover can last)
                    if not self._failing:
                        self._failing = True
                        if is_transient(e):
                            log.warning("lease.redis_unavailable", error=str(e)[:200])
                        else:
                            log.exception("lease.error")
        finally:
            with contextlib.suppress(Exception):
                r.zrem(self._keys.workers(), self._name)
                r.delete(self._keys.worker(self._name))
            with contextlib.suppress(Exception):
                r.close()

    def _renew(self, r: Any) -> None:
        by_part: dict[int, list[Running]] = {}
        for j in self._running():
            if not j.lost:
                by_part.setdefault(j.partition, []).append(j)
        for k, group in by_part.items():
            res = self._ops.renew(k, self._name, [(j.id, j.queue, j.run) for j in group]).run_sync(
                r
            )
            for j, verdict in zip(group, res, strict=True):
                if verdict != "ok":
                    self._loop.call_soon_threadsafe(self._on_verdict, j.id, j.run, verdict)

    def _heartbeat(self, r: Any) -> None:
        now = time.time()
        running = [j.id for j in self._running()]
        info = dict(self._info, heartbeat_at=iso(int(now * 1000)), running=running[:256])
        ttl_ms = int(self._interval * 3000) + 2000
        # one slot ({prefix}): a plain pipeline also works on a cluster
        with r.pipeline(transaction=False) as pipe:
            pipe.zadd(self._keys.workers(), {self._name: now})
            pipe.set(self._keys.worker(self._name), _encode(info), px=ttl_ms)
            pipe.zremrangebyscore(self._keys.workers(), "-inf", now - ttl_ms / 1000)
            pipe.execute()
