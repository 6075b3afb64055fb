"""Reading jobs back: one job, a job with its events, many jobs. No writes here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.core.errors import NotFound
from service.core.keys import Keys
from service.core.wire import (
    JOB_ID_RE,
    READ_FIELDS,
    Job,
    StoredEvent,
    events_from_hash,
    job_from_fields,
    job_from_hash,
)


def check_id(job_id: str) -> None:
    if not JOB_ID_RE.match(job_id):
        raise NotFound("no such job")


class JobStore:
    def __init__(self, r: Any, keys: Keys) -> None:
        self.r = r
        self.keys = keys

    async def get(self, job_id: str) -> Job:
        """The job's current snapshot (NotFound when it does not exist or has expired)."""
        check_id(job_id)
        job = job_from_fields(job_id, await self.r.hmget(self.keys.job(job_id), READ_FIELDS))
        if job is None:
            raise NotFound("no such job")
        return job

    async def queue_of(self, job_id: str) -> str:
        check_id(job_id)
        q = await self.r.hget(self.keys.job(job_id), "q")
        if q is None:
            raise NotFound("no such job")
        return str(q.decode())

    async def snapshot(self, job_id: str) -> tuple[Job, list[StoredEvent]]:
        """The job and all its retained events, read at one instant (one HGETALL)."""
        check_id(job_id)
        h = await self.r.hgetall(self.keys.job(job_id))
        job = job_from_hash(job_id, h) if h else None
        if job is None:
            raise NotFound("no such job")
        return job, events_from_hash(h)

    async def traceparent(self, job_id: str) -> str | None:
        """The W3C trace context stored with the job at submit (None: none given)."""
        check_id(job_id)
        tp = await self.r.hget(self.keys.job(job_id), "tp")
        return tp.decode() if tp else None

    async def many(self, ids: Sequence[str]) -> list[Job | None]:
        """Jobs by id, in order (None where gone), in one round trip per slot."""
        if not ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for jid in ids:
                pipe.hmget(self.keys.job(jid), READ_FIELDS)
            rows = await pipe.execute()
        return [job_from_fields(jid, row) for jid, row in zip(ids, rows, strict=True)]
