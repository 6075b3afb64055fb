"""Submit, follow and steer jobs over HTTP: `Client` (asyncio) and `SyncClient` (blocking).

For programs that have the service's URL (and a key) but no Redis. `watch` is the same
iterator as `Producer.watch`, over SSE: it resumes by itself after any disconnect, a service
restart included, with no gap and no duplicate, and ends after the job's terminal event.

    async with Client("http://127.0.0.1:8080", api_key=KEY) as c:
        job = await c.submit("demo.count", {"n": 5})
        async for ev in c.watch(job.id):
            print(ev.id, ev.type, ev.data)
        done = await c.wait(job.id, timeout=60)

Every error is a `service.core.errors.TidingsError`: the service's own answers map to the same
classes the service raises (`Unauthorized` for 401, `Forbidden` 403, `NotFound` 404,
`Invalid` 422 with `.path`, `Conflict` 409, ...), plus `JobGone`, `Unreachable` and
`ServiceError` below.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec

from service.core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    TidingsError,
    TooMany,
    Unauthorized,
    Unavailable,
)
from service.core.states import TERMINAL
from service.core.wire import (
    Job,
    QueueStats,
    SnapshotEvent,
    SubmitRequest,
    WatchEvent,
    WatchLinks,
    decode_public,
)

DEFAULT_URL: Final = "http://127.0.0.1:8080"
DEFAULT_RETRY_S: Final = 2.0  # until the stream's own `retry:` line says otherwise
MAX_BACKOFF_S: Final = 10.0
T = TypeVar("T")

# -- errors ----------------------------------------------------------------------------------


class JobGone(NotFound):
    """The job no longer exists: it expired (`jobs.retention_s`) or Redis lost it while it was
    being followed."""

    code = "gone"


class Unreachable(Unavailable):
    """The service could not be reached (refused, reset, timed out)."""

    code = "unreachable"


class ServiceError(TidingsError):
    """An answer with a status the client has no class for (413, 415, 500, ...)."""

    def __init__(self, status: int, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message, path=path)
        self.status = status
        self.code = code


class ProtocolError(TidingsError):
    """The event stream held something that is not a Tidings event."""

    code = "protocol"


_BY_STATUS: Final[dict[int, type[TidingsError]]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Invalid,
    429: TooMany,
    503: Unavailable,
}


class _ErrorBody(msgspec.Struct):
    code: str = "error"
    message: str = ""
    path: str | None = None


class _Error(msgspec.Struct):
    error: _ErrorBody


_error_decoder = msgspec.json.Decoder(_Error)


def error_from(status: int, body: bytes) -> TidingsError:
    """The typed error for a service's non-2xx answer."""
    try:
        e = _error_decoder.decode(body).error
    except msgspec.MsgspecError:
        e = _ErrorBody(code="http_" + str(status), message=body[:200].decode("utf-8", "replace"))
    cls = _BY_STATUS.get(status)
    if cls is None:
        return ServiceError(status, e.code, e.message or f"HTTP {status}", e.path)
    return cls(e.message or f"HTTP {status}", path=e.path)


# -- wire ------------------------------------------------------------------------------------


class _JobPage(msgspec.Struct):
    jobs: list[Job]
    next: str | None = None


class _Queues(msgspec.Struct):
    queues: list[QueueStats]


_encode = msgspec.json.Encoder().encode
_job = msgspec.json.Decoder(Job).decode
_page = msgspec.json.Decoder(_JobPage).decode
_queues = msgspec.json.Decoder(_Queues).decode
_links = msgspec.json.Decoder(WatchLinks).decode


@dataclass
class SseBlock:
    """One dispatched block of an event stream (fields as the SSE spec reads them)."""

    id: str | None
    event: str | None
    data: str | None
    retry: int | None


class SseParser:
    """An incremental text/event-stream parser (the WHATWG rules: CR, LF or CRLF line ends,
    comment lines, `data` lines joined with LF, a blank line dispatches). Feed it bytes."""

    def __init__(self) -> None:
        self._buf = b""
        self._id: str | None = None
        self._event: str | None = None
        self._data: list[str] = []
        self._retry: int | None = None
        self._any = False

    def feed(self, chunk: bytes) -> list[SseBlock]:
        self._buf += chunk
        out: list[SseBlock] = []
        while True:
            cut = _line_end(self._buf)
            if cut is None:
                return out
            end, after = cut
            line = self._buf[:end].decode("utf-8", "replace")
            self._buf = self._buf[after:]
            block = self._line(line)
            if block is not None:
                out.append(block)

    def _line(self, line: str) -> SseBlock | None:
        if line == "":
            if not self._any:
                return None
            block = SseBlock(
                self._id, self._event, "\n".join(self._data) if self._data else None, self._retry
            )
            self._id, self._event, self._data, self._retry, self._any = None, None, [], None, False
            return block
        if line.startswith(":"):
            return None  # a comment: the heartbeat
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        else:
            return None
        self._any = True
        return None


def _line_end(buf: bytes) -> tuple[int, int] | None:
    """Where the first line of `buf` ends, and where the next begins (None: no full line)."""
    lf, cr = buf.find(b"\n"), buf.find(b"\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, lf + 1)
    if cr == len(buf) - 1:
        return None  # a CR last: wait for the next byte (it may be the LF of a CRLF)
    return cr, cr + 2 if buf[cr + 1 : cr + 2] == b"\n" else cr + 1


def decode_event(block: SseBlock) -> WatchEvent:
    """A stream block as a typed event, strictly: its name must be its data's type."""
    try:
        data = decode_public((block.data or "").encode())
    except msgspec.MsgspecError as e:
        raise ProtocolError(f"bad {block.event!r} event: {e}") from e
    tag = data.__struct_config__.tag
    if block.event != tag:
        raise ProtocolError(f"event {block.event!r} carries data of type {tag!r}")
    return WatchEvent(block.id or None, str(tag), data)


def _ends(ev: WatchEvent) -> bool:
    """The last event a watch yields: a terminal one, or a snapshot of a finished job."""
    if ev.terminal:
        return True
    return isinstance(ev.data, SnapshotEvent) and ev.data.state in TERMINAL


def backoff(retry_s: float, failures: int) -> float:
    """The wait before reconnect number `failures` (1, 2, ...): the stream's `retry:` delay,
    doubled per failure in a row, capped, with jitter so a restarted service is not hit by
    every client at the same instant."""
    grown = max(retry_s, 0.05) * 2.0 ** min(max(failures - 1, 0), 16)
    base: float = min(grown, max(retry_s, MAX_BACKOFF_S))
    return base * random.uniform(0.5, 1.0)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 300.0)
    except ValueError:
        return None


OnReconnect = Callable[[str, float], None]


# -- the client ------------------------------------------------------------------------------


class Client:
    """The service's HTTP API from asyncio code. Use it as an async context manager (or call
    `close()`); one connection pool per client.

    `timeout` bounds each ordinary request; `read_timeout` is how long a watch waits for any
    byte (events or heartbeats, every `sse.heartbeat_s`) before it reconnects."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": "tidings-client"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    def _url(self, path: str) -> str:
        return self.base_url + path

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """One request; the body of a 2xx answer, else the typed error."""
        hdrs = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = _encode(body)
            hdrs["Content-Type"] = "application/json"
        try:
            async with self._http().request(
                method,
                self._url(path),
                data=data,
                params=params,
                headers=hdrs,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as r:
                raw = await r.read()
                if r.status >= 400:
                    raise error_from(r.status, raw)
                return raw
        except (aiohttp.ClientError, TimeoutError) as e:
            raise Unreachable(f"cannot reach {self.base_url} ({str(e) or type(e).__name__})") from e

    # -- submit -------------------------------------------------------------------------------

    async def submit(
        self,
        task: str,
        payload: Any = None,
        *,
        queue: str | None = None,
        delay_s: float = 0.0,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Job:
        """Submit one job (POST /api/jobs). With an idempotency key already used: that job."""
        req = SubmitRequest(
            task=task,
            payload=payload,
            queue=queue,
            delay_s=delay_s,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            idempotency_key=idempotency_key,
        )
        headers = {"traceparent": traceparent} if traceparent else None
        return _job(await self._call("POST", "/api/jobs", body=req, headers=headers))

    async def submit_many(
        self, items: Iterable[SubmitRequest | tuple[str, Any]], *, traceparent: str | None = None
    ) -> list[Job]:
        """Submit up to 1,000 jobs in one request (POST /api/jobs/batch), all or nothing: one
        invalid item refuses the whole batch with `Invalid` whose path names it
        (`$.jobs[3].payload.n`)."""
        reqs = [
            it if isinstance(it, SubmitRequest) else SubmitRequest(task=it[0], payload=it[1])
            for it in items
        ]
        headers = {"traceparent": traceparent} if traceparent else None
        raw = await self._call("POST", "/api/jobs/batch", body={"jobs": reqs}, headers=headers)
        return _page(raw).jobs

    # -- read -------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """The job's current snapshot (NotFound when it does not exist or has expired)."""
        return _job(await self._call("GET", f"/api/jobs/{_q(job_id)}"))

    async def jobs(
        self,
        *,
        state: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int | None = 100,
    ) -> list[Job]:
        """Jobs newest first, filtered, as one list of at most `limit` (None: every retained
        job), following the service's pages."""
        out: list[Job] = []
        cursor: str | None = None
        while limit is None or len(out) < limit:
            params = {"limit": str(min(500, 500 if limit is None else limit - len(out)))}
            for k, v in (("state", state), ("task", task), ("queue", queue), ("cursor", cursor)):
                if v:
                    params[k] = v
            page = _page(await self._call("GET", "/api/jobs", params=params))
            out.extend(page.jobs)
            cursor = page.next
            if not cursor or not page.jobs:
                break
        return out

    async def queues(self) -> list[QueueStats]:
        """Per queue: queued, running, scheduled, dead, workers, paused."""
        return _queues(await self._call("GET", "/api/queues")).queues

    async def dead(self, queue: str) -> list[Job]:
        """The queue's dead letters (failed after their last attempt), most recent first."""
        return _page(await self._call("GET", f"/api/queues/{_q(queue)}/dead")).jobs

    async def watch_links(self, job_id: str) -> WatchLinks:
        """Fresh events and status URLs for the job (POST /api/jobs/{id}/token; needs a key):
        what an app's backend hands a page whose links expired."""
        return _links(await self._call("POST", f"/api/jobs/{_q(job_id)}/token"))

    # -- control ------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> Job:
        """Cancel: the job comes back `cancelled` when it was stopped at once, still `running`
        when cancellation was requested from its worker. Conflict when already finished."""
        return _job(await self._call("POST", f"/api/jobs/{_q(job_id)}/cancel"))

    async def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job back in its queue (Conflict otherwise)."""
        return _job(await self._call("POST", f"/api/jobs/{_q(job_id)}/retry"))

    # -- follow -------------------------------------------------------------------------------

    async def watch(
        self,
        job_id: str,
        *,
        last_event_id: str | None = None,
        on_reconnect: OnReconnect | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """The job's events after `last_event_id` (all when None), then live ones, ending after
        the terminal event (`succeeded`, `failed`, `cancelled`, `gone`, or a `snapshot` of a
        finished job). A `snapshot` comes first when the position is no longer among the job's
        events. Reconnects by itself with Last-Event-ID after a cut, a clean end of the stream
        or a restart of the service, waiting the stream's `retry:` delay with backoff and
        jitter (a 503's Retry-After when given); `on_reconnect(reason, delay_s)` hears of each.
        Raises NotFound for an unknown job, JobGone when it vanished, Unauthorized or
        Forbidden for a missing or wrong key."""
        url = self._url(f"/api/jobs/{_q(job_id)}/events")
        last = last_event_id
        retry_s = DEFAULT_RETRY_S
        failures = 0
        stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=self.timeout, sock_read=self.read_timeout
        )
        while True:
            headers = {"Accept": "text/event-stream"}
            if last:
                headers["Last-Event-ID"] = last
            wait_s: float | None = None
            try:
                async with self._http().get(url, headers=headers, timeout=stream_timeout) as resp:
                    if resp.status == 204:
                        # nothing after our position: the job ended there, or it is gone
                        await self._check_not_gone(job_id)
                        return
                    if resp.status in (502, 503, 504):
                        # at the stream cap, failing over, or a proxy in front of a restart
                        reason = f"HTTP {resp.status}"
                        wait_s = _retry_after(resp.headers.get("Retry-After"))
                        if wait_s is not None:
                            wait_s *= random.uniform(1.0, 1.25)
                    elif resp.status != 200:
                        raise error_from(resp.status, await resp.read())
                    else:
                        parser = SseParser()
                        async for chunk in resp.content.iter_any():
                            for block in parser.feed(chunk):
                                if block.retry is not None:
                                    retry_s = block.retry / 1000
                                if block.event is None and block.data is None:
                                    continue
                                failures = 0  # it delivers: a later cut starts afresh
                                ev = decode_event(block)
                                if ev.id is not None:
                                    last = ev.id
                                yield ev
                                if _ends(ev):
                                    return
                        reason = "stream ended"
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
                reason = type(e).__name__
            failures += 1
            delay = wait_s if wait_s is not None else backoff(retry_s, failures)
            if on_reconnect is not None:
                on_reconnect(reason, delay)
            await asyncio.sleep(delay)

    async def _check_not_gone(self, job_id: str) -> None:
        try:
            await self.get(job_id)
        except NotFound as e:
            raise JobGone(f"job {job_id} no longer exists (expired or lost)") from e

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Follow the job until it is finished; its final snapshot. TimeoutError after
        `timeout` seconds; JobGone if it vanished meanwhile."""
        async with asyncio.timeout(timeout):
            job = await self.get(job_id)
            if job.state in TERMINAL:
                return job
            async with contextlib.aclosing(self.watch(job_id)) as events:
                async for ev in events:
                    if ev.type == "gone":
                        raise JobGone(f"job {job_id} no longer exists (expired or lost)")
            try:
                return await self.get(job_id)
            except NotFound as e:
                raise JobGone(f"job {job_id} no longer exists (expired or lost)") from e


def _q(part: str) -> str:
    return quote(part, safe="")


# -- blocking twin ---------------------------------------------------------------------------


class SyncClient:
    """`Client` for code without an event loop: the same methods, blocking. It runs one
    private event loop in a daemon thread; `watch` is a plain iterator.

        with SyncClient("http://127.0.0.1:8080", api_key=KEY) as c:
            job = c.submit("demo.count", {"n": 5})
            for ev in c.watch(job.id):
                print(ev.type)
    """

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, **kw: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tidings-client", daemon=True
        )
        self._thread.start()
        self._async = Client(base_url, api_key, **kw)
        self.base_url = self._async.base_url

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def submit(self, task: str, payload: Any = None, **kw: Any) -> Job:
        """See `Client.submit`."""
        return self._run(self._async.submit(task, payload, **kw))

    def submit_many(
        self, items: Iterable[SubmitRequest | tuple[str, Any]], *, traceparent: str | None = None
    ) -> list[Job]:
        """See `Client.submit_many`."""
        return self._run(self._async.submit_many(list(items), traceparent=traceparent))

    def get(self, job_id: str) -> Job:
        return self._run(self._async.get(job_id))

    def jobs(
        self,
        *,
        state: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int | None = 100,
    ) -> list[Job]:
        """See `Client.jobs`."""
        return self._run(self._async.jobs(state=state, task=task, queue=queue, limit=limit))

    def queues(self) -> list[QueueStats]:
        return self._run(self._async.queues())

    def dead(self, queue: str) -> list[Job]:
        return self._run(self._async.dead(queue))

    def watch_links(self, job_id: str) -> WatchLinks:
        return self._run(self._async.watch_links(job_id))

    def cancel(self, job_id: str) -> Job:
        return self._run(self._async.cancel(job_id))

    def retry(self, job_id: str) -> Job:
        return self._run(self._async.retry(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """See `Client.wait`."""
        return self._run(self._async.wait(job_id, timeout))

    def watch(
        self,
        job_id: str,
        *,
        last_event_id: str | None = None,
        on_reconnect: OnReconnect | None = None,
    ) -> Iterator[WatchEvent]:
        """See `Client.watch` (`on_reconnect` is called from the client's own thread)."""
        events = self._async.watch(job_id, last_event_id=last_event_id, on_reconnect=on_reconnect)

        async def step() -> WatchEvent | None:
            try:
                return await anext(events)
            except StopAsyncIteration:
                return None

        try:
            while (ev := self._run(step())) is not None:
                yield ev
        finally:
            if not self._loop.is_closed():
                self._run(events.aclose())


__all__ = [
    "DEFAULT_URL",
    "Client",
    "JobGone",
    "ProtocolError",
    "ServiceError",
    "SseParser",
    "SyncClient",
    "Unreachable",
    "backoff",
    "decode_event",
    "error_from",
]
