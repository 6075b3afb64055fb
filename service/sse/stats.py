"""The firehose's `stats` event: the deployment's figures, pushed about once a second.

A page that shows queue figures next to live rows must not poll for them, and must agree with
GET /api/queues: so one loop per service process computes the figures with the very function
that endpoint uses (`service.stats.stats_event`), once per interval whatever the number of
watchers, and only while some firehose watcher asked for them (`?stats=1`). The frame carries no
`id:` line, so a client's Last-Event-ID (its place in the job events) is left as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from service.core.hub import sse_frame
from service.core.retry import is_transient
from service.core.wire import encode_public
from service.queries import Queries
from service.sse.watchers import FirehoseWatcher, WatcherSet
from service.stats import TrendReader, stats_event

log = structlog.get_logger("tidings.sse")


class StatsFeed:
    def __init__(
        self, queries: Queries, trend: TrendReader, watchers: WatcherSet, interval_s: float
    ) -> None:
        self.queries = queries
        self.trend = trend
        self.watchers = watchers
        self.interval_s = interval_s
        self._frame: bytes | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.computed = 0  # figures computed so far (once per tick, whatever the watchers)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sse-stats")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _targets(self) -> list[FirehoseWatcher]:
        return [
            w
            for w in self.watchers.watchers
            if isinstance(w, FirehoseWatcher) and w.stats and w.live and not w.closed.done()
        ]

    async def frame(self, max_age_s: float | None = None) -> bytes:
        """The latest figures as an SSE frame, computed again when older than `max_age_s`
        (default: the interval; concurrent callers share one computation)."""
        max_age = self.interval_s if max_age_s is None else max_age_s
        async with self._lock:
            if self._frame is None or time.monotonic() - self._at >= max_age:
                event = await stats_event(self.queries, self.trend)
                self._frame = sse_frame(None, b"stats", encode_public(event))
                self._at = time.monotonic()
                self.computed += 1
            return self._frame

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            if self._targets():
                try:
                    frame = await self.frame(max_age_s=self.interval_s / 2)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    # the next tick tries again; the page keeps the figures it has
                    if is_transient(e):
                        log.warning("sse.stats_unavailable", error=str(e)[:200])
                    else:
                        log.exception("sse.stats_error")
                else:
                    for w in self._targets():  # those still there after the await
                        w.write_raw(frame)
            await asyncio.sleep(max(0.05, self.interval_s - (loop.time() - began)))
