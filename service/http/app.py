"""The aiohttp application: `create_app(config, redis_url, registry)`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import structlog
from aiohttp import web

from service.core import connect
from service.core.checks import warn_about_server
from service.core.config import Config
from service.core.keys import Keys
from service.core.tasks import TaskSpec
from service.core.tracing import NOOP, Tracing
from service.http import bulk, jobs, metrics, ops, session
from service.http.auth import Auth, load_signing_key
from service.http.middleware import front
from service.http.state import (
    AUTH,
    HUB,
    PRODUCER,
    QUERIES,
    SETTINGS,
    STATS,
    TRACING,
    TREND,
    WATCHERS,
)
from service.producer import Producer
from service.sse import streams
from service.sse.stats import StatsFeed
from service.sse.watchers import WatcherSet
from service.stats import TrendReader

log = structlog.get_logger("tidings.http")
STATIC = Path(__file__).parent.parent / "static"
CSP = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


class _NoRequestBytes(logging.Filter):
    """aiohttp logs a malformed request with its first bytes, which can hold an Authorization
    header or a token: keep the line, drop the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = "bad HTTP request from a client: %s"
            record.args = (type(exc).__name__,)
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_aiohttp() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _NoRequestBytes) for f in logger.filters):
        logger.addFilter(_NoRequestBytes())


async def job_events(request: web.Request) -> web.StreamResponse:
    accept = request.headers.get("Accept", "")
    if "application/json" in accept and "text/event-stream" not in accept:
        return await jobs.job_event_list(request)
    return await streams.job_events(request)


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC / "index.html"
    if not page.exists():
        return web.Response(text="Tidings is running. See /api/queues.", content_type="text/plain")
    return web.FileResponse(
        page, headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP}
    )


def create_app(
    cfg: Config,
    redis_url: str,
    registry: Mapping[str, TaskSpec] | None = None,
    *,
    tracing: Tracing = NOOP,
) -> web.Application:
    """The service. `registry`: tasks whose payloads are validated at submit (others are known
    from the catalog the workers publish); `tracing`: where spans go (off by default)."""
    _quiet_aiohttp()
    app = web.Application(
        middlewares=[front],
        client_max_size=cfg.http.max_body_bytes,
    )
    app[SETTINGS] = cfg
    app[TRACING] = tracing
    app[AUTH] = Auth(cfg.auth.api_keys, load_signing_key(cfg), cfg.auth.token_ttl_s)
    metrics.setup(app)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        keys = Keys(cfg.redis.prefix, cfg.redis.partitions)
        r = connect.connect(cfg.redis, redis_url, max_connections=20)
        # the hub's blocking reads (one per partition) on a pool of their own
        hub_r = connect.connect(cfg.redis, redis_url, max_connections=keys.partitions + 2)
        fast = connect.connect_fast(cfg.redis, redis_url, r)
        producer = Producer(
            r,
            keys=keys,
            jobs=cfg.jobs,
            registry=dict(registry or {}),
            redis_config=cfg.redis,
            hub_client=hub_r,
            fast_client=fast,
            hub_reader=connect.fast_reader(cfg.redis, redis_url),
        )
        app[PRODUCER] = producer
        app[QUERIES] = producer.queries
        app[HUB] = producer.hub
        app[WATCHERS] = WatcherSet(cfg.sse)
        app[WATCHERS].start()
        app[TREND] = TrendReader(r, keys)
        app[STATS] = StatsFeed(
            producer.queries, app[TREND], app[WATCHERS], cfg.sse.stats_interval_s
        )
        app[STATS].start()
        with contextlib.suppress(Exception):
            await warn_about_server(r)
        yield
        await app[STATS].close()
        await producer.close()
        await r.aclose()
        await hub_r.aclose()
        if fast is not r:
            await fast.aclose()

    async def end_streams(app: web.Application) -> None:
        # graceful shutdown: end every stream now so clients reconnect to another process
        await app[WATCHERS].close()

    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(end_streams)
    r = app.router
    r.add_post("/api/jobs", jobs.submit)
    r.add_post("/api/jobs/batch", jobs.submit_batch)
    r.add_post("/api/jobs/bulk", bulk.jobs)
    r.add_get("/api/jobs", jobs.list_jobs)
    r.add_get("/api/jobs/{id}", jobs.get_job)
    r.add_get("/api/jobs/{id}/events", job_events)
    r.add_post("/api/jobs/{id}/cancel", jobs.cancel)
    r.add_post("/api/jobs/{id}/retry", jobs.retry)
    r.add_post("/api/jobs/{id}/token", jobs.token)
    r.add_get("/api/events", streams.firehose)
    r.add_get("/api/tasks", ops.tasks)
    r.add_get("/api/queues", ops.queues)
    r.add_get("/api/queues/{name}/dead", ops.dead)
    r.add_post("/api/queues/{name}/pause", ops.pause)
    r.add_post("/api/queues/{name}/resume", ops.resume)
    r.add_post("/api/queues/{name}/dead/retry", bulk.retry_dead)
    r.add_post("/api/queues/{name}/dead/purge", bulk.purge_dead)
    r.add_post("/api/queues/{name}/purge", bulk.purge_finished)
    r.add_get("/api/stats/trend", ops.trend)
    r.add_get("/api/workers", ops.workers)
    r.add_get("/api/contract", ops.contract)
    r.add_get("/api/session", session.session_info)
    r.add_post("/api/session", session.session_login)
    r.add_delete("/api/session", session.session_logout)
    r.add_get("/healthz", ops.healthz)
    r.add_get("/readyz", ops.readyz)
    r.add_get("/metrics", metrics.metrics)
    r.add_get("/", index)
    r.add_get("/jobs/{id}", index)
    r.add_get("/static/contract.js", ops.contract_js)  # before the static files: generated
    if STATIC.exists():
        r.add_static("/static/", STATIC)
    return app
