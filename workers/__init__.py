"""Tidings workers: `@task` to register a function, `Context` to report progress.

from workers import task, Context

@task("demo.count", max_attempts=3, timeout_s=60)
async def count(ctx: Context, payload: CountArgs) -> CountResult: ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.core.tasks import TaskSpec
    from workers.context import Context
    from workers.registry import REGISTRY, task

__all__ = ["REGISTRY", "Context", "TaskSpec", "task"]

# Imported on first use (PEP 562): `python -m workers` runs the supervisor, which starts its
# worker processes without loading what only they need (redis-py alone takes ~0.1 s).
_HOME = {
    "REGISTRY": "workers.registry",
    "task": "workers.registry",
    "Context": "workers.context",
    "TaskSpec": "service.core.tasks",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
