"""The Redis contract: key layout, names, wire Structs and the server-side script.

Nothing else in the code base spells a key. Every job's keys, its queue stream and its partition's
firehose share one hash tag, so each transition is one atomic script (tidings.lua) and the layout
fits Redis Cluster: more partitions spread the load over more slots.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import zlib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import msgspec
import redis.exceptions

GROUP = "tidings"

TASK_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
JOB_ID_RE = re.compile(r"^[0-9a-z]{26}$")
IDEM_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
EVENT_ID_RE = re.compile(r"^(\d{1,20})-(\d{1,20})$")

State = Literal["queued", "scheduled", "running", "succeeded", "failed", "cancelled"]
STATES: tuple[str, ...] = ("queued", "scheduled", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

_B32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford, lower case


def _b32(n: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_B32[n & 31])
        n >>= 5
    return "".join(reversed(out))


def new_job_id() -> str:
    """26 characters, sortable by creation time (48-bit ms clock + 80 random bits)."""
    return _b32(int(time.time() * 1000) << 80 | int.from_bytes(os.urandom(10), "big"), 26)


def idempotent_job_id(prefix: str, key: str) -> str:
    """The id a job submitted with this idempotency key gets: the same key, the same job."""
    digest = hashlib.blake2b(f"{prefix}\0{key}".encode(), digest_size=17).digest()
    return _b32(int.from_bytes(digest, "big") >> 6, 26)


def parse_event_id(value: str | bytes | None) -> tuple[int, int] | None:
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


class Progress(msgspec.Struct, kw_only=True):
    current: float | None = None
    total: float | None = None
    message: str | None = None


class Job(msgspec.Struct, kw_only=True):
    """A job as the API and Producer.get return it."""

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
    events_url: str | None = None
    status_url: str | None = None


class Event(msgspec.Struct, frozen=True):
    """One stored event: its stream id, its type and its JSON data (as stored, not re-encoded)."""

    id: str
    type: str
    data: bytes

    @property
    def key(self) -> tuple[int, int]:
        parsed = parse_event_id(self.id)
        assert parsed is not None
        return parsed

    @classmethod
    def from_list_item(cls, raw: bytes) -> Event:
        eid, typ, data = raw.split(b" ", 2)
        return cls(eid.decode(), typ.decode(), data)


_json_decode = msgspec.json.Decoder().decode


def _num(raw: bytes | None) -> float | None:
    if not raw:
        return None
    v = float(raw)
    return int(v) if v.is_integer() else v


def _str(raw: bytes | None) -> str | None:
    return raw.decode() if raw else None


def _json(raw: bytes | None) -> Any:
    return _json_decode(raw) if raw else None


def job_from_hash(job_id: str, h: dict[bytes, bytes]) -> Job:
    """Build a Job from the job hash (HGETALL)."""
    timeout = _num(h.get(b"timeout_s"))
    return Job(
        id=job_id,
        task=h[b"task"].decode(),
        queue=h[b"queue"].decode(),
        state=h[b"state"].decode(),
        attempt=int(h.get(b"attempt", b"0")),
        max_attempts=int(h.get(b"max_attempts", b"1")),
        progress=Progress(
            current=_num(h.get(b"p_current")),
            total=_num(h.get(b"p_total")),
            message=_str(h.get(b"p_message")),
        ),
        payload=_json(h.get(b"payload")),
        result=_json(h.get(b"result")),
        error=_json(h.get(b"error")),
        created_at=_str(h.get(b"created_at")),
        started_at=_str(h.get(b"started_at")),
        finished_at=_str(h.get(b"finished_at")),
        timeout_s=float(timeout) if timeout else None,
    )


class _EventData(msgspec.Struct):
    type: str
    state: str
    attempt: int
    ts: str
    current: float | None = None
    total: float | None = None
    message: str | None = None
    result: msgspec.Raw = msgspec.Raw(b"")
    error: msgspec.Raw = msgspec.Raw(b"")


_event_decode = msgspec.json.Decoder(_EventData).decode


def apply_event(job: Job, data: bytes) -> None:
    """Bring a Job snapshot up to date with one of its events (as the scripts change the hash)."""
    e = _event_decode(data)
    job.state = e.state
    job.attempt = e.attempt
    if e.type == "started":
        job.started_at = e.ts
    elif e.type == "progress":
        job.progress = Progress(current=e.current, total=e.total, message=e.message)
    elif e.type == "succeeded":
        job.result = _json_decode(e.result) if len(e.result) else None
        job.finished_at = e.ts
    elif e.type in ("failed", "retrying"):
        job.error = _json_decode(e.error) if len(e.error) else None
        if e.type == "failed":
            job.finished_at = e.ts
    elif e.type == "cancelled":
        job.finished_at = e.ts
    elif e.type == "queued" and e.attempt == 0:
        job.result = job.error = job.finished_at = None


@dataclass(frozen=True)
class Keys:
    """Every key name, built through one place. `prefix` lets tests share one server."""

    prefix: str = "tidings"
    partitions: int = 1

    def partition(self, job_id: str) -> int:
        return zlib.crc32(job_id.encode()) % self.partitions if self.partitions > 1 else 0

    def tag(self, k: int) -> str:
        return f"{{{self.prefix}:{k}}}:"

    def job(self, job_id: str) -> str:
        return f"{self.tag(self.partition(job_id))}job:{job_id}"

    def events(self, job_id: str) -> str:
        return f"{self.tag(self.partition(job_id))}ev:{job_id}"

    def queue(self, k: int, name: str) -> str:
        return f"{self.tag(k)}q:{name}"

    def fire(self, k: int) -> str:
        return f"{self.tag(k)}fire"

    def sched(self, k: int, queue: str) -> str:
        return f"{self.tag(k)}sched:{queue}"

    def index(self, k: int) -> str:
        return f"{self.tag(k)}idx"

    def dead(self, k: int, queue: str) -> str:
        return f"{self.tag(k)}dead:{queue}"

    def queue_names(self, k: int) -> str:
        return f"{self.tag(k)}queues"

    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def rate(self, principal: str, second: int) -> str:
        return f"{self.prefix}:rate:{principal}:{second}"


SCRIPT = resources.files("service").joinpath("tidings.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


@dataclass(frozen=True)
class Limits:
    """Values every script call carries (from config.jobs)."""

    firehose_maxlen: int = 100_000
    max_events: int = 1000
    retention_ms: int = 86_400_000


def script_args(keys: Keys, limits: Limits, k: int, op: str, *args: Any) -> list[Any]:
    """EVALSHA arguments after the sha: numkeys, KEYS[1], then ARGV."""
    return [
        1,
        keys.fire(k),
        op,
        keys.tag(k),
        limits.firehose_maxlen,
        limits.max_events,
        limits.retention_ms,
        *args,
    ]


def is_noscript(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.NoScriptError) or "NOSCRIPT" in str(exc)


async def call(r: Any, args: list[Any]) -> Any:
    """Run one script op on an asyncio client; loads the script after a Redis restart."""
    try:
        return await r.evalsha(SCRIPT_SHA, *args)
    except Exception as e:
        if not is_noscript(e):
            raise
        await r.script_load(SCRIPT)
        return await r.evalsha(SCRIPT_SHA, *args)


def call_sync(r: Any, args: list[Any]) -> Any:
    """The same for a synchronous client (the worker's lease thread)."""
    try:
        return r.evalsha(SCRIPT_SHA, *args)
    except Exception as e:
        if not is_noscript(e):
            raise
        r.script_load(SCRIPT)
        return r.evalsha(SCRIPT_SHA, *args)


def client_options() -> dict[str, Any]:
    """Connection options for every client: reconnect and retry briefly after a broken
    connection (a Redis restart), and never hang on a dead peer."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    return {
        "decode_responses": False,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
        "retry_on_error": [redis.exceptions.ConnectionError],
        "socket_connect_timeout": 2,
        "socket_keepalive": True,
    }
