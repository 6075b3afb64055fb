"""Running one attempt: decode the payload, call the task (with its timeout), report, finish."""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import structlog

from service.core import logs
from service.core.config import JobsConfig
from service.core.tasks import TaskSpec
from service.core.tracing import NOOP, Span, Tracing
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
    """Runs attempts for one worker: async tasks on the loop, plain `def` ones in a thread pool.

    Each attempt is a span (`run TASK`) in the trace stored with the job, and runs with `job_id`,
    `task`, `attempt` and `trace_id` bound for every log line it causes (also in the thread of a
    plain `def` task)."""

    def __init__(
        self,
        writer: Writer,
        jobs: JobsConfig,
        concurrency: int,
        *,
        on_done: Callable[[Running], None],
        tracing: Tracing = NOOP,
        on_attempt: Callable[[str, str], None] | None = None,
    ) -> None:
        self.writer = writer
        self.jobs = jobs
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="task")
        self._on_done = on_done
        self._tracing = tracing
        self._on_attempt = on_attempt
        self.done = 0

    def span(self, job: Running) -> Span:
        return self._tracing.start(
            f"run {job.task}",
            parent=job.traceparent or None,
            kind="consumer",
            attributes={
                "tidings.job.id": job.id,
                "tidings.job.attempt": job.attempt,
                "tidings.queue": job.queue,
                "tidings.task": job.task,
                "messaging.system": "tidings",
                "messaging.operation.type": "process",
                "messaging.destination.name": job.queue,
                "messaging.message.id": job.id,
            },
        )

    async def execute(
        self, job: Running, spec: TaskSpec, raw_payload: bytes, timeout: float | None
    ) -> None:
        span = self.span(job)
        # the job's own task (Worker._start): its log context ends with it
        logs.bind_task(job_id=job.id, task=job.task, attempt=job.attempt, trace_id=span.trace_id)
        with span.current():
            outcome, fragment = "fail", b""
            try:
                outcome, fragment = await self._attempt(job, spec, raw_payload, timeout, span)
            finally:
                span.set("tidings.outcome", outcome or "lost")
                if outcome in ("error", "fail") and not span.failed:
                    span.error(message=f"attempt ended: {outcome}")
                if self._on_attempt is not None:
                    self._on_attempt(job.task, outcome)
                try:
                    await self._finish(job, outcome, fragment)
                finally:
                    span.end()

    async def _attempt(
        self, job: Running, spec: TaskSpec, raw_payload: bytes, timeout: float | None, span: Span
    ) -> tuple[str, bytes]:
        """Run the attempt: its outcome ('' = lost: another worker owns the job now) and the
        result or error to write."""
        ctx: Context | None = None
        try:
            try:
                payload = spec.decode_payload(_decode(raw_payload))
            except (msgspec.ValidationError, msgspec.DecodeError) as e:
                span.error(message=f"InvalidPayload: {e}")
                return "fail", error_fragment("InvalidPayload", str(e))
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
                message = f"timeout: attempt exceeded {timeout:g}s"
                span.error(message=message)
                return "error", error_fragment("Timeout", message)
            try:
                return "succeeded", _encode(result)
            except (TypeError, ValueError, OverflowError) as e:
                span.error(message=f"ResultNotJSON: {e}")
                return "fail", error_fragment("ResultNotJSON", str(e))
        except asyncio.CancelledError:
            if ctx is not None:
                ctx._set_cancelled()
            reason = job.cancel_reason or "shutdown"
            if reason == "lost":
                return "", b""
            if reason == "cancel":
                return "cancelled", b""
            return "handback", b""
        except Exception as e:
            span.error(e)
            log.info("job.error", error=str(e)[:200])
            fragment = error_fragment(type(e).__name__, str(e) or repr(e), traceback.format_exc())
            return "error", fragment

    async def _call(self, spec: TaskSpec, ctx: Context, payload: Any) -> Any:
        if spec.is_async:
            return await spec.fn(ctx, payload)
        # in the thread, the attempt's log context and active span too
        run = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, run, spec.fn, ctx, payload
        )

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
