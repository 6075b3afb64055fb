"""Running one attempt: decode the payload, call the task (with its timeout), report, finish."""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import structlog

from service.core.config import JobsConfig
from service.core.tasks import TaskSpec
from workers.context import Context
from workers.writer import Running, Writer

log = structlog.get_logger("tidings.worker")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
MAX_ERROR_CHARS = 4000


def error_fragment(kind: str, message: str, tb: str | None = None) -> bytes:
    body: dict[str, str] = {"type": kind, "message": message[:MAX_ERROR_CHARS]}
    if tb:
        body["traceback"] = tb[-MAX_ERROR_CHARS:]
    return _encode(body)


def backoff_ms(cfg: JobsConfig, attempt: int) -> int:
    """Retry backoff: base * 2^(attempt-1), capped, with jitter (half to full)."""
    delay = min(cfg.backoff_cap_s, cfg.backoff_base_s * 2 ** (attempt - 1))
    return int(delay * random.uniform(0.5, 1.0) * 1000)


class Executor:
    """Runs attempts for one worker: async tasks on the loop, plain `def` ones in a thread pool."""

    def __init__(
        self,
        writer: Writer,
        jobs: JobsConfig,
        concurrency: int,
        *,
        on_done: Callable[[Running], None],
        span: Callable[[Running], Any] | None = None,
    ) -> None:
        self.writer = writer
        self.jobs = jobs
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="task")
        self._on_done = on_done
        self._span = span
        self.done = 0

    async def execute(
        self, job: Running, spec: TaskSpec, raw_payload: bytes, timeout: float | None
    ) -> None:
        outcome, fragment = "fail", b""
        ctx: Context | None = None
        bound = log.bind(job_id=job.id, task=job.task, attempt=job.attempt)
        span = self._span(job) if self._span is not None else None
        try:
            try:
                payload = spec.decode_payload(_decode(raw_payload))
            except (msgspec.ValidationError, msgspec.DecodeError) as e:
                fragment = error_fragment("InvalidPayload", str(e))
                return
            ctx = self.context(job, spec)
            timer = asyncio.timeout(timeout) if timeout else None
            try:
                if timer is None:
                    result = await self._call(spec, ctx, payload)
                else:
                    async with timer:
                        result = await self._call(spec, ctx, payload)
            except TimeoutError:
                if timer is None or not timer.expired():
                    raise
                ctx._set_cancelled()
                outcome = "error"
                fragment = error_fragment("Timeout", f"timeout: attempt exceeded {timeout:g}s")
                return
            try:
                outcome, fragment = "succeeded", _encode(result)
            except (TypeError, ValueError, OverflowError) as e:
                outcome, fragment = "fail", error_fragment("ResultNotJSON", str(e))
        except asyncio.CancelledError:
            if ctx is not None:
                ctx._set_cancelled()
            reason = job.cancel_reason or "shutdown"
            if reason == "lost":
                outcome = ""
            elif reason == "cancel":
                outcome, fragment = "cancelled", b""
            else:
                outcome, fragment = "handback", b""
        except Exception as e:
            outcome = "error"
            fragment = error_fragment(type(e).__name__, str(e) or repr(e), traceback.format_exc())
            bound.info("job.error", error=str(e)[:200])
        finally:
            if span is not None:
                span.end(outcome)
            await self._finish(job, outcome, fragment)

    async def _call(self, spec: TaskSpec, ctx: Context, payload: Any) -> Any:
        if spec.is_async:
            return await spec.fn(ctx, payload)
        return await asyncio.get_running_loop().run_in_executor(self.pool, spec.fn, ctx, payload)

    async def _finish(self, job: Running, outcome: str, fragment: bytes) -> None:
        try:
            if outcome and not job.lost:
                delay = backoff_ms(self.jobs, job.attempt) if outcome == "error" else 0
                # shielded: a shutdown must not lose the finish of a job that already ran
                await asyncio.shield(self.writer.finish(job, outcome, fragment, delay))
                self.done += 1
        finally:
            self._on_done(job)

    def context(self, job: Running, spec: TaskSpec) -> Context:
        loop = asyncio.get_running_loop()
        writer = self.writer

        def from_thread(j: Running) -> None:
            j.progress_queued = False
            writer.progress(j)

        def report(cur: float, tot: float | None, msg: str | None) -> bool:
            job.pending_progress = (cur, tot, msg)
            if not spec.is_async:
                if not job.progress_queued:
                    job.progress_queued = True
                    loop.call_soon_threadsafe(from_thread, job)
                return False
            writer.progress(job)
            return time.monotonic() >= job.next_progress_at

        def log_line(message: str) -> None:
            if spec.is_async:
                writer.log(job, str(message))
            else:
                loop.call_soon_threadsafe(writer.log, job, str(message))

        ctx = Context(
            job_id=job.id,
            task=job.task,
            queue=job.queue,
            attempt=job.attempt,
            progress=report,
            log=log_line,
        )
        job.on_cancel.append(ctx._set_cancelled)
        return ctx
