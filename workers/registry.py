"""The task registry: `@task(...)` records a function with its payload type and limits."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

import msgspec

from service.contract import TASK_RE

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class TaskSpec:
    name: str
    fn: Callable[..., Any]
    payload_type: Any
    is_async: bool
    max_attempts: int | None
    timeout_s: float | None
    queue: str | None

    def decode_payload(self, raw: Any) -> Any:
        """Convert decoded JSON into the declared payload type (raises msgspec.ValidationError)."""
        return msgspec.convert(raw, self.payload_type)

    def schema(self) -> dict[str, Any]:
        """JSON Schema of the payload; {} when the type has none (the form falls back to JSON)."""
        try:
            return msgspec.json.schema(self.payload_type, schema_hook=_schema_hook)
        except (TypeError, ValueError):
            return {}


def _schema_hook(t: Any) -> dict[str, Any]:
    if t is object:
        return {"description": "any JSON value"}
    raise NotImplementedError


REGISTRY: dict[str, TaskSpec] = {}


def task(
    name: str,
    *,
    max_attempts: int | None = None,
    timeout_s: float | None = None,
    queue: str | None = None,
) -> Callable[[F], F]:
    """Register `fn(ctx, payload)` as the task `name`. The payload's annotation (a msgspec Struct,
    dict, list, ...) decides how submitted payloads are validated and decoded."""
    if not TASK_RE.match(name):
        raise ValueError(f"invalid task name {name!r}")

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


def load_modules(modules: list[str]) -> None:
    """Import task modules so their @task decorators run."""
    import importlib

    for m in modules:
        importlib.import_module(m)
