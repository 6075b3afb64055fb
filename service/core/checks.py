"""Start-up checks of the Redis server: loud warnings where it could lose or evict jobs."""

from __future__ import annotations

from typing import Any

import structlog

log = structlog.get_logger("tidings.redis")


async def warn_about_server(r: Any) -> list[str]:
    """Warn (and return the warnings) if Redis may evict keys or keeps no persistence."""
    warnings: list[str] = []
    try:
        policy = await _get(r, "maxmemory-policy")
        aof = await _get(r, "appendonly")
        save = await _get(r, "save")
    except Exception as e:  # CONFIG may be disabled (managed Redis): say so once
        log.warning("redis.config_unreadable", error=str(e))
        return warnings
    if policy != "noeviction":
        warnings.append(
            f"maxmemory-policy is {policy!r}: Redis may EVICT queued jobs; set noeviction"
        )
    if aof != "yes" and not save:
        warnings.append("persistence is off (no AOF, no RDB): a Redis restart loses every job")
    for w in warnings:
        log.warning("redis.unsafe", problem=w)
    return warnings


async def _get(r: Any, name: str) -> str:
    # redis-py decodes CONFIG GET replies itself, whatever decode_responses says
    for k, v in (await r.config_get(name)).items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        if key == name:
            return v.decode() if isinstance(v, bytes) else str(v)
    return ""
