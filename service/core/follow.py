"""Following one job: replay from a position, then live events, exactly once and in order.

The rules a resuming reader follows (the SSE endpoint and `Producer.watch` both use them):
subscribe to the hub first, then read the job's retained events; skip live events already
replayed; if the reader's position is no longer among the retained events (trimmed, malformed,
from another deployment), start with a snapshot of the job instead. When the hub reports that
it missed events (`on_gap`) or that Redis lost its data (`on_reset`), read the job again and
carry on from the last event delivered: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from service.core.errors import NotFound
from service.core.hub import FireEvent, Hub
from service.core.states import TERMINAL_EVENTS
from service.core.store import JobStore
from service.core.wire import (
    EventKey,
    GoneEvent,
    Job,
    StoredEvent,
    WatchEvent,
    apply_event,
    decode_stored,
    parse_event_id,
    public,
    snapshot_of,
    stored_type,
)

Plan = Literal["replay", "snapshot", "gone"]


@dataclass
class Start:
    """How a reader resumes: 'gone' (nothing after its position: the job had ended there),
    'replay' (these events), or 'snapshot' (its position is not among the retained events)."""

    plan: Plan
    events: list[StoredEvent]


def plan_from(events: list[StoredEvent], last: str | EventKey | None) -> Start:
    """Decide where a reader resumes, given the job's retained events and its position."""
    if last is None:
        if events and events[0].type not in ("queued", "scheduled"):
            return Start("snapshot", [])  # the oldest events were dropped (jobs.max_events)
        return Start("replay", events)
    key = parse_event_id(last) if not isinstance(last, tuple) else last
    if key is None:
        return Start("snapshot", [])
    for i, e in enumerate(events):
        if e.key == key:
            if i == len(events) - 1 and e.type in TERMINAL_EVENTS:
                return Start("gone", [])
            return Start("replay", events[i + 1 :])
    return Start("snapshot", [])


class Follower:
    """A hub subscriber that collects one job's live events for a reader that awaits them."""

    __slots__ = ("_wake", "events", "resync")

    def __init__(self) -> None:
        self.events: list[FireEvent] = []
        self.resync = False
        self._wake = asyncio.Event()

    def on_event(self, ev: FireEvent) -> None:
        self.events.append(ev)
        self._wake.set()

    def on_gap(self, partition: int) -> None:
        self._resync()

    def on_reset(self) -> None:
        self._resync()

    def _resync(self) -> None:
        # what is buffered is in the job's own events, which the reader reads again; what comes
        # next follows the hole, so it must not be handed out before that read
        self.events.clear()
        self.resync = True
        self._wake.set()

    def drain(self) -> list[FireEvent]:
        out, self.events = self.events, []
        return out

    async def wait(self) -> None:
        await self._wake.wait()
        self._wake.clear()


def _watch_event(job: Job, e: StoredEvent) -> WatchEvent:
    stored = decode_stored(e.body)
    return WatchEvent(
        e.id.decode(), stored_type(stored), public(job.id, job.task, job.queue, e.id, stored)
    )


async def watch(
    store: JobStore, hub: Hub, job_id: str, last_event_id: str | None = None
) -> AsyncIterator[WatchEvent]:
    """The job's events after `last_event_id` (all of them when None), then live ones, until
    the terminal event. NotFound if the job does not exist when the watch begins."""
    await hub.ready()
    f = Follower()
    hub.subscribe(job_id, f)
    try:
        job, events = await store.snapshot(job_id)
        sent: EventKey | None = None
        start = plan_from(events, last_event_id)
        while True:
            if start.plan == "gone":
                return
            if start.plan == "snapshot":
                last = events[-1] if events else None
                sent = last.key if last is not None else sent
                yield WatchEvent(
                    last.id.decode() if last is not None else None, "snapshot", snapshot_of(job)
                )
                if job.state in ("succeeded", "failed", "cancelled"):
                    return
            for e in start.events:
                sent = e.key
                w = _watch_event(job, e)
                yield w
                if w.terminal and e is start.events[-1]:
                    return
            while not f.resync:
                for ev in f.drain():
                    if sent is not None and ev.key <= sent:
                        continue
                    sent = ev.key
                    yield WatchEvent(
                        ev.id.decode(),
                        ev.type,
                        public(ev.job, ev.task, ev.queue, ev.id, ev.stored()),
                    )
                    if ev.terminal:
                        return
                if not f.resync:
                    await f.wait()
            f.resync = False
            try:
                job, events = await store.snapshot(job_id)
            except NotFound:
                yield WatchEvent(None, "gone", GoneEvent(job=job_id, reason="job no longer exists"))
                return
            start = plan_from(events, sent)
            if start.plan == "gone":
                return
    finally:
        hub.unsubscribe(job_id, f)


async def wait(store: JobStore, hub: Hub, job_id: str, timeout: float | None = None) -> Job:
    """Follow the job until it is finished; its final snapshot. The snapshot is read once, after
    subscribing, and brought up to date from the events that follow (no read at the end)."""
    await hub.ready()
    f = Follower()
    hub.subscribe(job_id, f)
    try:
        job = await store.get(job_id)
        async with asyncio.timeout(timeout):
            while job.state not in ("succeeded", "failed", "cancelled"):
                await f.wait()
                if f.resync:
                    f.resync = False
                    f.drain()
                    job = await store.get(job_id)
                    continue
                for ev in f.drain():
                    apply_event(job, ev.stored(), ev.id)
        return job
    finally:
        hub.unsubscribe(job_id, f)
