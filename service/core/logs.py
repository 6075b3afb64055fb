"""structlog, set up once per process: JSON lines off a TTY, readable console output on one."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import structlog

from service.core.config import LogConfig

_TOKEN = re.compile(r"(token=)[^&\s\"']+")


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Never let a watch token reach a log line."""
    for k, v in event.items():
        if isinstance(v, str) and "token=" in v:
            event[k] = _TOKEN.sub(r"\1[redacted]", v)
    return event


def bound(**ids: Any) -> AbstractContextManager[None]:
    """Bind ids (`job_id`, `trace_id`, ...) to every log line of the block, leaving out those
    that are None."""
    return structlog.contextvars.bound_contextvars(
        **{k: v for k, v in ids.items() if v is not None}
    )


def bind_task(**ids: Any) -> None:
    """Bind ids to every log line for the rest of the current asyncio task (leaving out those
    that are None). Only in a task of its own (a job's): the binding ends with the task's
    context, so nothing is reset, which makes it several times cheaper than `bound`."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in ids.items() if v is not None})


def setup(cfg: LogConfig, *, process: str) -> None:
    level = getattr(logging, cfg.level.upper())
    json = cfg.format == "json" or (cfg.format == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
    logging.basicConfig(
        level=max(level, logging.WARNING),
        stream=sys.stderr,
        format="%(name)s %(levelname)s %(message)s",
    )
