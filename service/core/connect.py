"""The one place Redis clients are made: a single server, a Redis Cluster, or a primary found
through Sentinel, async or sync, with the same options everywhere.

Options that matter for correctness:

* a broken connection is re-established and the command re-sent (every script is idempotent
  under a re-send); a *timeout* is not re-sent by the client: the caller's loop decides, with
  backoff (see `retry.py`), so a stalled Redis is not buried under copies of the same call;
* blocking reads block for less than the socket timeout.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote, urlparse

import redis
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry as SyncRetry

from service.core.config import RedisConfig
from service.core.resp import FastRedis

BLOCK_MS = 2000  # longest blocking read: well under the socket timeout
CLUSTER_MIN_CONNECTIONS = 64  # per node (a cap, not what is opened: see `connect`)


def _sentinels(cfg: RedisConfig) -> list[tuple[str, int]]:
    out = []
    for s in cfg.sentinels:
        host, _, port = s.rpartition(":")
        out.append((host or "127.0.0.1", int(port or 26379)))
    return out


def _credentials(url: str) -> dict[str, Any]:
    """username, password, db and TLS of `redis.url`, for Sentinel (which finds the host)."""
    if "://" not in url:
        return {}
    u = urlparse(url)
    out: dict[str, Any] = {}
    if u.username:
        out["username"] = unquote(u.username)
    if u.password:
        out["password"] = unquote(u.password)
    if u.path.strip("/").isdigit():
        out["db"] = int(u.path.strip("/"))
    if u.scheme == "rediss":
        out["ssl"] = True
    return out


def _common(cfg: RedisConfig) -> dict[str, Any]:
    return {
        "decode_responses": False,
        "socket_connect_timeout": 2.0,
        "socket_timeout": cfg.socket_timeout_s,
        "socket_keepalive": True,
    }


class BlockingSentinelConnectionPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """redis-py's Sentinel pool raises "Too many connections" the moment `max_connections` are
    in use; during a failover (every WAIT waiting out its timeout on a master that has no
    replica yet, every SSE watcher resyncing at once) that turned into 503s. Like the
    single-server pool, this one waits (up to the socket timeout) for a connection instead."""


def connect(cfg: RedisConfig, url: str, *, max_connections: int = 50) -> Any:
    """An asyncio client for `url` (already resolved from "embedded"). Typed Any: redis-py's
    replies are unions that do not narrow, and the three client kinds share no base class."""
    retry = AsyncRetry(
        ExponentialWithJitterBackoff(base=0.02, cap=0.5), 3, (redis.exceptions.ConnectionError,)
    )
    opts = _common(cfg)
    if cfg.cluster:
        from redis.asyncio.cluster import RedisCluster

        # No client-side retries on a cluster: redis-py's cluster client answers a failed
        # retry-able call (a pipeline's connection error, every 5th MOVED) by closing every
        # connection of the client, under every other task's feet; under concurrency during a
        # failover those failures fed each other for seconds after the promotion. With 0
        # retries a connection error is raised (and the slot map re-read on the next call) and
        # MOVED only patches the map; the callers' loops retry with backoff, HTTP says 503.
        return RedisCluster.from_url(
            url,
            retry=AsyncRetry(NoBackoff(), 0),
            reinitialize_steps=0,
            # per node; redis-py's cluster pool fails at once (MaxConnectionsError) when full
            # instead of waiting like the other pools, and right after a promotion every WAIT
            # on the new master holds its connection for the whole WAIT timeout
            max_connections=max(max_connections, CLUSTER_MIN_CONNECTIONS),
            require_full_coverage=True,
            **opts,
        )
    if cfg.sentinels:
        from redis.asyncio.sentinel import Sentinel

        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            _sentinels(cfg),
            sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0},
        )
        return sentinel.master_for(
            cfg.sentinel_master,
            connection_pool_class=BlockingSentinelConnectionPool,
            retry=retry,
            max_connections=max_connections,
            timeout=cfg.socket_timeout_s,
            **opts,
            **_credentials(url),
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=cfg.socket_timeout_s, retry=retry, **opts
    )
    # from_pool: closing the client closes its pool (and every connection in it)
    return aioredis.Redis.from_pool(pool)


def connect_sync(cfg: RedisConfig, url: str) -> Any:
    """A synchronous client (the worker's lease thread)."""
    retry = SyncRetry(
        ExponentialWithJitterBackoff(base=0.02, cap=0.5), 3, (redis.exceptions.ConnectionError,)
    )
    opts = _common(cfg)
    if cfg.cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, retry=retry, **opts)
    if cfg.sentinels:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            _sentinels(cfg),
            sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0},
        )
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            cfg.sentinel_master, retry=retry, **opts, **_credentials(url)
        )
    return redis.Redis.from_url(url, retry=retry, **opts)


def is_cluster(r: Any) -> bool:
    return type(r).__name__ == "RedisCluster"


async def primaries(r: Any) -> list[Any]:
    """One client per primary (for start-up checks that must ask every one of them)."""
    if is_cluster(r):
        return [n for n in r.get_primaries()]
    return [r]


def _on_node(r: Any, key: str) -> dict[str, Any]:
    # a cluster client would ask its default node which keys XREAD names (COMMAND GETKEYS) and
    # fail for good once that node is gone: route by the key's slot instead (MOVED is followed)
    return {"target_nodes": r.get_node_from_key(key)} if is_cluster(r) else {}


async def xread(r: Any, streams: dict[str, bytes], *, count: int, block: int) -> Any:
    """XREAD of streams that share one slot, routed to its node, on a redis-py client or a
    lean one (the reply in redis-py's shape either way)."""
    keys = list(streams)
    reply = await r.execute_command(
        "XREAD",
        "COUNT",
        count,
        "BLOCK",
        block,
        "STREAMS",
        *keys,
        *(streams[k] for k in keys),
        **_on_node(r, keys[0]),
    )
    return _streams(reply) if isinstance(r, FastRedis) else reply


async def xreadgroup(
    r: Any, group: str, consumer: str, streams: dict[str, str], *, count: int, block: int
) -> Any:
    """XREADGROUP of streams that share one slot, routed to its node (either client, as
    `xread`)."""
    keys = list(streams)
    reply = await r.execute_command(
        "XREADGROUP",
        "GROUP",
        group,
        consumer,
        "COUNT",
        count,
        "BLOCK",
        block,
        "STREAMS",
        *keys,
        *(streams[k] for k in keys),
        **_on_node(r, keys[0]),
    )
    return _streams(reply) if isinstance(r, FastRedis) else reply


async def xautoclaim(
    r: Any, key: str, group: str, consumer: str, min_idle_ms: int, count: int
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of `key` idle for `min_idle_ms` or more, taken over by `consumer` (from the
    start, up to `count`), on either client."""
    if isinstance(r, FastRedis):
        raw = await r.execute_command(
            "XAUTOCLAIM", key, group, consumer, min_idle_ms, "0-0", "COUNT", count
        )
        return _entries(raw[1])
    res = await r.xautoclaim(key, group, consumer, min_idle_ms, "0-0", count=count)
    return res[1] if len(res) > 1 else []


def _streams(raw: Any) -> Any:
    # a raw XREAD / XREADGROUP reply ([[stream, [[id, [field, value, ...]], ...]]] or None) in
    # redis-py's shape ([[stream, [(id, {field: value})]]])
    return [[stream, _entries(rows)] for stream, rows in raw] if raw else raw


def _entries(rows: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return [
        (eid, dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {})
        for eid, flat in rows or ()
    ]


def connect_fast(cfg: RedisConfig, url: str, shared: Any) -> Any:
    """A client for the hot calls: the lean pipelining one (`resp.FastRedis`) on a single
    server; with a cluster or Sentinel (which route and fail over), `shared`: the redis-py
    client the caller already has (one slot map, one set of pools)."""
    if not _lean(cfg):
        return shared
    return FastRedis(url, socket_timeout=cfg.socket_timeout_s)


def fast_reader(cfg: RedisConfig, url: str) -> Callable[[], Any] | None:
    """For blocking reads (one per partition): a factory of lean connections of their own on a
    single server, whose timeout outlasts the block; None with a cluster or Sentinel (their
    redis-py clients route and fail over)."""
    if not _lean(cfg):
        return None
    timeout = max(cfg.socket_timeout_s, BLOCK_MS / 1000 + 2.5)
    return lambda: FastRedis(url, socket_timeout=timeout)


def _lean(cfg: RedisConfig) -> bool:
    return not (cfg.cluster or cfg.sentinels)


@contextlib.asynccontextmanager
async def own_connection(make: Callable[[], Any] | None) -> AsyncIterator[Any]:
    """A connection of its own from `make` (a `fast_reader`), closed on the way out; None when
    there is no factory (the caller uses its shared client)."""
    own = make() if make is not None else None
    try:
        yield own
    finally:
        if own is not None:
            await own.aclose()
