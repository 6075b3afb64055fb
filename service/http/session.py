"""The dashboard's sign-in: an API key traded for an HttpOnly session cookie."""

from __future__ import annotations

import msgspec
from aiohttp import web

from service.core.errors import Forbidden, TooMany
from service.http.auth import SESSION_COOKIE, SESSION_TTL_S
from service.http.jobs import json_response, read_json
from service.http.state import AUTH, QUERIES


class Login(msgspec.Struct, forbid_unknown_fields=True):
    key: str


_login_decoder = msgspec.json.Decoder(Login)


async def session_info(request: web.Request) -> web.Response:
    """GET /api/session: whether keys are required and whether this browser has a session."""
    auth = request.app[AUTH]
    cookie = request.cookies.get(SESSION_COOKIE)
    signed_in = not auth.enabled or (cookie is not None and auth.check_session(cookie) is not None)
    return json_response({"auth": auth.enabled, "signed_in": signed_in})


async def session_login(request: web.Request) -> web.Response:
    """POST /api/session {"key"}: exchange an API key for an HttpOnly session cookie, so the
    dashboard never keeps a key in script-readable storage or in a URL."""
    auth = request.app[AUTH]
    body = await read_json(request, _login_decoder)
    # slow key guessing down: a few attempts per second per client address (the proxy's view
    # of it with http.trust_proxy)
    login_slot = "login:" + (request.remote or "")
    if auth.enabled and not await request.app[QUERIES].take_rate(login_slot, 5):
        raise TooMany("too many sign-in attempts")
    fp = auth.check_key(body.key) if auth.enabled else "open"
    if fp is None:
        raise Forbidden("invalid API key")
    resp = json_response({"auth": auth.enabled, "signed_in": True})
    resp.set_cookie(
        SESSION_COOKIE,
        auth.session(fp),
        max_age=SESSION_TTL_S,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )
    return resp


async def session_logout(request: web.Request) -> web.Response:
    resp = json_response({"signed_in": False})
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp
