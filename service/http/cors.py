"""CORS: off unless `http.cors_origins` lists origins; then only those, never '*'."""

from __future__ import annotations

from aiohttp import web

from service.http.state import SETTINGS


def allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    if origin is not None and origin in request.app[SETTINGS].http.cors_origins:
        return origin
    return None


def cors_headers(request: web.Request) -> dict[str, str]:
    """The headers an allowed cross-origin request's response carries (streams included: they
    are sent before any middleware could add them)."""
    origin = allowed_origin(request)
    if origin is None:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def preflight(request: web.Request) -> web.Response | None:
    """The answer to a CORS preflight, or None when the request is not one."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    origin = allowed_origin(request)
    if origin is None:
        return None
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET, POST, DELETE",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID",
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        },
    )
