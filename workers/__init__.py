"""Tidings workers: `@task` to register a function, `Context` to report progress.

from workers import task, Context

@task("demo.count", max_attempts=3, timeout_s=60)
async def count(ctx: Context, payload: CountArgs) -> CountResult: ...
"""

from service.core.tasks import TaskSpec
from workers.context import Context
from workers.registry import REGISTRY, task

__all__ = ["REGISTRY", "Context", "TaskSpec", "task"]
