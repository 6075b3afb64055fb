"""Traces from submit to the worker: one trace id from the caller's `traceparent` through the
service's `POST /api/jobs` span and the SSE stream's span to the worker's span for each attempt.

The first test runs the service app and a real `Worker` in this process, on one tracer provider
with the SDK's in-memory exporter (the context still travels through Redis: stored at submit,
handed back by the start script). The e2e test runs real processes with
`OTEL_TRACES_EXPORTER=console` and reads the spans they print.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from pytest_aiohttp import AiohttpClient

from service.core import config as config_mod
from service.core.errors import Invalid
from service.core.tracing import Tracing, parse_traceparent
from service.http.app import create_app
from service.producer import Producer, SyncProducer
from tests.conftest import make_config, task_registry
from tests.helpers import ROOT, Stack, eventually, read_sse
from workers.worker import Worker

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@contextlib.asynccontextmanager
async def running_worker(
    cfg: config_mod.Config, url: str, tracing: Tracing
) -> AsyncIterator[Worker]:
    """A real worker on this event loop, stopped (gracefully) at the end."""
    worker = Worker(cfg, url, task_registry(), concurrency=4, tracing=tracing)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_one_trace_from_post_to_the_workers_span(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str
) -> None:
    cfg = make_config(
        redis_url, prefix, TIDINGS_WORKERS_TASKS="tests.tasks", TIDINGS_JOBS_BACKOFF_BASE_S="0"
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    client = await aiohttp_client(create_app(cfg, redis_url, task_registry(), tracing=tracing))
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with running_worker(cfg, redis_url, tracing):
            # fails its first attempt, succeeds on the second: two attempt spans
            r = await client.post(
                "/api/jobs",
                json={"task": "t.fail", "payload": {"succeed_on": 2}},
                headers={"traceparent": CALLER},
            )
            assert r.status == 201, await r.text()
            job = await r.json()
            async with client.get(f"/api/jobs/{job['id']}/events") as resp:
                events = await read_sse(resp)
            assert events[-1].event == "succeeded"

            async def sse_span_ended() -> bool:
                names = [s.name for s in exporter.get_finished_spans()]
                return "SSE /api/jobs/{id}/events" in names

            await eventually(sse_span_ended, what="the SSE span ended")
    spans = list(exporter.get_finished_spans())
    post = one(spans, "POST /api/jobs")
    sse = one(spans, "SSE /api/jobs/{id}/events")
    runs = sorted(
        (s for s in spans if s.name == "run t.fail"),
        key=lambda s: int(str((s.attributes or {})["tidings.job.attempt"])),
    )
    # one trace: the caller's
    for s in [post, sse, *runs]:
        assert f"{s.context.trace_id:032x}" == CALLER_TRACE, s.name
    assert post.parent is not None and f"{post.parent.span_id:016x}" == CALLER_SPAN
    assert post.kind == SpanKind.SERVER
    assert (post.attributes or {})["tidings.job.id"] == job["id"]
    assert (post.attributes or {})["http.response.status_code"] == 201
    # each attempt is a child of the submit's span, with job id, attempt and queue
    assert [(s.attributes or {})["tidings.job.attempt"] for s in runs] == [1, 2]
    for s in runs:
        assert s.parent is not None and s.parent.span_id == post.context.span_id
        assert s.kind == SpanKind.CONSUMER
        attrs = s.attributes or {}
        assert attrs["tidings.job.id"] == job["id"]
        assert attrs["tidings.queue"] == "default"
    assert runs[0].status.status_code == StatusCode.ERROR
    assert [e.name for e in runs[0].events] == ["exception"]
    assert (runs[0].attributes or {})["tidings.outcome"] == "error"
    assert runs[1].status.status_code != StatusCode.ERROR
    assert (runs[1].attributes or {})["tidings.outcome"] == "succeeded"
    # the browser's stream joins the job's trace too
    assert sse.parent is not None and sse.parent.span_id == post.context.span_id
    assert (sse.attributes or {})["tidings.sse.end"] == "terminal"
    # the worker's log line about the failed attempt names the job and the trace
    errors = [e for e in logs if e["event"] == "job.error"]
    assert len(errors) == 1, logs
    assert errors[0]["job_id"] == job["id"] and errors[0]["trace_id"] == CALLER_TRACE
    assert errors[0]["attempt"] == 1


async def test_without_a_traceparent_the_submit_starts_the_trace(
    aiohttp_client: AiohttpClient, redis_url: str, prefix: str
) -> None:
    cfg = make_config(redis_url, prefix, TIDINGS_WORKERS_TASKS="tests.tasks")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    client = await aiohttp_client(create_app(cfg, redis_url, task_registry(), tracing=tracing))
    async with running_worker(cfg, redis_url, tracing):
        # an invalid traceparent is ignored, as W3C says: the submit is a new trace's root
        r = await client.post(
            "/api/jobs", json={"task": "t.noop", "payload": {}}, headers={"traceparent": "00-zz"}
        )
        assert r.status == 201
        job = await r.json()

        async def run_span() -> list[ReadableSpan]:
            return [s for s in exporter.get_finished_spans() if s.name == "run t.noop"]

        (run,) = await eventually(run_span, what="the attempt's span")
    post = one(list(exporter.get_finished_spans()), "POST /api/jobs")
    assert post.parent is None
    assert run.parent is not None and run.parent.span_id == post.context.span_id
    assert run.context.trace_id == post.context.trace_id
    assert (run.attributes or {})["tidings.job.id"] == job["id"]
    # a refused submit is a span too, not an error of the server's
    r = await client.post("/api/jobs", json={"task": "no.such", "payload": {}})
    assert r.status == 422
    refused = [s for s in exporter.get_finished_spans() if s.name == "POST /api/jobs"][-1]
    assert refused.status.status_code != StatusCode.ERROR
    assert (refused.attributes or {})["http.response.status_code"] == 422


async def test_a_python_producer_passes_its_callers_span_on(producer: Producer) -> None:
    """`Producer.submit` without a traceparent stores the caller's active span (the caller's own
    OpenTelemetry setup); a given one wins; a malformed one is refused."""
    tracer = TracerProvider().get_tracer("app")
    with tracer.start_as_current_span("app work") as span:
        job = await producer.submit("t.noop", {})
        jobs = await producer.submit_many([("t.noop", {})])
    ctx = span.get_span_context()
    want = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
    assert await producer.store.traceparent(job.id) == want
    assert await producer.store.traceparent(jobs[0].id) == want
    job = await producer.submit("t.noop", {}, traceparent=CALLER)
    assert await producer.store.traceparent(job.id) == CALLER
    assert await producer.store.traceparent((await producer.submit("t.noop", {})).id) is None
    with pytest.raises(Invalid):
        await producer.submit("t.noop", {}, traceparent="00-nope")


def test_the_sync_producer_passes_its_callers_span_on(cfg: config_mod.Config) -> None:
    """SyncProducer runs its loop in another thread: the caller's context is taken here."""
    tracer = TracerProvider().get_tracer("app")
    with SyncProducer.from_url(cfg.redis.url, config=cfg, registry=task_registry()) as p:
        with tracer.start_as_current_span("app work") as span:
            job = p.submit("t.noop", {})
            (other,) = p.submit_many([("t.noop", {})])
        ctx = span.get_span_context()
        want = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
        assert p._run(p._async.store.traceparent(job.id)) == want
        assert p._run(p._async.store.traceparent(other.id)) == want


def test_tracing_is_a_no_op_without_opentelemetry() -> None:
    """Where the package is absent, `OTEL_TRACES_EXPORTER` gets one line on stderr, and a given
    traceparent still travels as it came."""
    code = f"""
import sys
sys.modules["opentelemetry"] = None  # as if not installed: every import of it fails
from service.core import tracing
t = tracing.from_env("x", {{"OTEL_TRACES_EXPORTER": "console"}})
s = t.start("POST /api/jobs", parent="{CALLER}")
with s.current():
    s.set("a", 1)
    s.error(ValueError("x"))
s.end()
print(t.enabled, s.traceparent, s.trace_id, tracing.current_traceparent())
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", CALLER, CALLER_TRACE, "None"]
    assert "OpenTelemetry is not installed" in out.stderr


def test_traceparent_parsing() -> None:
    assert parse_traceparent(CALLER) == (CALLER_TRACE, CALLER_SPAN)
    assert parse_traceparent(CALLER.upper()) == (CALLER_TRACE, CALLER_SPAN)
    for bad in (
        "",
        "00-zz",
        f"01-{CALLER_TRACE}-{CALLER_SPAN}-01",
        f"00-{'0' * 32}-{CALLER_SPAN}-01",
    ):
        assert parse_traceparent(bad) is None, bad


# -- real processes, console exporter ------------------------------------------------------------


def printed_spans(text: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter printed (indented JSON objects) among the log lines."""
    spans = []
    decoder = json.JSONDecoder()
    at = text.find('{\n    "name"')
    while at >= 0:
        obj, end = decoder.raw_decode(text, at)
        spans.append(obj)
        at = text.find('{\n    "name"', end)
    return spans


@pytest.mark.e2e
async def test_console_exporter_prints_one_trace_across_processes(
    redis_url: str, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    otel = {"OTEL_TRACES_EXPORTER": "console", "TIDINGS_JOBS_BACKOFF_BASE_S": "0"}
    st = stack_factory(redis_url, **otel)
    await st.start_service()
    await st.start_workers(1)
    async with aiohttp.ClientSession() as s:
        async with s.post(
            st.http + "/api/jobs",
            json={"task": "t.fail", "payload": {"succeed_on": 2}},
            headers={"traceparent": CALLER},
        ) as r:
            assert r.status == 201
            job = await r.json()
        async with s.get(job["events_url"]) as resp:
            assert (await read_sse(resp))[-1].event == "succeeded"

    def spans_of(name: str) -> list[dict[str, Any]]:
        return [
            x
            for x in printed_spans(st.log(name))
            if x["context"]["trace_id"] == "0x" + CALLER_TRACE
        ]

    async def printed() -> bool:
        # a span is printed when it ends: the second attempt's may end after the stream saw
        # the job succeed (the finish is written first)
        spans = spans_of("service") + spans_of("workers-0")
        names = {x["name"] for x in spans}
        runs = [x for x in spans if x["name"] == "run t.fail"]
        return {"POST /api/jobs", "SSE /api/jobs/{id}/events"} <= names and len(runs) >= 2

    await eventually(printed, timeout=20, what="spans printed by the service and the worker")
    (post,) = [x for x in spans_of("service") if x["name"] == "POST /api/jobs"]
    runs = [x for x in spans_of("workers-0") if x["name"] == "run t.fail"]
    assert post["parent_id"] == "0x" + CALLER_SPAN
    assert post["resource"]["attributes"]["service.name"] == "tidings-service"
    assert [r["attributes"]["tidings.job.attempt"] for r in runs] == [1, 2]
    for run in runs:
        assert run["parent_id"] == post["context"]["span_id"]
        assert run["attributes"]["tidings.job.id"] == job["id"]
        assert run["resource"]["attributes"]["service.name"] == "tidings-worker"
    # the worker's JSON log line for the failed attempt carries the job and trace ids
    lines = [json.loads(x) for x in st.log("workers-0").splitlines() if x.startswith('{"')]
    (error,) = [x for x in lines if x.get("event") == "job.error"]
    assert error["job_id"] == job["id"] and error["trace_id"] == CALLER_TRACE
