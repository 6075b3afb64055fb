"""Start-up checks of the Redis server: loud warnings where it could lose or evict jobs."""

from __future__ import annotations

from typing import Any

import structlog

log = structlog.get_logger("tidings.redis")


async def warn_about_server(r: Any) -> list[str]:
    """Warn (and return the warnings) if Redis may evict keys or keeps no persistence."""
    warnings: list[str] = []
    try:
        policy = (await r.config_get("maxmemory-policy")).get(b"maxmemory-policy", b"")
        aof = (await r.config_get("appendonly")).get(b"appendonly", b"")
        save = (await r.config_get("save")).get(b"save", b"")
    except Exception as e:  # CONFIG may be disabled (managed Redis): say so once
        log.warning("redis.config_unreadable", error=str(e))
        return warnings
    if policy != b"noeviction":
        warnings.append(
            f"maxmemory-policy is {policy.decode()!r}: Redis may EVICT queued jobs; set noeviction"
        )
    if aof != b"yes" and not save:
        warnings.append("persistence is off (no AOF, no RDB): a Redis restart loses every job")
    for w in warnings:
        log.warning("redis.unsafe", problem=w)
    return warnings
