"""A lean RESP client for the hot calls (the scripts, reading one job), on one connection.

redis-py's asyncio client costs ~100-200 µs of Python per command here; the hot paths (a submit,
a worker's start and finish batches, reading a job) need a fraction of that. This client writes
every command issued in one loop turn with one syscall (automatic pipelining: concurrent submits
share round trips), parses replies with hiredis, and maps error replies to redis-py's exception
classes, so callers treat both clients alike. It speaks to one server only: with a cluster or
Sentinel, `connect.connect_fast` hands out the redis-py client instead.

It never sends a blocking command (that would stall every call behind it). A timeout or a broken
connection fails every call in flight (their replies could no longer be matched) and the next
call reconnects; callers retry (every script is idempotent under a re-send).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis
import redis.exceptions
from redis._parsers.base import BaseParser


def _error(reply: hiredis.ReplyError) -> redis.exceptions.RedisError:
    exc: redis.exceptions.RedisError = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
    return exc


class _Protocol(asyncio.Protocol):
    def __init__(self, client: FastRedis) -> None:
        self._client = client
        self._reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            reply = self._reader.gets()
            if reply is False:
                return
            if not self.waiting:
                continue  # a reply nobody waits for: cannot happen on a healthy connection
            fut = self.waiting.popleft()
            if fut.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(_error(reply))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._gone(self, redis.exceptions.ConnectionError(f"connection lost: {exc}"))
        if not self.lost.done():
            self.lost.set_result(None)


def _pack(args: tuple[Any, ...]) -> bytes:
    try:
        return hiredis.pack_command(args)  # type: ignore[no-any-return]
    except TypeError:  # a value hiredis does not pack: the plain way below
        return _pack_py(args)


def _pack_py(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, str):
            b = a.encode()
        elif isinstance(a, int | float):
            b = repr(a).encode()
        else:
            b = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class FastRedis:
    """One pipelined connection to one Redis server (redis://, rediss://, user/password, db)."""

    def __init__(self, url: str, *, socket_timeout: float = 5.0, connect_timeout: float = 2.0):
        u = urlparse(url)
        self._host = u.hostname or "127.0.0.1"
        self._port = u.port or 6379
        self._user = unquote(u.username) if u.username else None
        self._password = unquote(u.password) if u.password else None
        path = u.path.strip("/")
        self._db = int(path) if path.isdigit() else 0
        self._ssl = ssl.create_default_context() if u.scheme == "rediss" else None
        self._timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._out: list[bytes] = []
        self._out_futs: list[asyncio.Future[Any]] = []
        self._flush_scheduled = False
        self._closed = False

    # -- connection ---------------------------------------------------------------------------

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        transport: Any = None  # asyncio's or uvloop's (not a subclass)
        try:
            async with asyncio.timeout(self._connect_timeout):
                transport, proto = await loop.create_connection(
                    lambda: _Protocol(self), self._host, self._port, ssl=self._ssl
                )
                hello: list[tuple[Any, ...]] = []
                if self._password is not None:
                    if self._user:
                        hello.append(("AUTH", self._user, self._password))
                    else:
                        hello.append(("AUTH", self._password))
                if self._db:
                    hello.append(("SELECT", self._db))
                if hello:
                    assert proto.transport is not None
                    futs = [loop.create_future() for _ in hello]
                    proto.waiting.extend(futs)
                    proto.transport.write(b"".join(_pack(c) for c in hello))
                    await asyncio.gather(*futs)
        except BaseException as e:
            if transport is not None:  # failed or cancelled half-way: no socket left behind
                transport.abort()
            if isinstance(e, OSError | TimeoutError):
                raise redis.exceptions.ConnectionError(
                    f"cannot connect to {self._host}:{self._port}: {e}"
                ) from e
            raise
        finally:
            self._connecting = None
        if self._closed:  # closed meanwhile
            transport.abort()
            raise redis.exceptions.ConnectionError("client closed")
        # adopted here, before anyone waiting hears of it (also when the caller that asked for
        # it was cancelled meanwhile: else nobody would close it)
        self._proto = proto
        return proto

    async def _ready(self) -> _Protocol:
        if self._closed:
            raise redis.exceptions.ConnectionError("client closed")
        if self._proto is not None:
            return self._proto
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    def _gone(self, proto: _Protocol, exc: Exception) -> None:
        if self._proto is proto:
            self._proto = None
        while proto.waiting:
            fut = proto.waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        proto = self._proto
        out, futs = self._out, self._out_futs
        self._out, self._out_futs = [], []
        if proto is None or proto.transport is None or proto.transport.is_closing():
            err = redis.exceptions.ConnectionError("connection lost")
            for f in futs:
                if not f.done():
                    f.set_exception(err)
            return
        proto.waiting.extend(futs)
        proto.transport.write(b"".join(out))

    # -- commands -----------------------------------------------------------------------------

    async def execute_command(self, *args: Any) -> Any:
        proto = self._proto if self._proto is not None else await self._ready()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._out.append(_pack(args))
        self._out_futs.append(fut)
        if not self._flush_scheduled:
            # the first command of this loop turn goes out now (a lone call waits no extra
            # turn); those that follow in the same turn are gathered and written after it
            self._flush()
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        try:
            async with asyncio.timeout(self._timeout):  # a timer, not a task as wait_for makes
                return await fut
        except TimeoutError as e:
            # the reply may still come, after others: this connection can no longer be trusted
            if proto.transport is not None:
                proto.transport.abort()
            self._gone(proto, redis.exceptions.TimeoutError("timeout"))
            raise redis.exceptions.TimeoutError(
                f"no reply from {self._host}:{self._port} within {self._timeout}s"
            ) from e

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    async def script_load(self, source: str) -> Any:
        return await self.execute_command("SCRIPT", "LOAD", source)

    async def hmget(self, key: str, fields: Any) -> list[bytes | None]:
        reply: list[bytes | None] = await self.execute_command("HMGET", key, *fields)
        return reply

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        flat = await self.execute_command("HGETALL", key)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    async def hget(self, key: str, field: str) -> bytes | None:
        reply: bytes | None = await self.execute_command("HGET", key, field)
        return reply

    async def ping(self) -> bool:
        return bool(await self.execute_command("PING"))

    async def aclose(self) -> None:
        self._closed = True
        connecting = self._connecting
        if connecting is not None:
            connecting.cancel()
            await asyncio.wait([connecting], timeout=1.0)
            await asyncio.sleep(0)  # the aborted socket closes in the next loop turn
        proto = self._proto
        self._proto = None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(proto.lost), 1.0)
            except TimeoutError:
                proto.transport.abort()
