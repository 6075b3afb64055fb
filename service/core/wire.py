"""What crosses Redis and the network, typed: ids, jobs and events.

Events exist in two encodings, both msgspec tagged unions decoded strictly:

* **stored**: a compact JSON array, tag first (`["p",1,3,10,"step 3"]`), kept in the job's hash
  as `"<event id> <array>"` and in the partition's firehose. It holds only what the job does not
  already hold (no job id, task, queue or time: the time is the event id's milliseconds);
* **public**: the JSON object SSE clients receive (`{"type":"progress","job":...,"ts":...}`),
  built once per event by `public()`.

The job hash uses short field names (`JOB_FIELDS`), integers for times (ms), and keeps its
events under the numeric fields "1", "2", ... so a job is one key in listpack form.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import time
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from service.core.states import TERMINAL, TERMINAL_EVENTS, State, state_after

TASK_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
JOB_ID_RE = re.compile(r"^[0-9a-z]{26}$")
JOB_PREFIX_RE = re.compile(r"^[0-9a-z]{1,26}$")
IDEM_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
EVENT_ID_RE = re.compile(r"^(\d{1,20})-(\d{1,20})$")

# -- ids -------------------------------------------------------------------------------------

_B32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford, lower case


_PAIRS = [a + b for a in _B32 for b in _B32]  # 10 bits -> two characters
_ID_SHIFTS = tuple(range(120, -1, -10))  # 13 pairs: 26 characters, 130 bits


def _b32(n: int) -> str:
    """The low 130 bits of n as 26 characters (two per lookup: half the steps of one each)."""
    return "".join([_PAIRS[(n >> s) & 1023] for s in _ID_SHIFTS])


def new_job_id(now_ms: int | None = None) -> str:
    """26 characters, sortable by creation time (48-bit ms clock + 80 random bits)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return _b32(ms << 80 | int.from_bytes(os.urandom(10), "big"))


def job_id_time_ms(job_id: str) -> int:
    """The creation time a job id from `new_job_id` carries (nonsense for idempotent ids)."""
    n = 0
    for ch in job_id[:10]:
        n = n * 32 + _B32.index(ch)
    return n


def idempotent_job_id(prefix: str, key: str) -> str:
    """The id a job submitted with this idempotency key gets: the same key, the same job."""
    digest = hashlib.blake2b(f"{prefix}\0{key}".encode(), digest_size=17).digest()
    return _b32(int.from_bytes(digest, "big") >> 6)


EventKey = tuple[int, int]


def parse_event_id(value: str | bytes | None) -> EventKey | None:
    """A Redis stream id as a comparable tuple, or None when malformed."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    m = EVENT_ID_RE.match(value)
    if m is None:
        return None
    ms, seq = int(m.group(1)), int(m.group(2))
    if ms >= 1 << 64 or seq >= 1 << 64:
        return None
    return ms, seq


def event_key(eid: bytes) -> EventKey:
    """The comparable key of a stream id known to be well formed (from Redis itself)."""
    ms, _, seq = eid.partition(b"-")
    return int(ms), int(seq or 0)


@functools.lru_cache(maxsize=256)
def _second(sec: int) -> str:
    # strftime costs microseconds; events come in bursts within the same few seconds
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def iso(ms: int | None) -> str | None:
    """A time in ms as ISO 8601 UTC with milliseconds (`2026-11-30T05:19:13.083Z`)."""
    if ms is None:
        return None
    sec, milli = divmod(ms, 1000)
    return f"{_second(sec)}{milli:03d}Z"


# -- jobs ------------------------------------------------------------------------------------

Number = int | float


class Progress(msgspec.Struct, kw_only=True):
    current: Number | None = None
    total: Number | None = None
    message: str | None = None


class Job(msgspec.Struct, kw_only=True):
    """A job as the API, the Producer and the clients see it."""

    id: str
    task: str
    queue: str
    state: str
    attempt: int
    max_attempts: int
    progress: Progress
    payload: Any = None
    result: Any = None
    error: Any = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    timeout_s: float | None = None
    worker: str | None = None
    events_url: str | None = None
    status_url: str | None = None


class SubmitRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of POST /api/jobs, one item of POST /api/jobs/batch and of submit_many."""

    task: str
    payload: Any = None
    queue: str | None = None
    delay_s: float = 0.0
    max_attempts: int | None = None
    timeout_s: float | None = None
    idempotency_key: str | None = None


class QueueStats(msgspec.Struct, kw_only=True):
    """One queue's figures (GET /api/queues, Producer.queues)."""

    name: str
    queued: int = 0
    running: int = 0
    scheduled: int = 0
    dead: int = 0
    workers: int = 0
    paused: bool = False
    oldest_queued_ms: int | None = None  # when the oldest job not yet started was queued


class WatchLinks(msgspec.Struct, kw_only=True):
    """Fresh watch links for a job (POST /api/jobs/{id}/token): what a long-lived page needs
    when the links it was given expire. `expires_at` is when these stop opening."""

    events_url: str
    status_url: str
    expires_at: str


# job hash field -> what it holds (the scripts write exactly these, plus event fields "1".."n")
JOB_FIELDS: Final[dict[str, str]] = {
    "t": "task",
    "q": "queue",
    "s": "state",
    "a": "attempt",
    "r": "run (the fencing token: +1 at every start)",
    "m": "max attempts",
    "to": "timeout_s (absent: none)",
    "p": "payload (JSON)",
    "c": "created (ms)",
    "st": "started (ms, latest attempt)",
    "f": "finished (ms)",
    "res": "result (JSON)",
    "err": "last error (JSON)",
    "e": "queue entry id while queued or running",
    "w": "worker of the running attempt",
    "k": "idempotency key",
    "rq": "id of the submit call that created it (with an idempotency key)",
    "x": "id of the cancel request while running",
    "rx": "id of the retry request",
    "ws": "sequence number of the last worker write applied for this run",
    "pc": "progress current",
    "pt": "progress total",
    "pm": "progress message",
    "df": "deferred: no worker had the task when it was fetched",
    "tp": "W3C traceparent given at submit",
    "n": "index of the newest event field",
}
READ_FIELDS: Final[tuple[str, ...]] = (
    "t",
    "q",
    "s",
    "a",
    "m",
    "to",
    "p",
    "c",
    "st",
    "f",
    "res",
    "err",
    "pc",
    "pt",
    "pm",
    "w",
)
READ_FIELDS_B: Final[tuple[bytes, ...]] = tuple(f.encode() for f in READ_FIELDS)

_json = msgspec.json.Decoder()


def _num(raw: bytes | None) -> Number | None:
    if not raw:
        return None
    v = float(raw)
    return int(v) if v.is_integer() else v


def _int(raw: bytes | None) -> int | None:
    return int(raw) if raw else None


def job_from_fields(job_id: str, values: list[bytes | None]) -> Job | None:
    """A Job from an HMGET of READ_FIELDS (None when the job does not exist)."""
    t, q, s, a, m, to, p, c, st, f, res, err, pc, pt, pm, w = values
    if t is None or q is None or s is None:
        return None
    state = s.decode()
    return Job(
        id=job_id,
        task=t.decode(),
        queue=q.decode(),
        state=state,
        attempt=int(a or 0),
        max_attempts=int(m or 1),
        progress=Progress(current=_num(pc), total=_num(pt), message=pm.decode() if pm else None),
        payload=_json.decode(p) if p else None,
        result=_json.decode(res) if res else None,
        error=_json.decode(err) if err else None,
        created_at=iso(_int(c)),
        started_at=iso(_int(st)),
        finished_at=iso(_int(f)),
        timeout_s=float(to) if to else None,
        worker=w.decode() if w and state == "running" else None,
    )


def job_from_hash(job_id: str, h: dict[bytes, bytes]) -> Job | None:
    return job_from_fields(job_id, [h.get(f) for f in READ_FIELDS_B])


# -- stored events ---------------------------------------------------------------------------


class _Stored(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    attempt: int


class SQueued(_Stored, tag="q", frozen=True):
    message: str | None = None


class SScheduled(_Stored, tag="sc", frozen=True):
    due: int  # ms


class SStarted(_Stored, tag="st", frozen=True):
    worker: str = ""


class SProgress(_Stored, tag="p", frozen=True):
    current: Number
    total: Number | None = None
    message: str | None = None


class SLog(_Stored, tag="l", frozen=True):
    message: str


class SRetrying(_Stored, tag="r", frozen=True):
    error: msgspec.Raw
    due: int | None = None  # ms; None: restarted at once after a lost worker


class SSucceeded(_Stored, tag="ok", frozen=True):
    result: msgspec.Raw


class SFailed(_Stored, tag="f", frozen=True):
    error: msgspec.Raw


class SCancelled(_Stored, tag="c", frozen=True):
    pass


Stored = (
    SQueued
    | SScheduled
    | SStarted
    | SProgress
    | SLog
    | SRetrying
    | SSucceeded
    | SFailed
    | SCancelled
)
STORED_TAGS: Final[dict[str, str]] = {
    "q": "queued",
    "sc": "scheduled",
    "st": "started",
    "p": "progress",
    "l": "log",
    "r": "retrying",
    "ok": "succeeded",
    "f": "failed",
    "c": "cancelled",
}
_STORED_TYPE: Final[dict[type[_Stored], str]] = {
    SQueued: "queued",
    SScheduled: "scheduled",
    SStarted: "started",
    SProgress: "progress",
    SLog: "log",
    SRetrying: "retrying",
    SSucceeded: "succeeded",
    SFailed: "failed",
    SCancelled: "cancelled",
}
decode_stored = msgspec.json.Decoder(Stored).decode
_encode = msgspec.json.Encoder().encode


def _required(t: type[msgspec.Struct]) -> int:
    return sum(
        1
        for f in msgspec.structs.fields(t)
        if f.default is msgspec.NODEFAULT and f.default_factory is msgspec.NODEFAULT
    )


_OPTIONAL: Final[dict[type[_Stored], tuple[str, ...]]] = {
    t: tuple(f.name for f in msgspec.structs.fields(t))[_required(t) :] for t in _STORED_TYPE
}


def encode_stored(e: Stored) -> bytes:
    """The compact array, without trailing optional fields left at None (the decoder fills in
    the defaults)."""
    raw = _encode(e)
    for name in reversed(_OPTIONAL[type(e)]):
        if getattr(e, name) is not None or not raw.endswith(b",null]"):
            break
        raw = raw[:-6] + b"]"
    return raw


def stored_type(e: Stored) -> str:
    return _STORED_TYPE[type(e)]


# -- public events (SSE data) ------------------------------------------------------------------


class _Public(
    msgspec.Struct, kw_only=True, tag_field="type", forbid_unknown_fields=True, omit_defaults=True
):
    job: str
    state: State
    attempt: int
    task: str
    queue: str
    ts: str


class QueuedEvent(_Public, tag="queued"):
    message: str | None = None


class ScheduledEvent(_Public, tag="scheduled"):
    due: str


class StartedEvent(_Public, tag="started"):
    worker: str | None = None


class ProgressEvent(_Public, tag="progress"):
    current: Number
    total: Number | None = None
    message: str | None = None


class LogEvent(_Public, tag="log"):
    message: str


class RetryingEvent(_Public, tag="retrying"):
    error: Any
    due: str | None = None


class SucceededEvent(_Public, tag="succeeded"):
    result: Any


class FailedEvent(_Public, tag="failed"):
    error: Any


class CancelledEvent(_Public, tag="cancelled"):
    pass


class SnapshotEvent(
    msgspec.Struct,
    kw_only=True,
    tag="snapshot",
    tag_field="type",
    forbid_unknown_fields=True,
    omit_defaults=True,
):
    """The current state instead of the events a client missed. Per job: the job's fields;
    on the firehose: only `reason` (the client re-reads what it shows)."""

    job: str | None = None
    reason: str | None = None
    task: str | None = None
    queue: str | None = None
    state: str | None = None
    attempt: int | None = None
    max_attempts: int | None = None
    progress: Progress | None = None
    payload: Any = None
    result: Any = None
    error: Any = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    timeout_s: float | None = None
    worker: str | None = None


class GoneEvent(
    msgspec.Struct, kw_only=True, tag="gone", tag_field="type", forbid_unknown_fields=True
):
    """The job no longer exists (expired, or Redis lost its data): the stream ends."""

    job: str
    reason: str


class StatsEvent(
    msgspec.Struct, kw_only=True, tag="stats", tag_field="type", forbid_unknown_fields=True
):
    """The deployment's figures now, on the firehose for clients that ask (`?stats=1`), about
    once a second: the queues (as GET /api/queues), jobs per state (`failed`: the dead letters,
    failed jobs still kept) and each queue's outcomes over the last hour. Not stored, no id."""

    ts: str
    queues: list[QueueStats]
    states: dict[str, int]
    last_hour: dict[str, dict[str, int]]


PublicEvent = (
    QueuedEvent
    | ScheduledEvent
    | StartedEvent
    | ProgressEvent
    | LogEvent
    | RetryingEvent
    | SucceededEvent
    | FailedEvent
    | CancelledEvent
    | SnapshotEvent
    | GoneEvent
    | StatsEvent
)
decode_public = msgspec.json.Decoder(PublicEvent).decode


def public(job: str, task: str, queue: str, eid: bytes, e: Stored) -> PublicEvent:
    """The public form of a stored event."""
    ts = iso(event_key(eid)[0]) or ""
    a = e.attempt
    match e:
        case SQueued():
            return QueuedEvent(
                job=job,
                state="queued",
                attempt=a,
                task=task,
                queue=queue,
                ts=ts,
                message=e.message,
            )
        case SScheduled():
            return ScheduledEvent(
                job=job,
                state="scheduled",
                attempt=a,
                task=task,
                queue=queue,
                ts=ts,
                due=iso(e.due) or "",
            )
        case SStarted():
            return StartedEvent(
                job=job,
                state="running",
                attempt=a,
                task=task,
                queue=queue,
                ts=ts,
                worker=e.worker or None,
            )
        case SProgress():
            return ProgressEvent(
                job=job,
                state="running",
                attempt=a,
                task=task,
                queue=queue,
                ts=ts,
                current=e.current,
                total=e.total,
                message=e.message,
            )
        case SLog():
            return LogEvent(
                job=job,
                state="running",
                attempt=a,
                task=task,
                queue=queue,
                ts=ts,
                message=e.message,
            )
        case SRetrying():
            return RetryingEvent(
                job=job,
                state=state_after("retrying", due=e.due is not None),
                attempt=a,
                task=task,
                queue=queue,
                ts=ts,
                error=e.error,
                due=iso(e.due),
            )
        case SSucceeded():
            return SucceededEvent(
                job=job,
                state="succeeded",
                attempt=a,
                task=task,
                queue=queue,
                ts=ts,
                result=e.result,
            )
        case SFailed():
            return FailedEvent(
                job=job, state="failed", attempt=a, task=task, queue=queue, ts=ts, error=e.error
            )
        case SCancelled():
            return CancelledEvent(
                job=job, state="cancelled", attempt=a, task=task, queue=queue, ts=ts
            )
    raise AssertionError(f"unhandled stored event {e!r}")


def encode_public(e: PublicEvent) -> bytes:
    return _encode(e)


def snapshot_of(job: Job, reason: str | None = None) -> SnapshotEvent:
    return SnapshotEvent(
        job=job.id,
        reason=reason,
        task=job.task,
        queue=job.queue,
        state=job.state,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        progress=job.progress,
        payload=job.payload,
        result=job.result,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        timeout_s=job.timeout_s,
        worker=job.worker,
    )


class StoredEvent(msgspec.Struct, frozen=True):
    """One event as the job hash keeps it: its id, and its compact body."""

    id: bytes
    body: bytes

    @property
    def key(self) -> EventKey:
        return event_key(self.id)

    def decode(self) -> Stored:
        return decode_stored(self.body)

    @property
    def type(self) -> str:
        return stored_type(self.decode())

    @classmethod
    def from_field(cls, raw: bytes) -> StoredEvent:
        eid, _, body = raw.partition(b" ")
        return cls(eid, body)


def events_from_hash(h: dict[bytes, bytes]) -> list[StoredEvent]:
    """The job's retained events, oldest first (fields "1".."n" of the job hash)."""
    numbered = [(int(k), v) for k, v in h.items() if k.isdigit()]
    numbered.sort()
    return [StoredEvent.from_field(v) for _, v in numbered]


def apply_event(job: Job, e: Stored, eid: bytes) -> None:
    """Bring a Job snapshot up to date with one of its events (as the scripts change the hash)."""
    ts = iso(event_key(eid)[0])
    job.attempt = e.attempt
    match e:
        case SQueued():
            job.state = "queued"
            if e.attempt == 0:
                job.result = job.error = job.finished_at = None
                job.progress = Progress()
        case SScheduled():
            job.state = "scheduled"
        case SStarted():
            job.state = "running"
            job.started_at = ts
            job.worker = e.worker or None
        case SProgress():
            job.progress = Progress(current=e.current, total=e.total, message=e.message)
        case SRetrying():
            job.state = state_after("retrying", due=e.due is not None)
            job.error = _json.decode(e.error)
        case SSucceeded():
            job.state = "succeeded"
            job.result = _json.decode(e.result)
            job.finished_at = ts
        case SFailed():
            job.state = "failed"
            job.error = _json.decode(e.error)
            job.finished_at = ts
        case SCancelled():
            job.state = "cancelled"
            job.finished_at = ts
        case SLog():
            pass
    if job.state in TERMINAL:
        job.worker = None


class WatchEvent(msgspec.Struct, frozen=True):
    """One event as `watch` yields it: its SSE id (None for a snapshot of a job with no
    events left), its type, and its typed data."""

    id: str | None
    type: str
    data: PublicEvent

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS
