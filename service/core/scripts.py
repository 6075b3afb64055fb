"""The server-side scripts, each with a typed builder and a typed reply.

Each op is one Lua file in `lua/`, prefixed by `common.lua` (and `events.lua` for ops that
change jobs), with the state machine rendered in from `states.py`. A builder returns a `Call`:
the script, every key it touches (declared, as Redis and a cluster client need), its
arguments, and the decoder of its reply. Every script is idempotent under a re-send: a client
that times out and tries again cannot apply a transition twice (see each script's header).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Generic, TypeVar

import msgspec
import redis.exceptions

from service.core.keys import Keys
from service.core.states import TERMINAL, TRANSITIONS

GROUP: Final = "tidings"
# wait / run time histogram bounds in ms (+Inf is the last bucket)
BUCKETS_MS: Final[tuple[int, ...]] = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    900000,
    3600000,
)

R = TypeVar("R")


def _lua_transitions() -> str:
    rows = []
    for frm, tos in TRANSITIONS.items():
        inner = ", ".join(f"{t} = true" for t in sorted(tos))
        rows.append(f"[{frm!r}] = {{{inner}}}")
    return "{" + ", ".join(rows) + "}"


def _lua_set(names: frozenset[str]) -> str:
    return "{" + ", ".join(f"[{n!r}] = true" for n in sorted(names)) + "}"


def _read(name: str) -> str:
    return resources.files("service.core").joinpath("lua", name).read_text()


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str

    @classmethod
    def load(cls, name: str, *, events: bool, flags: str = "") -> Script:
        common = (
            _read("common.lua")
            .replace("{{GROUP}}", GROUP)
            .replace("{{TRANSITIONS}}", _lua_transitions())
            .replace("{{TERMINAL}}", _lua_set(TERMINAL))
            .replace("{{BUCKETS}}", "{" + ", ".join(map(str, BUCKETS_MS)) + "}")
        )
        parts = [common]
        if events:
            parts.append(_read("events.lua"))
        parts.append(_read(f"{name}.lua"))
        # a shebang: the script runs whole or not at all (refused up front when Redis is out
        # of memory, unless allow-oom), never half-applied
        shebang = "#!lua" + (f" flags={flags}" if flags else "")
        source = shebang + "\n" + "\n".join(parts)
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())


SUBMIT = Script.load("submit", events=True)
START = Script.load("start", events=True)
APPLY = Script.load("apply", events=True)
PROMOTE = Script.load("promote", events=True)
CANCEL = Script.load("cancel", events=True)
RETRY = Script.load("retry", events=True)
DEFER = Script.load("defer", events=True)
# a lease heartbeat allocates nothing: it must keep working while Redis is out of memory
RENEW = Script.load("renew", events=False, flags="allow-oom")
REGISTER_QUEUE = Script.load("register_queue", events=False)
# it only deletes: an operator must be able to make room while Redis is out of memory
PURGE = Script.load("purge", events=False, flags="allow-oom")
ALL: Final[tuple[Script, ...]] = (
    SUBMIT,
    START,
    APPLY,
    PROMOTE,
    CANCEL,
    RETRY,
    DEFER,
    RENEW,
    REGISTER_QUEUE,
    PURGE,
)


def is_noscript(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.NoScriptError) or "NOSCRIPT" in str(exc)


@dataclass(frozen=True)
class Call(Generic[R]):
    """One script invocation, ready to send: run it with `run` (async) or `run_sync`."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]
    decode: Callable[[Any], R]

    def command(self) -> list[Any]:
        return [self.script.sha, len(self.keys), *self.keys, *self.args]

    async def run(self, r: Any) -> R:
        try:
            raw = await r.evalsha(*self.command())
        except redis.exceptions.ResponseError as e:
            if not is_noscript(e):
                raise
            # a restarted or new server (or a promoted replica) does not know the script yet
            await r.script_load(self.script.source)
            raw = await r.evalsha(*self.command())
        return self.decode(raw)

    def run_sync(self, r: Any) -> R:
        try:
            raw = r.evalsha(*self.command())
        except redis.exceptions.ResponseError as e:
            if not is_noscript(e):
                raise
            r.script_load(self.script.source)
            raw = r.evalsha(*self.command())
        return self.decode(raw)


# -- replies -----------------------------------------------------------------------------------


class SubmitRow(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    created: int
    state: str
    created_ms: int
    again: int  # an earlier try of this very call created it


class StartRow(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    id: str
    verdict: str  # run | again | skip | notmine | dead
    run: int = 0
    attempt: int = 0
    task: str = ""
    payload: str = ""
    timeout_s: str = ""
    max_attempts: int = 0
    traceparent: str = ""


class Control(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    status: str  # done | requested | finished | conflict | missing
    state: str


_submit_rows = msgspec.json.Decoder(list[SubmitRow]).decode
_start_rows = msgspec.json.Decoder(list[StartRow]).decode
_strings = msgspec.json.Decoder(list[str]).decode
_control = msgspec.json.Decoder(Control).decode


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# -- arguments -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Values every event-writing call carries (from config.jobs)."""

    firehose_maxlen: int = 100_000
    max_events: int = 1000
    retention_ms: int = 86_400_000

    def args(self) -> list[int]:
        return [self.firehose_maxlen, self.max_events, self.retention_ms]


class NewJob(msgspec.Struct, frozen=True):
    """One validated submission, as the submit script takes it."""

    id: str
    task: str
    queue: str
    payload: bytes
    max_attempts: int
    timeout_s: float | None
    delay_ms: int
    idempotency_key: str | None
    call_id: str  # set with an idempotency key: tells a re-sent call from another one
    traceparent: str = ""  # W3C trace context of the submitter, handed to the worker

    def fields(self) -> list[Any]:
        return [
            self.id,
            self.task,
            self.queue,
            self.payload,
            self.max_attempts,
            "" if self.timeout_s is None else repr(float(self.timeout_s)),
            self.delay_ms,
            self.idempotency_key or "",
            self.call_id,
            self.traceparent,
        ]


class Write(msgspec.Struct, frozen=True):
    """One worker write for `apply`: progress (p), log (l) or finish (f)."""

    kind: str
    id: str
    queue: str
    run: int
    seq: int
    body: bytes
    x1: str | bytes = ""
    x2: str | int = ""
    x3: str = ""


class Entry(msgspec.Struct, frozen=True):
    """A fetched queue entry to start."""

    id: str
    queue: str
    entry: str


def new_request_id() -> str:
    return os.urandom(8).hex()


class Ops:
    """Builders for every script op of one deployment (its keys and limits)."""

    def __init__(self, keys: Keys, limits: Limits) -> None:
        self.keys = keys
        self.limits = limits

    def _ev(self, k: int) -> list[str]:
        return [self.keys.fire(k), self.keys.stats(k)]

    def submit(self, k: int, jobs: Sequence[NewJob]) -> Call[list[SubmitRow]]:
        keys = [*self._ev(k), self.keys.index(k), self.keys.due(k)]
        args: list[Any] = [*self.limits.args(), len(jobs)]
        for j in jobs:
            keys += [self.keys.job(j.id), self.keys.queue(k, j.queue), self.keys.sched(k, j.queue)]
            args += j.fields()
        return Call(SUBMIT, keys, args, _submit_rows)

    def start(
        self, k: int, consumer: str, entries: Sequence[Entry], minute: int
    ) -> Call[list[StartRow]]:
        keys = [*self._ev(k), self.keys.trend(k, minute)]
        args: list[Any] = [*self.limits.args(), consumer, len(entries)]
        for e in entries:
            keys += [self.keys.job(e.id), self.keys.queue(k, e.queue), self.keys.dead(k, e.queue)]
            args += [e.id, e.entry]
        return Call(START, keys, args, _start_rows)

    def apply(self, k: int, writes: Sequence[Write], minute: int) -> Call[list[str]]:
        keys = [*self._ev(k), self.keys.trend(k, minute), self.keys.due(k)]
        args: list[Any] = [*self.limits.args(), len(writes)]
        for w in writes:
            keys += [
                self.keys.job(w.id),
                self.keys.queue(k, w.queue),
                self.keys.sched(k, w.queue),
                self.keys.dead(k, w.queue),
            ]
            args += [w.kind, w.id, w.run, w.seq, w.body, w.x1, w.x2, w.x3]
        return Call(APPLY, keys, args, _strings)

    def renew(self, k: int, consumer: str, jobs: Sequence[tuple[str, str, int]]) -> Call[list[str]]:
        """jobs: (id, queue, run)."""
        keys: list[str] = []
        args: list[Any] = [consumer, len(jobs)]
        for job_id, queue, run in jobs:
            keys += [self.keys.job(job_id), self.keys.queue(k, queue)]
            args += [job_id, run]
        return Call(RENEW, keys, args, _strings)

    def promote(self, k: int, queue: str, ids: Sequence[str]) -> Call[int]:
        keys = [
            *self._ev(k),
            self.keys.due(k),
            self.keys.sched(k, queue),
            self.keys.queue(k, queue),
            *(self.keys.job(i) for i in ids),
        ]
        args: list[Any] = [*self.limits.args(), queue, len(ids), *ids]
        return Call(PROMOTE, keys, args, int)

    def cancel(self, job_id: str, queue: str, request_id: str, minute: int) -> Call[Control]:
        k = self.keys.partition(job_id)
        keys = [
            *self._ev(k),
            self.keys.trend(k, minute),
            self.keys.job(job_id),
            self.keys.queue(k, queue),
            self.keys.sched(k, queue),
        ]
        return Call(CANCEL, keys, [*self.limits.args(), job_id, request_id], _control)

    def retry(self, job_id: str, queue: str, request_id: str) -> Call[Control]:
        k = self.keys.partition(job_id)
        keys = [
            *self._ev(k),
            self.keys.job(job_id),
            self.keys.queue(k, queue),
            self.keys.dead(k, queue),
        ]
        return Call(RETRY, keys, [*self.limits.args(), job_id, request_id], _control)

    def defer(self, k: int, e: Entry, consumer: str, delay_ms: int, message: str) -> Call[str]:
        keys = [
            *self._ev(k),
            self.keys.due(k),
            self.keys.job(e.id),
            self.keys.queue(k, e.queue),
            self.keys.sched(k, e.queue),
        ]
        args = [*self.limits.args(), e.id, e.entry, consumer, delay_ms, message]
        return Call(DEFER, keys, args, _text)

    def purge(
        self, k: int, queue: str, jobs: Sequence[tuple[str, str]], before_ms: int = 0
    ) -> Call[list[str]]:
        """Delete finished jobs of `queue` in partition k. jobs: (id, index entry id or '');
        `before_ms`: only those finished before it (0: any)."""
        keys = [self.keys.index(k), self.keys.dead(k, queue), *(self.keys.job(i) for i, _ in jobs)]
        args: list[Any] = [queue, before_ms, len(jobs)]
        for job_id, entry in jobs:
            args += [job_id, entry]
        return Call(PURGE, keys, args, _strings)

    def register_queue(self, name: str, cap: int, settings: bytes) -> Call[str]:
        return Call(REGISTER_QUEUE, [self.keys.queues()], [name, cap, settings], _text)
