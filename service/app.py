"""The aiohttp application: `create_app(config, redis_url)`."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
import structlog
from aiohttp import web

from service import api, contract, streams
from service.auth import SESSION_COOKIE, Auth, load_signing_key
from service.checks import warn_about_server
from service.config import Config
from service.contract import Keys
from service.errors import Forbidden, TidingsError, Unauthorized
from service.hub import Hub
from service.producer import Producer
from service.sse import WatcherSet
from service.state import AUTH, HUB, PRINCIPAL, PRODUCER, SETTINGS, WATCHERS
from workers.registry import REGISTRY, load_modules

log = structlog.get_logger("tidings.http")
_encode = msgspec.json.Encoder().encode
STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(status: int, code: str, message: str, path: str | None = None) -> web.Response:
    err: dict[str, str] = {"code": code, "message": message}
    if path:
        err["path"] = path
    return web.Response(
        body=_encode({"error": err}), status=status, content_type="application/json"
    )


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON `{"error": {"code", "message"}}`; never a traceback."""
    try:
        return await handler(request)
    except TidingsError as e:
        resp = error_body(e.status, e.code, e.message, e.path)
        if e.status in (503, 429):
            resp.headers["Retry-After"] = "2" if e.status == 503 else "1"
        if e.status == 401:
            resp.headers["WWW-Authenticate"] = "Bearer"
        return resp
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = e.reason.lower().replace(" ", "_")
        return error_body(e.status, code, e.text or e.reason)
    except (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        ConnectionRefusedError,
    ) as e:
        log.warning("http.redis_unavailable", error=str(e))
        resp = error_body(503, "unavailable", "redis is unavailable; retry shortly")
        resp.headers["Retry-After"] = "2"
        return resp
    except Exception:
        log.exception("http.error", path=request.path)
        return error_body(500, "internal", "internal error")


WATCH_PATH = re.compile(r"^/api/jobs/([0-9a-z]{26})(/events)?$")
PUBLIC_API = {"/api/session"}


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api call needs a key (Bearer or the dashboard's session cookie), or a watch token
    for that one job's status and events. With no keys configured, everything is open (and the
    service only binds loopback)."""
    auth = request.app[AUTH]
    if not auth.enabled or not request.path.startswith("/api/") or request.path in PUBLIC_API:
        request[PRINCIPAL] = request.remote or "local"
        return await handler(request)
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthorized("use Authorization: Bearer <key>")
        fp = auth.check_key(credential.strip())
        if fp is None:
            raise Forbidden("invalid API key")
        request[PRINCIPAL] = fp
        return await handler(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        fp = auth.check_session(cookie)
        if fp is not None:
            request[PRINCIPAL] = fp
            return await handler(request)
    token = request.query.get("token")
    if token is not None:
        m = WATCH_PATH.match(request.path)
        if m is None or request.method != "GET":
            raise Forbidden("a watch token opens only its job's status and events")
        verdict = auth.check_watch_token(token, m.group(1))
        if verdict == "expired":
            raise Unauthorized("watch token expired")
        if verdict != "ok":
            raise Forbidden("invalid watch token")
        request[PRINCIPAL] = "watch:" + m.group(1)
        return await handler(request)
    raise Unauthorized("missing credentials: Authorization: Bearer <key>")


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Off unless http.cors_origins lists origins; then only those, never '*'."""
    allowed = request.app[SETTINGS].http.cors_origins
    origin = request.headers.get("Origin")
    ok = origin is not None and origin in allowed
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not ok:
            return error_body(403, "forbidden", "origin not allowed")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin or "",
                "Access-Control-Allow-Methods": "GET, POST, DELETE",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID",
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    resp = await handler(request)
    if ok and not resp.prepared:
        resp.headers["Access-Control-Allow-Origin"] = origin or ""
        resp.headers["Access-Control-Allow-Credentials"] = "true"
        resp.headers["Vary"] = "Origin"
    return resp


@web.middleware
async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    if not resp.prepared:
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.startswith("/static/"):
            # revalidate (cheap 304s) so a new release's modules are never mixed with old ones
            resp.headers.setdefault("Cache-Control", "no-cache")
    return resp


async def job_events(request: web.Request) -> web.StreamResponse:
    accept = request.headers.get("Accept", "")
    if "application/json" in accept and "text/event-stream" not in accept:
        return await api.job_event_list(request)
    return await streams.job_events(request)


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC / "index.html"
    if not page.exists():
        return web.Response(text="Tidings is running. See /api/queues.", content_type="text/plain")
    return web.FileResponse(
        page, headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP}
    )


def create_app(cfg: Config, redis_url: str) -> web.Application:
    load_modules(cfg.workers.tasks)
    app = web.Application(
        middlewares=[headers, errors, cors, authenticate], client_max_size=cfg.http.max_body_bytes
    )
    app[SETTINGS] = cfg
    app[AUTH] = Auth(cfg.auth.api_keys, load_signing_key(cfg), cfg.auth.token_ttl_s)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        opts = contract.client_options()
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=10, timeout=5, socket_timeout=5, **opts
        )
        r = aioredis.Redis(connection_pool=pool, retry=opts["retry"])
        keys = Keys(cfg.redis.prefix, cfg.redis.partitions)
        app[PRODUCER] = Producer(r, keys=keys, jobs=cfg.jobs, registry=dict(REGISTRY), strict=True)
        app[HUB] = Hub(r, keys, block_ms=2000)
        app[WATCHERS] = WatcherSet(cfg.sse)
        app[WATCHERS].start()
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await warn_about_server(r)
        yield
        await app[HUB].close()
        await r.aclose()
        await pool.disconnect()

    async def end_streams(app: web.Application) -> None:
        # graceful shutdown: end every stream now so clients reconnect to another process
        await app[WATCHERS].close()

    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(end_streams)
    r = app.router
    r.add_post("/api/jobs", api.submit)
    r.add_get("/api/jobs", api.list_jobs)
    r.add_get("/api/jobs/{id}", api.get_job)
    r.add_get("/api/jobs/{id}/events", job_events)
    r.add_post("/api/jobs/{id}/cancel", api.cancel)
    r.add_post("/api/jobs/{id}/retry", api.retry)
    r.add_get("/api/events", streams.firehose)
    r.add_get("/api/tasks", api.tasks)
    r.add_get("/api/queues", api.queues)
    r.add_get("/api/queues/{name}/dead", api.dead)
    r.add_get("/api/session", api.session_info)
    r.add_post("/api/session", api.session_login)
    r.add_delete("/api/session", api.session_logout)
    r.add_get("/healthz", api.healthz)
    r.add_get("/readyz", api.readyz)
    r.add_get("/metrics", api.metrics)
    r.add_get("/", index)
    r.add_get("/jobs/{id}", index)
    if STATIC.exists():
        r.add_static("/static/", STATIC)
    return app
