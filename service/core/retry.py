"""Which Redis errors are worth waiting out, and the one retry-with-backoff helper.

A Redis that is restarting, failing over, migrating a slot, out of memory or busy with a slow
script answers with errors that go away by themselves: every loop waits them out with backoff
(and logs it), and the HTTP API answers 503 with Retry-After. Anything else is a bug or bad
input and is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.exceptions
import structlog

T = TypeVar("T")
log = structlog.get_logger("tidings.redis")

# reply codes of errors that pass: out of memory, read-only replica (a failover), a slow
# script, loading the dataset, cluster reconfiguration, a script refused mid-migration
_TRANSIENT_REPLIES = (
    "OOM",
    "READONLY",
    "BUSY",
    "LOADING",
    "MOVED",
    "ASK",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "NOREPLICAS",
    "UNBLOCKED",
    "NOSCRIPT",
)
# redis-py turns most of those codes into exception classes and strips the code from the
# message ("MOVED 3999 host:port" becomes MovedError("3999 host:port")): match the class
_TRANSIENT_CLASSES = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.NoScriptError,
    redis.exceptions.AskError,  # and MovedError
    redis.exceptions.TryAgainError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterDownError,  # and MasterDownError
)


# redis-py's connection code, and the asyncio transport code it writes through
_REDIS_CONNECTION = (
    os.path.join("redis", "asyncio", "connection.py"),
    os.path.join("redis", "connection.py"),
)
_REDIS_PARSERS = os.path.join("redis", "_parsers", "")
_TRANSPORT = (os.path.join("asyncio", "streams.py"), os.path.join("asyncio", "selector_events.py"))
_UVLOOP = os.path.join("uvloop", "handles", "")  # uvloop: "RuntimeError: ... the handler is closed"


def _torn_down(exc: BaseException) -> bool:
    """A connection closed under a command by another task. redis-py 8.1's async cluster client
    closes *every* connection of the client on CLUSTERDOWN (`aclose()`, which a failover
    causes), including ones other tasks are writing to or reading from; those tasks then get
    `AttributeError: 'NoneType' object has no attribute 'writelines'` (or a `TypeError`, or
    uvloop's `RuntimeError: ... the handler is closed`) from the connection code instead of a
    ConnectionError (redis-py #3546, #4287; fixed after 8.1).
    It is a lost connection and is retried like one; the same errors raised elsewhere are bugs."""
    if not isinstance(exc, AttributeError | TypeError | RuntimeError):
        return False
    files = []
    tb = exc.__traceback__
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    in_redis = [
        i for i, f in enumerate(files) if f.endswith(_REDIS_CONNECTION) or _REDIS_PARSERS in f
    ]
    if not in_redis:
        return False
    # raised in redis-py's connection code itself, or in the transport it was writing to
    return all(f.endswith(_TRANSPORT) or _UVLOOP in f for f in files[in_redis[-1] + 1 :])


def is_transient(exc: BaseException) -> bool:
    """Does this error go away by itself (Redis away, failing over, full, busy)?"""
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | OSError):
        return True
    if _torn_down(exc):
        return True
    if isinstance(exc, asyncio.TimeoutError):
        return True
    if isinstance(exc, redis.exceptions.ClusterError):
        return True  # ClusterDownError, slots not covered, topology being refreshed
    if isinstance(exc, redis.exceptions.ResponseError):
        if isinstance(exc, _TRANSIENT_CLASSES):
            return True
        text = str(exc)
        if "non local key" in text:
            return True  # a script refused mid-migration (Redis and Valkey word it differently)
        if "Error running script" in text or "@user_script" in text:
            # an error raised by a command inside a script: transient only if that one is
            return any(p in text for p in _TRANSIENT_REPLIES)
        return text.startswith(_TRANSIENT_REPLIES)
    # redis-py's cluster client raises RedisClusterException (not a RedisError) when it cannot
    # reach a node to learn the topology from
    return type(exc).__name__ == "RedisClusterException"


def describe(exc: BaseException) -> str:
    """The error for a log line: its class (some carry no message) and message, shortened."""
    return f"{type(exc).__name__}: {exc}"[:200]


class Backoff:
    """Exponential backoff with jitter: `next()` gives the next wait, `reset()` starts over."""

    def __init__(self, base: float = 0.05, cap: float = 2.0) -> None:
        self.base = base
        self.cap = cap
        self._delay = base

    def next(self) -> float:
        d = self._delay
        self._delay = min(self._delay * 2, self.cap)
        return d * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._delay = self.base


async def retrying(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    stop: asyncio.Event | None = None,
    deadline_s: float | None = None,
    backoff: Backoff | None = None,
    **log_fields: Any,
) -> T:
    """Run `op` until it succeeds, waiting out transient Redis errors with backoff. Gives up
    (re-raising the last error) once `stop` is set or `deadline_s` has passed; raises at once
    what is not transient."""
    b = backoff or Backoff()
    loop = asyncio.get_running_loop()
    end = None if deadline_s is None else loop.time() + deadline_s
    while True:
        try:
            return await op()
        except Exception as e:
            if not is_transient(e):
                raise
            if (stop is not None and stop.is_set()) or (end is not None and loop.time() >= end):
                raise
            delay = b.next()
            log.warning(
                "redis.retry",
                what=what,
                error=describe(e),
                retry_in=round(delay, 3),
                **log_fields,
            )
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
