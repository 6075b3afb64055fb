"""The task registry: `@task(...)` records a function with its payload type and limits."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, get_type_hints

from service.core.tasks import REGISTRY, TaskSpec
from service.core.wire import QUEUE_RE, TASK_RE

F = TypeVar("F", bound=Callable[..., Any])
__all__ = ["REGISTRY", "TaskSpec", "load_modules", "task"]


def task(
    name: str,
    *,
    max_attempts: int | None = None,
    timeout_s: float | None = None,
    queue: str | None = None,
) -> Callable[[F], F]:
    """Register `fn(ctx, payload)` as the task `name`. The payload's annotation (a msgspec Struct,
    dict, list, ...) decides how submitted payloads are validated and decoded. `queue` is where
    its jobs go when a submit names none (else "default")."""
    if not TASK_RE.match(name):
        raise ValueError(f"invalid task name {name!r}")
    if queue is not None and not QUEUE_RE.match(queue):
        raise ValueError(f"invalid queue name {queue!r}")

    def register(fn: F) -> F:
        params = list(inspect.signature(fn).parameters.values())
        if len(params) != 2:
            raise TypeError(f"task {name}: expected fn(ctx, payload)")
        hints = get_type_hints(fn)
        payload_type = hints.get(params[1].name, Any)
        REGISTRY[name] = TaskSpec(
            name=name,
            fn=fn,
            payload_type=payload_type,
            is_async=asyncio.iscoroutinefunction(fn),
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            queue=queue,
        )
        return fn

    return register


def load_modules(modules: list[str]) -> dict[str, TaskSpec]:
    """Import task modules so their @task decorators run; the tasks they define."""
    before = set(REGISTRY)
    for m in modules:
        importlib.import_module(m)
    names = set(REGISTRY) - before
    return {n: REGISTRY[n] for n in names} | {
        n: s for n, s in REGISTRY.items() if s.fn.__module__ in modules
    }
