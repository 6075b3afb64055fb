"""The one middleware every request passes (`front`) and its steps: metrics, safe headers, CORS,
errors as JSON, the proxy's view of the client, authentication.

One middleware rather than one per step: aiohttp wraps each middleware in a partial and a frame
per request, and a submit is short enough for six of them to show (bench/http_submit.py)."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable

import msgspec
import structlog
from aiohttp import web

from service.core.errors import Forbidden, TidingsError, Unauthorized
from service.core.retry import describe, is_transient
from service.http.auth import SESSION_COOKIE
from service.http.cors import cors_headers, preflight
from service.http.metrics import observe
from service.http.state import AUTH, PRINCIPAL, SETTINGS

log = structlog.get_logger("tidings.http")
_encode = msgspec.json.Encoder().encode
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RETRY_AFTER_S = "2"
WATCH_PATH = re.compile(r"^/api/jobs/([0-9a-z]{26})(/events)?$")
PUBLIC_API = {"/api/session", "/api/contract"}


@web.middleware
async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request, outermost step first: timed and counted by its route; safe headers and
    CORS headers on whatever is answered (errors too: a page on another origin tells a 401 or
    404 from a network error only that way); CORS preflights answered here; then, with every
    error answered as JSON, the proxy's view of the client, authentication and the handler."""
    start = time.perf_counter()
    status = 500
    try:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            answer = preflight(request)
            resp: web.StreamResponse = (
                answer if answer is not None else error_body(403, "forbidden", "origin not allowed")
            )
        else:
            try:
                inner = proxied(request)
                authenticate(inner)
                resp = await handler(inner)
            except web.HTTPException as e:
                if e.status < 400:
                    raise  # a redirect
                resp = http_error(e)
            except Exception as e:
                resp = as_json(request, e)
            if not resp.prepared:  # (a stream sends its own CORS headers with its first bytes)
                resp.headers.update(cors_headers(request))
        if not resp.prepared:
            safe_headers(request, resp)
        status = resp.status
        return resp
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        observe(request, status, start)


def error_body(status: int, code: str, message: str, path: str | None = None) -> web.Response:
    err: dict[str, str] = {"code": code, "message": message}
    if path:
        err["path"] = path
    return web.Response(
        body=_encode({"error": err}), status=status, content_type="application/json"
    )


def http_error(e: web.HTTPException) -> web.Response:
    code = e.reason.lower().replace(" ", "_")
    return error_body(e.status, code, e.text or e.reason)


def as_json(request: web.Request, e: Exception) -> web.Response:
    """An error as JSON `{"error": {"code", "message"}}`; never a traceback. Redis being away,
    full, read-only or failing over is a 503 with Retry-After, never a 500."""
    if isinstance(e, TidingsError):
        resp = error_body(e.status, e.code, e.message, e.path)
        if e.status in (503, 429):
            resp.headers["Retry-After"] = RETRY_AFTER_S if e.status == 503 else "1"
        if e.status == 401:
            resp.headers["WWW-Authenticate"] = "Bearer"
        return resp
    if is_transient(e):
        log.warning("http.redis_unavailable", path=request.path, error=describe(e))
        resp = error_body(503, "unavailable", "redis is unavailable; retry shortly")
        resp.headers["Retry-After"] = RETRY_AFTER_S
        return resp
    log.exception("http.error", path=request.path, exc_info=e)
    return error_body(500, "internal", "internal error")


def proxied(request: web.Request) -> web.Request:
    """Behind a trusted proxy (`http.trust_proxy`): the request as the proxy saw it (scheme from
    X-Forwarded-Proto, client address from the last X-Forwarded-For hop), so cookies get
    `Secure` and limits are per client, not per proxy."""
    if not request.app[SETTINGS].http.trust_proxy:
        return request
    changes: dict[str, str] = {}
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
    if proto in ("http", "https"):
        changes["scheme"] = proto
    hop = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
    with contextlib.suppress(ValueError):
        changes["remote"] = str(ipaddress.ip_address(hop))
    return request.clone(**changes) if changes else request  # type: ignore[arg-type]


def authenticate(request: web.Request) -> None:
    """Every /api call (and /metrics unless `http.metrics_public`) needs a key (Bearer or the
    dashboard's session cookie), or a watch token for that one job's status and events. With no
    keys configured, everything is open (and the service only binds loopback). Sets the
    request's principal, or raises Unauthorized / Forbidden."""
    auth = request.app[AUTH]
    path = request.path
    guarded = path.startswith("/api/") or (
        path == "/metrics" and not request.app[SETTINGS].http.metrics_public
    )
    if not auth.enabled or not guarded or path in PUBLIC_API:
        request[PRINCIPAL] = request.remote or "local"
        return
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthorized("use Authorization: Bearer <key>")
        if not (credential.isascii() and credential.isprintable()):
            raise Forbidden("invalid API key")
        fp = auth.check_key(credential)
        if fp is None:
            raise Forbidden("invalid API key")
        request[PRINCIPAL] = fp
        return
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        fp = auth.check_session(cookie)
        if fp is not None:
            request[PRINCIPAL] = fp
            return
    token = request.query.get("token")
    if token is not None:
        m = WATCH_PATH.match(path)
        if m is None or request.method != "GET":
            raise Forbidden("a watch token opens only its job's status and events")
        verdict = auth.check_watch_token(token, m.group(1))
        if verdict == "expired":
            raise Unauthorized("watch token expired")
        if verdict != "ok":
            raise Forbidden("invalid watch token")
        request[PRINCIPAL] = "watch:" + m.group(1)
        return
    raise Unauthorized("missing credentials: Authorization: Bearer <key>")


def safe_headers(request: web.Request, resp: web.StreamResponse) -> None:
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.startswith("/static/"):
        # revalidate (cheap 304s) so a new release's modules are never mixed with old ones
        resp.headers.setdefault("Cache-Control", "no-cache")
