"""Load under faults: HTTP submitters, SSE watchers and readers against a running service, every
answer recorded, then a check of what came out (used by tests/test_cluster.py and
bench/cluster.py).

    load = Load(stack.http, jobs=300, watch_every=10)
    await load.start()
    await load.wait_accepted(100)
    ... kill a master ...
    await load.finished()                       # submitters reached `jobs` accepted
    report = await load.check(producer)         # waits for every accepted job to end
    assert report.problems() == []

What it checks (`Report.problems`): no HTTP answer other than 2xx and 503-with-Retry-After (no
500 at any moment), no connection refused by the service; every job accepted with 201 exists
and reached exactly one terminal state (its stored events hold one terminal event, the last);
every watcher received exactly the job's stored events, in order, strictly increasing: no gap,
no duplicate, no snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from service.core.errors import NotFound
from service.core.states import TERMINAL
from service.core.wire import event_key
from service.producer import Producer
from tests.helpers import read_sse


@dataclass
class Answer:
    t: float  # monotonic time
    what: str  # "submit", "queues", "list", "get"
    status: int  # HTTP status, or 0 for a connection error
    detail: str = ""


@dataclass
class Report:
    accepted: list[str]
    answers: list[Answer]
    watched: dict[str, list[tuple[str | None, str]]]
    lost: list[str] = field(default_factory=list)  # accepted, then gone
    unfinished: list[str] = field(default_factory=list)  # accepted, not terminal by the deadline
    bad_terminal: list[str] = field(default_factory=list)  # not exactly one terminal event, last
    watch_mismatch: dict[str, str] = field(default_factory=dict)
    states: Counter[str] = field(default_factory=Counter)
    retried: int = 0  # jobs that needed more than one attempt

    def statuses(self, what: str | None = None) -> Counter[int]:
        return Counter(a.status for a in self.answers if what is None or a.what == what)

    def window(self, after: float) -> tuple[float | None, float | None]:
        """(first submit 503 after `after`, first 201 after the last such 503), in seconds from
        `after`: the failover window as submitters saw it."""
        bad = [a.t for a in self.answers if a.what == "submit" and a.status == 503 and a.t > after]
        if not bad:
            return None, None
        last_bad = max(bad)
        ok = [
            a.t for a in self.answers if a.what == "submit" and a.status == 201 and a.t > last_bad
        ]
        return min(bad) - after, (min(ok) - after if ok else None)

    def problems(self) -> list[str]:
        out = []
        for a in self.answers:
            if a.status == 0 or (a.status >= 500 and a.detail != "retry-after"):
                out.append(f"{a.what}: HTTP {a.status} {a.detail[:200]}")
        if self.lost:
            out.append(f"lost {len(self.lost)} accepted jobs: {self.lost[:5]}")
        if self.unfinished:
            out.append(f"{len(self.unfinished)} jobs not finished: {self.unfinished[:5]}")
        if self.bad_terminal:
            out.append(f"not exactly one terminal event: {self.bad_terminal[:5]}")
        for job, why in list(self.watch_mismatch.items())[:5]:
            out.append(f"watcher of {job}: {why}")
        return out


class Load:
    """Submitters (paced, `rate` jobs/s in all), watchers on every `watch_every`-th accepted job
    and readers polling the read API, all over HTTP, until `jobs` were accepted."""

    def __init__(
        self,
        http: str,
        *,
        jobs: int,
        rate: float = 50.0,
        submitters: int = 4,
        watch_every: int = 10,
        task: str = "t.steps",
        payload: dict[str, Any] | None = None,
        readers: bool = True,
    ) -> None:
        self.http = http
        self.jobs = jobs
        self.rate = rate
        self.submitters = submitters
        self.watch_every = watch_every
        self.task = task
        self.payload = payload if payload is not None else {"n": 5, "delay": 0.05}
        self.readers = readers
        self.accepted: list[str] = []
        self.answers: list[Answer] = []
        self.watched: dict[str, list[tuple[str | None, str]]] = {}
        self._watch_tasks: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._done = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._next_at = 0.0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30),
            connector=aiohttp.TCPConnector(limit=0),
        )
        self._next_at = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._submitter(), name=f"submitter-{i}")
            for i in range(self.submitters)
        ]
        if self.readers:
            self._tasks.append(asyncio.create_task(self._reader(), name="reader"))

    async def wait_accepted(self, n: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.accepted) < n:
                await asyncio.sleep(0.01)

    async def finished(self, timeout: float = 120.0) -> None:
        """Until `jobs` submits were accepted and every submit in flight has its answer (a
        request cut off here could still create a job nobody heard of); the readers stop."""
        submitters = [t for t in self._tasks if t.get_name().startswith("submitter")]
        async with asyncio.timeout(timeout):
            await self._done.wait()
            for r in await asyncio.gather(*submitters, return_exceptions=True):
                if isinstance(r, Exception):
                    raise r
        await self._stop_tasks()

    async def close(self) -> None:
        self._done.set()
        await self._stop_tasks()
        for t in self._watch_tasks:
            t.cancel()
        await asyncio.gather(*self._watch_tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _stop_tasks(self) -> None:
        for t in self._tasks:
            t.cancel()
        for r in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(r, Exception):
                raise r

    def _record(self, what: str, status: int, detail: str = "") -> None:
        self.answers.append(Answer(time.monotonic(), what, status, detail))

    async def _pace(self) -> None:
        # one shared schedule: `rate` submits per second over all submitters
        self._next_at = max(self._next_at + 1 / self.rate, time.monotonic() - 1.0)
        delay = self._next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _submitter(self) -> None:
        assert self._session is not None
        body = {"task": self.task, "payload": self.payload}
        while len(self.accepted) < self.jobs:
            await self._pace()
            if len(self.accepted) >= self.jobs:
                break
            try:
                async with self._session.post(self.http + "/api/jobs", json=body) as r:
                    text = await r.text()
                    self._record("submit", r.status, _detail(r, text))
                    if r.status == 201:
                        job = await r.json()
                        self.accepted.append(job["id"])
                        if len(self.accepted) % self.watch_every == 1:
                            self._watch(job["id"], job["events_url"])
            except (aiohttp.ClientError, OSError) as e:
                self._record("submit", 0, repr(e))
                await asyncio.sleep(0.05)
        self._done.set()

    async def _reader(self) -> None:
        """The read API through the fault: queue stats, a page of jobs, one job."""
        assert self._session is not None
        while not self._done.is_set():
            paths = [("queues", "/api/queues"), ("list", "/api/jobs?limit=5")]
            if self.accepted:
                paths.append(("get", f"/api/jobs/{random.choice(self.accepted)}"))
            for what, path in paths:
                try:
                    async with self._session.get(self.http + path) as r:
                        self._record(what, r.status, _detail(r, await r.text()))
                except (aiohttp.ClientError, OSError) as e:
                    self._record(what, 0, repr(e))
            await asyncio.sleep(0.1)

    def _watch(self, job_id: str, url: str) -> None:
        self.watched[job_id] = []
        self._watch_tasks.append(asyncio.create_task(self._watcher(job_id, url)))

    async def _watcher(self, job_id: str, url: str) -> None:
        """Follow the job's stream to its end, reconnecting with Last-Event-ID if it breaks."""
        assert self._session is not None
        got = self.watched[job_id]
        while not (got and got[-1][1] in TERMINAL):
            headers = {"Last-Event-ID": got[-1][0] or ""} if got else {}
            try:
                async with self._session.get(url, headers=headers) as r:
                    if r.status == 204:
                        return
                    if r.status != 200:
                        self._record("watch", r.status, _detail(r, await r.text()))
                        await asyncio.sleep(0.2)
                        continue
                    for e in await read_sse(r, timeout=120):
                        got.append((e.id, e.event))
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                self._record("watch", 0, repr(e))
                await asyncio.sleep(0.2)

    async def check(self, producer: Producer, timeout: float = 90.0) -> Report:
        """Wait (up to `timeout`) until every accepted job is finished and every watcher is
        done, then compare what each watcher saw with the job's stored events."""
        rep = Report(list(self.accepted), self.answers, self.watched)
        deadline = time.monotonic() + timeout
        pending = set(rep.accepted)
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                try:
                    job = await producer.get(job_id)
                except NotFound:
                    continue
                if job.state in TERMINAL:
                    pending.discard(job_id)
            if pending:
                await asyncio.sleep(0.2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*self._watch_tasks, return_exceptions=True),
                max(1.0, deadline - time.monotonic()),
            )
        for job_id in rep.accepted:
            try:
                job, events = await producer.snapshot(job_id)
            except NotFound:
                rep.lost.append(job_id)
                continue
            rep.states[job.state] += 1
            if job.attempt > 1:
                rep.retried += 1
            if job.state not in TERMINAL:
                rep.unfinished.append(job_id)
                continue
            terminal = [e for e in events if e.type in TERMINAL]
            if len(terminal) != 1 or events[-1].type not in TERMINAL:
                rep.bad_terminal.append(job_id)
            if job_id in self.watched:
                why = _compare(self.watched[job_id], [(e.id.decode(), e.type) for e in events])
                if why:
                    rep.watch_mismatch[job_id] = why
        return rep


def _detail(r: aiohttp.ClientResponse, text: str) -> str:
    """What to keep of an answer: "retry-after" for a well-formed 503, else the error body."""
    if r.status == 503 and "Retry-After" in r.headers:
        return "retry-after"
    return text if r.status >= 300 else ""


def _compare(got: list[tuple[str | None, str]], stored: list[tuple[str, str]]) -> str:
    """'' if a watcher that started at the beginning received exactly the stored events."""
    if any(t == "snapshot" for _, t in got):
        return f"got a snapshot: {got}"
    keys = [event_key(i.encode()) for i, _ in got if i is not None]
    if any(b <= a for a, b in itertools.pairwise(keys)):
        return f"ids not strictly increasing: {got}"
    if got != stored:
        return f"received {got} but stored {stored}"
    return ""
