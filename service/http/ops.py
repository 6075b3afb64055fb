"""Operator endpoints: tasks, queues (pause, resume, dead letters), workers, the trend, the
state machine, health and readiness."""

from __future__ import annotations

import os

from aiohttp import web

from service.core.errors import Invalid, NotFound, Unavailable
from service.core.retry import is_transient
from service.core.states import contract_document, contract_module
from service.core.wire import QUEUE_RE
from service.http.jobs import filter_params, int_param, json_response, with_urls
from service.http.state import PRODUCER, QUERIES, TREND
from service.stats import MAX_MINUTES


async def tasks(request: web.Request) -> web.Response:
    """Tasks this service validates, and the catalog's (published by workers), with the
    number of live workers that have each."""
    producer = request.app[PRODUCER]
    live = await request.app[QUERIES].workers()
    catalog = await producer.catalog.all()
    infos = {n: s.info() for n, s in producer.registry.items()}
    for n, info in catalog.items():
        infos.setdefault(n, info)
    out = []
    for name, info in sorted(infos.items()):
        out.append(
            {
                "name": name,
                "doc": info.doc,
                "schema": info.schema,
                "queue": info.queue or "default",
                "max_attempts": info.max_attempts or producer.jobs_config.max_attempts,
                "timeout_s": info.timeout_s,
                "workers": sum(1 for w in live if name in w.tasks),
            }
        )
    return json_response({"tasks": out})


async def queues(request: web.Request) -> web.Response:
    stats = await request.app[QUERIES].queues()
    return json_response({"queues": list(stats.values())})


def queue_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not QUEUE_RE.match(name):
        raise Invalid("invalid queue name", path="queue")
    return name


async def dead(request: web.Request) -> web.Response:
    jobs = await request.app[QUERIES].dead(queue_name(request))
    return json_response({"jobs": [with_urls(request, j) for j in jobs]})


async def pause(request: web.Request) -> web.Response:
    """POST /api/queues/{name}/pause: workers fetch nothing new from it (running jobs finish;
    submits are still accepted)."""
    return await _set_paused(request, True)


async def resume(request: web.Request) -> web.Response:
    return await _set_paused(request, False)


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    name = queue_name(request)
    producer = request.app[PRODUCER]
    if name not in await producer.queue_registry.names():
        raise NotFound("no such queue")
    await producer.queue_registry.set_paused(name, paused)
    stats = await request.app[QUERIES].queues()
    return json_response(stats.get(name))


async def workers(request: web.Request) -> web.Response:
    return json_response({"workers": await request.app[QUERIES].workers()})


async def trend(request: web.Request) -> web.Response:
    """GET /api/stats/trend?minutes=60&queue=&task=: per minute, finished jobs by outcome and
    wait and run time percentiles (from the per-minute hashes the scripts keep)."""
    minutes = int_param(request, "minutes", 60, 1, MAX_MINUTES)
    assert minutes is not None
    queue, task = filter_params(request)
    return json_response(await request.app[TREND].trend(minutes, queue, task))


async def contract(request: web.Request) -> web.Response:
    """GET /api/contract: the job states, terminal states, transitions and event names."""
    return json_response(contract_document())


async def contract_js(request: web.Request) -> web.Response:
    """GET /static/contract.js: the state machine as an ES module (generated, never copied)."""
    return web.Response(
        text=contract_module(),
        content_type="text/javascript",
        headers={"Cache-Control": "no-cache"},
    )


async def healthz(request: web.Request) -> web.Response:
    return json_response({"ok": True, "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[PRODUCER].redis.ping()
    except Exception as e:
        if is_transient(e):
            raise Unavailable("redis unreachable") from e
        raise
    return json_response({"ok": True})
