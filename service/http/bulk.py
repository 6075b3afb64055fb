"""Bulk endpoints: cancel or retry many jobs, retry or purge a queue's dead letters, purge its
finished jobs. Each takes `?dry_run=1` to say how many jobs it would touch (what a confirmation
shows) without changing anything. The work itself is `service.bulk.Bulk`."""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from service.core.errors import Invalid, NotFound
from service.http.jobs import json_response, read_json
from service.http.ops import queue_name
from service.http.state import PRODUCER


class BulkRequest(msgspec.Struct, forbid_unknown_fields=True):
    action: Literal["cancel", "retry"]
    ids: list[str]


class PurgeRequest(msgspec.Struct, forbid_unknown_fields=True):
    finished_before: int  # ms since the epoch


_bulk_decoder = msgspec.json.Decoder(BulkRequest)
_purge_decoder = msgspec.json.Decoder(PurgeRequest)


def dry_run(request: web.Request) -> bool:
    raw = request.query.get("dry_run", "")
    if raw in ("", "0", "false"):
        return False
    if raw in ("1", "true"):
        return True
    raise Invalid("dry_run is 1 or 0", path="dry_run")


async def _known_queue(request: web.Request) -> str:
    name = queue_name(request)
    if name not in await request.app[PRODUCER].queue_registry.names():
        raise NotFound("no such queue")
    return name


async def jobs(request: web.Request) -> web.Response:
    """POST /api/jobs/bulk {"action": "cancel"|"retry", "ids": [...]}: each job as its own
    cancel or retry would go, and the count per outcome."""
    dry = dry_run(request)
    req = await read_json(request, _bulk_decoder)
    return json_response(await request.app[PRODUCER].bulk.jobs(req.action, req.ids, dry_run=dry))


async def retry_dead(request: web.Request) -> web.Response:
    """POST /api/queues/{name}/dead/retry: every dead letter of the queue back in it."""
    dry = dry_run(request)
    name = await _known_queue(request)
    return json_response(await request.app[PRODUCER].bulk.retry_dead(name, dry_run=dry))


async def purge_dead(request: web.Request) -> web.Response:
    """POST /api/queues/{name}/dead/purge: delete the queue's dead letters for good."""
    dry = dry_run(request)
    name = await _known_queue(request)
    return json_response(await request.app[PRODUCER].bulk.purge_dead(name, dry_run=dry))


async def purge_finished(request: web.Request) -> web.Response:
    """POST /api/queues/{name}/purge {"finished_before": ms}: delete the queue's finished jobs
    (succeeded, failed, cancelled) that finished before that time."""
    dry = dry_run(request)
    name = await _known_queue(request)
    req = await read_json(request, _purge_decoder)
    if not 0 < req.finished_before <= 1 << 53:
        raise Invalid("finished_before: a time in ms since the epoch", path="$.finished_before")
    result = await request.app[PRODUCER].bulk.purge_finished(name, req.finished_before, dry_run=dry)
    return json_response(result)
