"""Job endpoints: submit (one or a batch), read, list and search, events, cancel, retry, and
fresh watch links."""

from __future__ import annotations

import functools
import logging
import re
from contextlib import AbstractContextManager
from typing import Any

import msgspec
import structlog
from aiohttp import web

from service.core import logs
from service.core.errors import BadRequest, Invalid, TooMany
from service.core.tracing import Span, valid_traceparent
from service.core.wire import (
    QUEUE_RE,
    TASK_RE,
    Job,
    WatchLinks,
    decode_stored,
    encode_public,
    iso,
    public,
    stored_type,
)
from service.http.state import AUTH, PRINCIPAL, PRODUCER, QUERIES, SETTINGS, TRACING
from service.producer import SubmitRequest

log = structlog.get_logger("tidings.http")
_encode = msgspec.json.Encoder().encode
_submit_decoder = msgspec.json.Decoder(SubmitRequest)
MAX_BATCH = 1000
_INT = re.compile(r"-?[0-9]{1,19}")


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    jobs: list[SubmitRequest]


_batch_decoder = msgspec.json.Decoder(BatchRequest)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encode(body), status=status, content_type="application/json", headers=headers
    )


def watch_links(request: web.Request, job_id: str) -> WatchLinks:
    """The job's events and status URLs, with one read-only token scoped to this job."""
    base = request.app[SETTINGS].http.public_url.rstrip("/") or _origin(request)
    token, exp = request.app[AUTH].watch_grant(job_id)
    return WatchLinks(
        events_url=f"{base}/api/jobs/{job_id}/events?token={token}",
        status_url=f"{base}/api/jobs/{job_id}?token={token}",
        expires_at=_expiry(exp),
    )


# the request's origin by (scheme, Host header), as yarl normalises it: building the URL is most
# of a link's cost, and a service sees a handful of distinct hosts (bounded all the same)
_origins: dict[tuple[str, str], str] = {}


def _origin(request: web.Request) -> str:
    key = (request.scheme, request.host)
    origin = _origins.get(key)
    if origin is None:
        if len(_origins) >= 64:
            _origins.clear()
        origin = _origins[key] = str(request.url.origin())
    return origin


@functools.lru_cache(maxsize=1)
def _expiry(exp: int) -> str:
    """iso() of a link's expiry, made once per second (every link of that second shares it)."""
    return iso(exp * 1000) or ""


def with_urls(request: web.Request, job: Job) -> Job:
    """Attach the job's watch links, each with a read-only token scoped to this job."""
    links = watch_links(request, job.id)
    job.events_url, job.status_url = links.events_url, links.status_url
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


async def _rate(request: web.Request, n: int = 1) -> None:
    rate = request.app[SETTINGS].auth.submit_rate
    if rate > 0:
        principal = str(request.get(PRINCIPAL, ""))
        for _ in range(n):
            if not await request.app[QUERIES].take_rate(principal, rate):
                raise TooMany("submit rate limit reached")


def _traceparent(request: web.Request) -> str | None:
    """The caller's W3C trace context; an invalid one is ignored (as the W3C spec says)."""
    tp = request.headers.get("traceparent")
    return valid_traceparent(tp) if tp and len(tp) <= 128 and tp.isascii() else None


def _post_span(request: web.Request, route: str) -> AbstractContextManager[Span]:
    """The server span of a POST to `route`, a child of the caller's `traceparent`."""
    attrs = {"http.request.method": "POST", "http.route": route}
    return request.app[TRACING].span(
        f"POST {route}", parent=_traceparent(request), kind="server", attributes=attrs
    )


async def submit(request: web.Request) -> web.Response:
    """POST /api/jobs. Its span (a child of the caller's `traceparent`) is the parent stored
    with the job, so the worker's span joins the caller's trace."""
    with _post_span(request, "/api/jobs") as span:
        req = await read_json(request, _submit_decoder)
        await _rate(request)
        done = await request.app[PRODUCER].submit_request(req, traceparent=span.traceparent or None)
        job = with_urls(request, done.job)
        status = 201 if done.created else 200
        span.set("http.response.status_code", status)
        span.set("tidings.job.id", job.id)
        span.set("tidings.task", job.task)
        span.set("tidings.queue", job.queue)
        if log.is_enabled_for(logging.DEBUG):
            with logs.bound(job_id=job.id, trace_id=span.trace_id):
                log.debug("job.submitted", task=job.task, queue=job.queue, created=done.created)
        return json_response(job, status, headers={"Location": f"/api/jobs/{job.id}"})


async def submit_batch(request: web.Request) -> web.Response:
    """POST /api/jobs/batch {"jobs": [...]}: all validated before any is written; every job
    carries this request's span as its parent."""
    with _post_span(request, "/api/jobs/batch") as span:
        batch = await read_json(request, _batch_decoder)
        if not 1 <= len(batch.jobs) <= MAX_BATCH:
            raise Invalid(f"a batch holds 1 to {MAX_BATCH} jobs", path="$.jobs")
        await _rate(request, len(batch.jobs))
        producer = request.app[PRODUCER]
        try:
            jobs = await producer.submit_many(batch.jobs, traceparent=span.traceparent or None)
        except Invalid as e:
            raise Invalid(e.message, path=e.path) from e
        span.set("http.response.status_code", 201)
        span.set("tidings.jobs", len(jobs))
        return json_response({"jobs": [with_urls(request, j) for j in jobs]}, 201)


async def get_job(request: web.Request) -> web.Response:
    job = await request.app[PRODUCER].get(request.match_info["id"])
    return json_response(with_urls(request, job))


async def token(request: web.Request) -> web.Response:
    """POST /api/jobs/{id}/token (with a key): new events and status URLs for the job, so an
    app's backend can hand a long-lived page a fresh link when the one it has expires."""
    job = await request.app[PRODUCER].get(request.match_info["id"])
    return json_response(watch_links(request, job.id))


async def job_event_list(request: web.Request) -> web.Response:
    """GET /api/jobs/{id}/events with Accept: application/json: the stored events as a list."""
    job, events = await request.app[PRODUCER].snapshot(request.match_info["id"])
    out = []
    for e in events:
        stored = decode_stored(e.body)
        data = encode_public(public(job.id, job.task, job.queue, e.id, stored))
        out.append({"id": e.id.decode(), "event": stored_type(stored), "data": msgspec.Raw(data)})
    return json_response(out)


async def cancel(request: web.Request) -> web.Response:
    producer = request.app[PRODUCER]
    outcome = await producer.cancel(request.match_info["id"])
    job = with_urls(request, await producer.get(request.match_info["id"]))
    return json_response(job, 200 if outcome == "cancelled" else 202)


async def retry(request: web.Request) -> web.Response:
    job = await request.app[PRODUCER].retry(request.match_info["id"])
    return json_response(with_urls(request, job))


def int_param(request: web.Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not _INT.fullmatch(raw):  # ASCII only: str.isdigit() accepts "²", which int() refuses
        raise Invalid(f"{name} must be an integer", path=name)
    v = int(raw)
    if not lo <= v <= hi:
        raise Invalid(f"{name} must be between {lo} and {hi}", path=name)
    return v


def filter_params(request: web.Request) -> tuple[str | None, str | None]:
    """The `queue` and `task` filters of a query (absent or empty: None), refused when they
    could not name a queue or a task."""
    queue = request.query.get("queue") or None
    task = request.query.get("task") or None
    if queue is not None and not QUEUE_RE.match(queue):
        raise Invalid("invalid queue name", path="queue")
    if task is not None and not TASK_RE.match(task):
        raise Invalid("invalid task name", path="task")
    return queue, task


async def list_jobs(request: web.Request) -> web.Response:
    """GET /api/jobs?state=&task=&queue=&q=<id prefix>&since=&until=(ms)&limit=&cursor="""
    q = request.query
    limit = int_param(request, "limit", 50, 1, 500)
    assert limit is not None
    jobs, nxt = await request.app[QUERIES].list_jobs(
        state=q.get("state") or None,
        task=q.get("task") or None,
        queue=q.get("queue") or None,
        id_prefix=q.get("q") or None,
        since_ms=int_param(request, "since", None, 0, 1 << 53),
        until_ms=int_param(request, "until", None, 0, 1 << 53),
        limit=limit,
        cursor=q.get("cursor") or None,
    )
    return json_response({"jobs": [with_urls(request, j) for j in jobs], "next": nxt})
