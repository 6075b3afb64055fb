"""Start-up checks of the Redis server(s): loud warnings where one could lose or evict jobs.
On a cluster every primary is asked."""

from __future__ import annotations

from typing import Any

import structlog

from service.core.connect import is_cluster

log = structlog.get_logger("tidings.redis")


async def warn_about_server(r: Any) -> list[str]:
    """Warn (and return the warnings) if Redis may evict keys or keeps no persistence."""
    warnings: list[str] = []
    targets: list[Any] = list(r.get_primaries()) if is_cluster(r) else [None]
    for node in targets:
        where = "" if node is None else f"{node.host}:{node.port}: "
        kw = {} if node is None else {"target_nodes": node}
        try:
            policy = await _get(r, "maxmemory-policy", kw)
            aof = await _get(r, "appendonly", kw)
            save = await _get(r, "save", kw)
        except Exception as e:  # CONFIG may be disabled (managed Redis): say so once
            log.warning("redis.config_unreadable", node=where.rstrip(": "), error=str(e))
            continue
        if policy != "noeviction":
            warnings.append(
                f"{where}maxmemory-policy is {policy!r}: Redis may EVICT queued jobs; "
                "set noeviction"
            )
        if aof != "yes" and not save:
            warnings.append(
                f"{where}persistence is off (no AOF, no RDB): a Redis restart loses every job"
            )
    for w in warnings:
        log.warning("redis.unsafe", problem=w)
    return warnings


async def _get(r: Any, name: str, kw: dict[str, Any]) -> str:
    # redis-py decodes CONFIG GET replies itself, whatever decode_responses says; a cluster
    # client asked one node answers that node's dict
    reply = await r.config_get(name, **kw)
    for k, v in reply.items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        if key == name:
            return v.decode() if isinstance(v, bytes) else str(v)
    return ""
