"""What a task sees: its job, progress and log reporting, and cancellation."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any


class Reported:
    """The value of `ctx.progress(...)` and `ctx.log(...)`.

    Awaiting it yields to the event loop only when a write is due, so a tight loop of
    `await ctx.progress(...)` costs a few hundred nanoseconds per call and never blocks on
    Redis. Sync tasks call the same methods without `await`.
    """

    __slots__ = ("_yield",)

    def __init__(self, yield_: bool) -> None:
        self._yield = yield_

    def __await__(self) -> Generator[Any, None, None]:
        if self._yield:
            yield  # a bare yield inside a Task lets the loop run once (like asyncio.sleep(0))


_NO_YIELD = Reported(False)
_YIELD = Reported(True)


class Context:
    """Handed to every task call as its first argument."""

    __slots__ = (
        "_cancel",
        "_log",
        "_progress",
        "attempt",
        "job_id",
        "queue",
        "task",
    )

    def __init__(
        self,
        *,
        job_id: str,
        task: str,
        queue: str,
        attempt: int,
        progress: Callable[[float, float | None, str | None], bool],
        log: Callable[[str], None],
    ) -> None:
        self.job_id = job_id
        self.task = task
        self.queue = queue
        self.attempt = attempt
        self._progress = progress
        self._log = log
        self._cancel = False

    def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> Reported:
        """Report progress. Writes are coalesced per job (the newest value always wins and is
        never dropped); `await` it in async tasks, call it plainly in sync ones."""
        return _YIELD if self._progress(current, total, message) else _NO_YIELD

    def log(self, message: str) -> Reported:
        """Append a `log` event to the job's stream."""
        self._log(message)
        return _YIELD

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled, timed out or lost: sync tasks should return soon."""
        return self._cancel

    def _set_cancelled(self) -> None:
        self._cancel = True  # a plain flag: threads read it under the GIL
