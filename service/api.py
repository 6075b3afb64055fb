"""JSON endpoints: jobs, tasks, queues, health and metrics."""

from __future__ import annotations

import os
from typing import Any

import msgspec
import redis.exceptions
from aiohttp import web

from service.auth import SESSION_COOKIE, SESSION_TTL_S
from service.contract import Job
from service.errors import BadRequest, Forbidden, Invalid, TooMany, Unavailable
from service.producer import SubmitRequest
from service.state import AUTH, HUB, PRINCIPAL, PRODUCER, SETTINGS, WATCHERS

_encode = msgspec.json.Encoder().encode
_submit_decoder = msgspec.json.Decoder(SubmitRequest)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encode(body), status=status, content_type="application/json", headers=headers
    )


def with_urls(request: web.Request, job: Job) -> Job:
    """Attach the job's watch links, each with a read-only token scoped to this job."""
    base = request.app[SETTINGS].http.public_url.rstrip("/") or str(request.url.origin())
    token = request.app[AUTH].watch_token(job.id)
    job.events_url = f"{base}/api/jobs/{job.id}/events?token={token}"
    job.status_url = f"{base}/api/jobs/{job.id}?token={token}"
    return job


async def read_json(request: web.Request, decoder: msgspec.json.Decoder[Any]) -> Any:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="request body must be application/json")
    body = await request.read()
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as e:
        msg, _, where = str(e).partition(" - at `")
        raise Invalid(msg, path=where.rstrip("`") or None) from e
    except msgspec.DecodeError as e:
        raise BadRequest(f"malformed JSON: {e}") from e
    except RecursionError as e:
        raise BadRequest("malformed JSON: nested too deeply") from e


async def submit(request: web.Request) -> web.Response:
    """POST /api/jobs"""
    req = await read_json(request, _submit_decoder)
    app = request.app
    producer = app[PRODUCER]
    rate = app[SETTINGS].auth.submit_rate
    if rate > 0 and not await producer.take_rate(str(request.get(PRINCIPAL, "")), rate):
        raise TooMany("submit rate limit reached")
    cap = app[SETTINGS].jobs.max_queued
    if cap > 0 and await producer.unfinished(req.queue) >= cap:
        raise TooMany(f"queue {req.queue!r} holds {cap} unfinished jobs")
    done = await producer.submit_request(req)
    job = with_urls(request, done.job)
    status = 201 if done.created else 200
    return json_response(job, status, headers={"Location": f"/api/jobs/{job.id}"})


async def get_job(request: web.Request) -> web.Response:
    job = await request.app[PRODUCER].get(request.match_info["id"])
    return json_response(with_urls(request, job))


async def job_event_list(request: web.Request) -> web.Response:
    """GET /api/jobs/{id}/events with Accept: application/json: the stored events as a list."""
    events = await request.app[PRODUCER].events(request.match_info["id"])
    return json_response(
        [{"id": e.id, "event": e.type, "data": msgspec.Raw(e.data)} for e in events]
    )


async def cancel(request: web.Request) -> web.Response:
    producer = request.app[PRODUCER]
    outcome = await producer.cancel(request.match_info["id"])
    job = with_urls(request, await producer.get(request.match_info["id"]))
    return json_response(job, 200 if outcome == "cancelled" else 202)


async def retry(request: web.Request) -> web.Response:
    job = await request.app[PRODUCER].retry(request.match_info["id"])
    return json_response(with_urls(request, job))


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError as e:
        raise Invalid(f"{name} must be an integer", path=name) from e
    if not lo <= v <= hi:
        raise Invalid(f"{name} must be between {lo} and {hi}", path=name)
    return v


async def list_jobs(request: web.Request) -> web.Response:
    q = request.query
    jobs, nxt = await request.app[PRODUCER].list_jobs(
        state=q.get("state") or None,
        task=q.get("task") or None,
        queue=q.get("queue") or None,
        limit=_int_param(request, "limit", 50, 1, 500),
        cursor=q.get("cursor") or None,
    )
    return json_response({"jobs": [with_urls(request, j) for j in jobs], "next": nxt})


async def tasks(request: web.Request) -> web.Response:
    producer = request.app[PRODUCER]
    live = await producer.live_workers()
    out = []
    for name, spec in sorted(producer.registry.items()):
        out.append(
            {
                "name": name,
                "doc": (spec.fn.__doc__ or "").strip().split("\n")[0],
                "schema": spec.schema(),
                "max_attempts": spec.max_attempts or producer.jobs_config.max_attempts,
                "timeout_s": spec.timeout_s,
                "workers": sum(1 for w in live if name in w.get("tasks", [])),
            }
        )
    return json_response({"tasks": out})


async def queues(request: web.Request) -> web.Response:
    stats = await request.app[PRODUCER].queues()
    return json_response({"queues": list(stats.values())})


async def dead(request: web.Request) -> web.Response:
    jobs = await request.app[PRODUCER].dead(request.match_info["name"])
    return json_response({"jobs": [with_urls(request, j) for j in jobs]})


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
    # slow key guessing down: a few attempts per second per client address
    login_slot = "login:" + (request.remote or "")
    if auth.enabled and not await request.app[PRODUCER].take_rate(login_slot, 5):
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


async def healthz(request: web.Request) -> web.Response:
    return json_response({"ok": True, "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[PRODUCER].redis.ping()
    except (redis.exceptions.RedisError, OSError) as e:
        raise Unavailable("redis unreachable") from e
    return json_response({"ok": True})


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    lines = [
        "# TYPE tidings_sse_watchers gauge",
        f"tidings_sse_watchers {len(app[WATCHERS].watchers)}",
        "# TYPE tidings_sse_cut_total counter",
        f"tidings_sse_cut_total {app[WATCHERS].cut_slow}",
        "# TYPE tidings_hub_events_total counter",
        f"tidings_hub_events_total {app[HUB].events_read}",
    ]
    try:
        stats = await app[PRODUCER].queues()
    except (redis.exceptions.RedisError, OSError):
        stats = {}
    for field in ("queued", "running", "scheduled", "dead", "workers"):
        lines.append(f"# TYPE tidings_queue_{field} gauge")
        for s in stats.values():
            lines.append(f'tidings_queue_{field}{{queue="{s.name}"}} {getattr(s, field)}')
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
