"""`/metrics` (prometheus_client): the whole system's figures read from Redis at each scrape, so
any service process gives the same truth whatever the number of processes and across restarts,
plus this process's own (SSE watchers and cuts, hub, HTTP requests).

The job counters and wait/run histograms are kept by the same scripts that make the transitions
(`stats` hash per partition): exact, never reset by a process restart. Labels are bounded: queue
names are capped (`jobs.max_queues`), task names come from the catalog, routes are the router's
patterns and methods a fixed set; never a job id. The README lists every metric.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import redis.exceptions
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from service.core.keys import Keys
from service.core.scripts import BUCKETS_MS
from service.http.state import HUB, QUERIES, WATCHERS
from service.sse.watchers import FirehoseWatcher, JobWatcher

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HTTP_REQUESTS = web.AppKey("http_requests", Counter)
HTTP_LATENCY = web.AppKey("http_latency", Histogram)
# (route, method, status) -> the two labelled series, looked up once (labels() takes a lock)
HTTP_SERIES = web.AppKey("http_series", dict)
REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# any other method (a client may send anything) is counted as "other": a bounded label
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
log = structlog.get_logger("tidings.http")


class Snapshot(Collector):
    """Metric families computed before a scrape (Redis is read asynchronously first)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def setup(app: web.Application) -> None:
    """Per-app registry and HTTP instruments (nothing process-global: tests run many apps)."""
    reg = CollectorRegistry(auto_describe=True)
    app[REGISTRY] = reg
    app[HTTP_REQUESTS] = Counter(
        "tidings_http_requests",
        "HTTP requests answered, by route and status",
        ["route", "method", "status"],
        registry=reg,
    )
    app[HTTP_SERIES] = {}
    app[HTTP_LATENCY] = Histogram(
        "tidings_http_request_duration_seconds",
        "Time to answer HTTP requests (streams: until their headers are sent)",
        ["route", "method"],
        registry=reg,
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    )


def observe(request: web.Request, status: int, start: float) -> None:
    """Count and time a request by its route pattern (never the raw path: it holds ids)."""
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "unmatched"
    if route.startswith("/static/"):
        route = "/static"
    method = request.method if request.method in METHODS else "other"
    app = request.app
    series = app[HTTP_SERIES].get((route, method, status))
    if series is None:
        series = app[HTTP_SERIES][route, method, status] = (
            app[HTTP_REQUESTS].labels(route, method, str(status)),
            app[HTTP_LATENCY].labels(route, method),
        )
    series[0].inc()
    series[1].observe(time.perf_counter() - start)


def _split(field: str) -> list[str]:
    return field.split("|")


async def system_families(r: Any, keys: Keys, queries: Any) -> tuple[list[Metric], list[int]]:
    """The deployment-wide families, read from every partition's stats hash and the queues;
    and each partition's event counter (the head the hub lag is measured against)."""
    submitted: dict[tuple[str, str], float] = defaultdict(float)
    finished: dict[tuple[str, str, str], float] = defaultdict(float)
    retried: dict[tuple[str, str], float] = defaultdict(float)
    dead: dict[tuple[str, str], float] = defaultdict(float)
    requeued: dict[tuple[str, str], float] = defaultdict(float)
    hist: dict[str, dict[tuple[str, str], list[float]]] = {"w": {}, "r": {}}
    sums: dict[str, dict[tuple[str, str], float]] = {
        "w": defaultdict(float),
        "r": defaultdict(float),
    }
    nb = len(BUCKETS_MS) + 1
    heads: list[int] = []
    for k in range(keys.partitions):
        raw = await r.hgetall(keys.stats(k))
        heads.append(int(raw.get(b"n", b"0")))
        for f, v in raw.items():
            parts = _split(f.decode())
            kind, value = parts[0], float(v)
            if kind == "sub" and len(parts) == 3:
                submitted[(parts[1], parts[2])] += value
            elif kind == "fin" and len(parts) == 4:
                finished[(parts[1], parts[2], parts[3])] += value
            elif kind == "ret" and len(parts) == 3:
                retried[(parts[1], parts[2])] += value
            elif kind == "dl" and len(parts) == 3:
                dead[(parts[1], parts[2])] += value
            elif kind == "rq" and len(parts) == 3:
                requeued[(parts[1], parts[2])] += value
            elif kind in ("wb", "rb") and len(parts) == 4:
                counts = hist[kind[0]].setdefault((parts[1], parts[2]), [0.0] * nb)
                i = int(parts[3]) - 1
                if 0 <= i < nb:
                    counts[i] += value
            elif kind in ("ws", "rs") and len(parts) == 3:
                sums[kind[0]][(parts[1], parts[2])] += value / 1000
    # every (queue, task) seen gets all its counters, at 0 until they move: a series that
    # appears only at its first increment hides that increment from rate() and increase()
    for q, t in {*submitted, *((q, t) for q, t, _ in finished)}:
        for o in ("succeeded", "failed", "cancelled"):
            finished.setdefault((q, t, o), 0.0)
        for series in (submitted, retried, dead, requeued):
            series.setdefault((q, t), 0.0)
    out: list[Metric] = []
    for name, doc, series in (
        ("tidings_jobs_submitted", "Jobs accepted", submitted),
        (
            "tidings_jobs_retried",
            "Attempts that failed (an error, or a lost worker) and were tried again",
            retried,
        ),
        (
            "tidings_jobs_dead_lettered",
            "Jobs that failed for good and went to their queue's dead letters",
            dead,
        ),
        (
            "tidings_jobs_requeued",
            "Failed or cancelled jobs put back in their queue by hand (POST .../retry)",
            requeued,
        ),
    ):
        c = CounterMetricFamily(name, doc, labels=["queue", "task"])
        for (q, t), v in sorted(series.items()):
            c.add_metric([q, t], v)
        out.append(c)
    c = CounterMetricFamily(
        "tidings_jobs_finished",
        "Jobs that reached a terminal state, by outcome (succeeded, failed, cancelled)",
        labels=["queue", "task", "outcome"],
    )
    for (q, t, o), v in sorted(finished.items()):
        c.add_metric([q, t, o], v)
    out.append(c)
    bounds = [str(b / 1000) for b in BUCKETS_MS] + ["+Inf"]
    for kind, name, doc in (
        ("w", "tidings_job_wait_seconds", "Time from queued to started, per attempt"),
        ("r", "tidings_job_run_seconds", "Time from started to the end, per attempt that ended"),
    ):
        h = HistogramMetricFamily(name, doc, labels=["queue", "task"])
        for (q, t), counts in sorted(hist[kind].items()):
            running = 0.0
            buckets = []
            for b, n in zip(bounds, counts, strict=True):
                running += n
                buckets.append((b, running))
            h.add_metric([q, t], buckets, sums[kind].get((q, t), 0.0))
        out.append(h)
    stats = await queries.queues()
    jobs = GaugeMetricFamily(
        "tidings_queue_jobs", "Jobs in a queue by state", labels=["queue", "state"]
    )
    age = GaugeMetricFamily(
        "tidings_queue_oldest_age_seconds",
        "Age of the oldest job waiting to start (the queue's lag)",
        labels=["queue"],
    )
    workers = GaugeMetricFamily(
        "tidings_workers", "Live worker processes consuming a queue", labels=["queue"]
    )
    paused = GaugeMetricFamily(
        "tidings_queue_paused", "1 when the queue is paused", labels=["queue"]
    )
    now_ms = time.time() * 1000
    for s in stats.values():
        for state in ("queued", "running", "scheduled", "dead"):
            jobs.add_metric([s.name, state], getattr(s, state))
        oldest = (
            0.0 if s.oldest_queued_ms is None else max(0.0, (now_ms - s.oldest_queued_ms) / 1000)
        )
        age.add_metric([s.name], oldest)
        workers.add_metric([s.name], s.workers)
        paused.add_metric([s.name], 1 if s.paused else 0)
    out += [jobs, age, workers, paused]
    head = CounterMetricFamily(
        "tidings_events_written", "Job events written (the partitions' event counters, summed)"
    )
    head.add_metric([], sum(heads))
    out.append(head)
    return out, heads


def process_families(app: web.Application, heads: list[int]) -> list[Metric]:
    watchers = app[WATCHERS]
    hub = app[HUB]
    w = GaugeMetricFamily(
        "tidings_sse_watchers", "Open SSE streams of this process, by kind", labels=["kind"]
    )
    w.add_metric(["job"], watchers.count(JobWatcher))
    w.add_metric(["firehose"], watchers.count(FirehoseWatcher))
    cuts = CounterMetricFamily(
        "tidings_sse_cuts",
        "SSE streams this process cut off or refused, by reason",
        labels=["reason"],
    )
    for reason, n in sorted(watchers.cuts.items()):
        cuts.add_metric([reason], n)
    read = CounterMetricFamily("tidings_hub_events_read", "Firehose events this process read")
    read.add_metric([], hub.events_read)
    gaps = CounterMetricFamily(
        "tidings_hub_gaps", "Times this process's hub fell behind the firehose trimming"
    )
    gaps.add_metric([], hub.gaps)
    lag = GaugeMetricFamily(
        "tidings_hub_lag_events", "Events written but not yet read by this process's hub"
    )
    lag.add_metric([], sum(hub.lag(k, h) for k, h in enumerate(heads)))
    pid = GaugeMetricFamily("tidings_process_info", "This service process", labels=["pid"])
    pid.add_metric([str(os.getpid())], 1)
    return [w, cuts, read, gaps, lag, pid]


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: the deployment's figures from Redis, then this process's own. With Redis
    away, the process's own figures still come, with `tidings_redis_up 0`."""
    app = request.app
    queries = app[QUERIES]
    up = GaugeMetricFamily("tidings_redis_up", "1 when this scrape could read Redis")
    try:
        fams, heads = await system_families(queries.r, queries.keys, queries)
        up.add_metric([], 1)
    except (redis.exceptions.RedisError, OSError) as e:
        log.warning("metrics.redis_unavailable", error=str(e)[:200])
        fams, heads = [], []
        up.add_metric([], 0)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Snapshot([up, *fams, *process_families(app, heads)]))
    body = generate_latest(reg) + generate_latest(app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
