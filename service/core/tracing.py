"""Traces, when OpenTelemetry is installed (`pip install 'tidings[otel]'`) and switched on by the
standard variables; no-ops otherwise, so nothing here needs the package.

The W3C `traceparent` is what travels: given at submit (HTTP header or argument), stored with the
job, handed to the worker by the start script. With tracing on, the service's span for the submit
becomes the parent stored with the job, the worker's span for each attempt (`run TASK`) is its
child, and an SSE stream of the job joins the same trace. With tracing off, a given traceparent is
still stored and handed on as it came, and log lines still carry its `trace_id`.

Configuration (read once by each process's entry point, `from_env`):
`OTEL_TRACES_EXPORTER` = `console` (spans as JSON on stdout), `otlp` (protocol from
`OTEL_EXPORTER_OTLP_PROTOCOL`, default http/protobuf), any installed exporter's entry-point name,
or `none` / unset (off); `OTEL_SDK_DISABLED=true` turns it off; `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_EXPORTER_OTLP_*` work as usual.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from importlib.metadata import entry_points
from typing import Any

# version 00: trace id, parent span id, flags; all-zero ids are invalid
TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
Attrs = Mapping[str, str | int | float | bool]


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, span id) of a valid W3C traceparent, else None."""
    if not value:
        return None
    m = TRACEPARENT_RE.match(value.strip().lower())
    if m is None or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        return None
    return m.group(1), m.group(2)


def valid_traceparent(value: str | None) -> str | None:
    """The traceparent normalised, or None when it is not a valid one (W3C: ignore it)."""
    return value.strip().lower() if value and parse_traceparent(value) else None


class Span:
    """A span that records nothing: it carries the parent's context on (`traceparent`), so a
    job submitted with tracing off keeps the caller's trace."""

    def __init__(self, parent: str | None = None) -> None:
        self.traceparent = valid_traceparent(parent) or ""
        ids = parse_traceparent(self.traceparent)
        self.trace_id = ids[0] if ids else None
        self.failed = False

    @property
    def recording(self) -> bool:
        return False

    def set(self, key: str, value: str | int | float | bool) -> None:
        """Set an attribute."""

    def error(self, exc: BaseException | None = None, message: str = "") -> None:
        """Mark the span as failed (with the exception, when there is one)."""
        self.failed = True

    def end(self) -> None:
        """End the span (once)."""

    def current(self) -> AbstractContextManager[None]:
        """Make this span the active one (spans started inside become its children)."""
        return contextlib.nullcontext()


class _OtelSpan(Span):
    def __init__(self, span: Any) -> None:
        from opentelemetry import trace

        self._span = span
        self._trace = trace
        ctx = span.get_span_context()
        self.trace_id = f"{ctx.trace_id:032x}"
        self.traceparent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
        self.failed = False
        self._ended = False

    @property
    def recording(self) -> bool:
        return bool(self._span.is_recording())

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def error(self, exc: BaseException | None = None, message: str = "") -> None:
        from opentelemetry.trace import Status, StatusCode

        self.failed = True
        if exc is not None:
            self._span.record_exception(exc)
            message = message or f"{type(exc).__name__}: {exc}"
        self._span.set_status(Status(StatusCode.ERROR, message[:500] or None))

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._span.end()

    def current(self) -> AbstractContextManager[None]:
        return self._current()

    @contextlib.contextmanager
    def _current(self) -> Iterator[None]:
        with self._trace.use_span(
            self._span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            yield


class Tracing:
    """Starts spans on an OpenTelemetry tracer provider, or no-op spans without one."""

    def __init__(self, provider: Any = None) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("tidings") if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def start(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: str = "internal",
        attributes: Attrs | None = None,
    ) -> Span:
        """A span, child of the W3C `parent` when it is valid, else of the active span, else a
        new trace's root. `kind`: internal, server, client, producer or consumer."""
        if self._tracer is None:
            return Span(parent)
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        ctx = None
        tp = valid_traceparent(parent)
        if tp is not None:
            ctx = TraceContextTextMapPropagator().extract({"traceparent": tp})
        span = self._tracer.start_span(
            name,
            context=ctx,
            kind=getattr(trace.SpanKind, kind.upper()),
            attributes=dict(attributes or {}),
        )
        return _OtelSpan(span)

    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: str = "internal",
        attributes: Attrs | None = None,
    ) -> AbstractContextManager[Span]:
        """`start`, made active for the block, marked failed by an exception, and ended."""
        if self._tracer is None:
            return _Plain(Span(parent))  # tracing off: no generator per request
        return self._span(self.start(name, parent=parent, kind=kind, attributes=attributes))

    @contextlib.contextmanager
    def _span(self, s: Span) -> Iterator[Span]:
        try:
            with s.current():
                yield s
        except BaseException as e:
            _ended_by(s, e)
            raise
        finally:
            s.end()

    def shutdown(self) -> None:
        """Export what is pending (bounded by the exporters' own timeouts)."""
        if self.provider is not None:
            with contextlib.suppress(Exception):
                self.provider.shutdown()


class _Plain(AbstractContextManager[Span]):
    """The block of a no-op span: marked failed as `Tracing.span` would, nothing else."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> Span:
        return self.span

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            _ended_by(self.span, exc)


def _ended_by(span: Span, exc: BaseException) -> None:
    """A span's block ended by `exc`: an HTTP status (ours or aiohttp's) is an answer, recorded;
    only a 5xx, or anything else, is the server failing."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        span.set("http.response.status_code", status)
    if not (isinstance(status, int) and status < 500):
        span.error(exc)


NOOP = Tracing()


_api: Any = None  # opentelemetry.trace once imported; False when it is not installed


def current_traceparent() -> str | None:
    """The active OpenTelemetry span's context as a traceparent (a caller's own tracing, e.g.
    around `Producer.submit`), or None."""
    global _api
    if _api is None:
        try:
            from opentelemetry import trace

            _api = trace
        except ImportError:
            _api = False
    if _api is False:
        return None
    ctx = _api.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _exporter_name(name: str, environ: Mapping[str, str]) -> str:
    if name != "otlp":
        return name
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    return {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}.get(protocol, protocol)


def from_env(service: str, environ: Mapping[str, str] | None = None) -> Tracing:
    """The process's tracing, from the standard OTEL_* variables (see the module docstring).
    Also installs the provider as OpenTelemetry's global one, so spans a task opens with the
    plain API nest under the attempt's span. Problems are one line on stderr, never fatal."""
    environ = os.environ if environ is None else environ
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names or "none" in names or environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return NOOP
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        print(
            "tracing: OTEL_TRACES_EXPORTER is set but OpenTelemetry is not installed "
            "(pip install 'tidings[otel]'); tracing is off",
            file=sys.stderr,
        )
        return NOOP
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service}))
    provider = TracerProvider(resource=resource)
    added = 0
    for name in names:
        entry = _exporter_name(name, environ)
        found = list(entry_points(group="opentelemetry_traces_exporter", name=entry))
        if not found:
            print(
                f"tracing: OTEL_TRACES_EXPORTER={name}: no span exporter {entry!r} is installed",
                file=sys.stderr,
            )
            continue
        try:
            exporter = found[0].load()()
        except Exception as e:
            print(f"tracing: exporter {name!r} failed to start: {e}", file=sys.stderr)
            continue
        # console: each span as it ends (a person is reading); others: batched
        processor = SimpleSpanProcessor if name == "console" else BatchSpanProcessor
        provider.add_span_processor(processor(exporter))
        added += 1
    if not added:
        return NOOP
    trace.set_tracer_provider(provider)
    return Tracing(provider)
