"""Tasks as the rest of the system knows them.

`TaskSpec` is a task this process can run or validate (its function and payload type);
`TaskInfo` is what anyone may know of it. Workers publish the TaskInfo of each task they have
in the deployment's task catalog, so a producer that does not import the task's module still
applies its `max_attempts`, `timeout_s` and queue, and refuses names no worker has.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from service.core.keys import Keys


class TaskInfo(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    max_attempts: int | None = None
    timeout_s: float | None = None
    queue: str | None = None
    doc: str = ""
    schema: dict[str, Any] = msgspec.field(default_factory=dict)


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

    def info(self) -> TaskInfo:
        return TaskInfo(
            name=self.name,
            max_attempts=self.max_attempts,
            timeout_s=self.timeout_s,
            queue=self.queue,
            doc=(self.fn.__doc__ or "").strip().split("\n")[0],
            schema=self.schema(),
        )


def _schema_hook(t: Any) -> dict[str, Any]:
    if t is object:
        return {"description": "any JSON value"}
    raise NotImplementedError


# the tasks registered in this process (filled by `workers.task`); a Producer given no registry
# reads it at call time, so a script that defines its tasks and submits them needs no wiring
REGISTRY: dict[str, TaskSpec] = {}

_encode = msgspec.json.Encoder().encode
_decode_info = msgspec.json.Decoder(TaskInfo).decode


async def publish(r: Any, keys: Keys, specs: Mapping[str, TaskSpec]) -> None:
    """Record these tasks in the deployment's catalog (a worker does this at start)."""
    if specs:
        await r.hset(keys.tasks(), mapping={n: _encode(s.info()) for n, s in specs.items()})


class Catalog:
    """The deployment's task catalog, read through a short cache."""

    def __init__(self, r: Any, keys: Keys, *, ttl_s: float = 5.0) -> None:
        self._r = r
        self._keys = keys
        self._ttl = ttl_s
        self._at = -1e9
        self._tasks: dict[str, TaskInfo] = {}

    async def all(self) -> dict[str, TaskInfo]:
        if time.monotonic() - self._at > self._ttl:
            raw = await self._r.hgetall(self._keys.tasks())
            tasks = {}
            for name, value in raw.items():
                try:
                    tasks[name.decode()] = _decode_info(value)
                except (msgspec.DecodeError, UnicodeDecodeError):
                    continue  # written by something else: not ours to trust
            self._tasks = tasks
            self._at = time.monotonic()
        return self._tasks

    async def get(self, name: str) -> TaskInfo | None:
        info = (await self.all()).get(name)
        if info is None and time.monotonic() - self._at > 0.5:
            self._at = -1e9  # unknown: look once more (a worker may have just started)
            info = (await self.all()).get(name)
        return info
