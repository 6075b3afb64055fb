"""A worker process's own metrics: event-loop lag, jobs in flight, attempts by outcome, CPU and
memory (prometheus_client's process collector), in a registry of its own.

The deployment's figures (queues, outcomes, wait and run times) come from any service process's
`/metrics`, read from Redis; these are for those who also scrape the workers. With
`workers.metrics_port` set, worker process i serves them on that port + i (`serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    start_http_server,
)

LAG_PROBE_S = 0.25
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WorkerMetrics:
    """One per worker process (nothing process-global: tests run several workers at once)."""

    def __init__(
        self, *, running: Callable[[], int], concurrency: int, worker: str, version: str
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.loop_lag = Histogram(
            "tidings_worker_event_loop_lag_seconds",
            "How late the event loop ran a timer (sampled every 0.25 s)",
            registry=self.registry,
            buckets=LAG_BUCKETS,
        )
        self._last_probe = time.monotonic()
        blocked = Gauge(
            "tidings_worker_event_loop_blocked_seconds",
            "How long the event loop has gone without running its lag probe, beyond the probe's "
            "interval: above 0 while something blocks the loop right now",
            registry=self.registry,
        )
        blocked.set_function(self._blocked)
        jobs = Gauge(
            "tidings_worker_jobs_running", "Attempts this process runs now", registry=self.registry
        )
        jobs.set_function(lambda: float(running()))
        slots = Gauge(
            "tidings_worker_concurrency",
            "Attempts this process runs at most at once",
            registry=self.registry,
        )
        slots.set(concurrency)
        self.attempts = Counter(
            "tidings_worker_attempts",
            "Attempts this process ended, by task and outcome (succeeded, error, fail, "
            "cancelled, handback, lost)",
            ["task", "outcome"],
            registry=self.registry,
        )
        Info("tidings_worker", "This worker process", registry=self.registry).info(
            {"worker": worker, "version": version}
        )
        self._server: Any = None

    def _blocked(self) -> float:
        return max(0.0, time.monotonic() - self._last_probe - LAG_PROBE_S)

    def attempt_ended(self, task: str, outcome: str) -> None:
        self.attempts.labels(task, outcome or "lost").inc()

    async def probe_loop(self) -> None:
        """Measure how late the loop wakes from a short sleep, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            self._last_probe = time.monotonic()
            self.loop_lag.observe(max(0.0, loop.time() - before - LAG_PROBE_S))

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics on host:port from a thread of its own (answers even while the event
        loop is blocked). Raises OSError when the port is taken."""
        self._server, _thread = start_http_server(port, host, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.shutdown()
                self._server.server_close()
            self._server = None
