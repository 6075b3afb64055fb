"""How jobs and events look on a terminal: one line per event, the live progress bar of a job
(current/total, rate and ETA from the events' own times, latest message, state), and tables."""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime
from typing import Any, Final

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Column, Table
from rich.text import Text

from service.core.wire import (
    CancelledEvent,
    FailedEvent,
    GoneEvent,
    Job,
    LogEvent,
    ProgressEvent,
    QueuedEvent,
    QueueStats,
    RetryingEvent,
    ScheduledEvent,
    SnapshotEvent,
    StartedEvent,
    StatsEvent,
    SucceededEvent,
    WatchEvent,
)

_encode = msgspec.json.Encoder().encode

STATE_STYLE: Final[dict[str, str]] = {
    "queued": "cyan",
    "scheduled": "blue",
    "running": "bold",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "gone": "magenta",
}


def _num(v: float | None) -> str:
    if v is None:
        return "?"
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def error_text(error: Any) -> str:
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        if kind or message:
            return f"{kind}: {message}" if kind and message else str(kind or message)
    return _encode(error).decode()


def _clock(ts: str | None) -> str:
    # "2026-11-28T15:20:00.123Z" -> "15:20:00.123"
    return ts[11:23] if ts and len(ts) >= 23 else (ts or "")


def describe(ev: WatchEvent) -> str:
    """What an event says, in a few words."""
    d = ev.data
    match d:
        case QueuedEvent():
            return "queued" + (f": {d.message}" if d.message else "")
        case ScheduledEvent():
            return f"scheduled, due {d.due}"
        case StartedEvent():
            return f"started, attempt {d.attempt}" + (f" on {d.worker}" if d.worker else "")
        case ProgressEvent():
            pct = ""
            if d.total:
                pct = f" ({100 * d.current / d.total:.0f}%)"
            text = f"{_num(d.current)}/{_num(d.total)}{pct}"
            return text + (f" {d.message}" if d.message else "")
        case LogEvent():
            return d.message
        case RetryingEvent():
            when = f", next attempt at {d.due}" if d.due else ", restarted at once"
            return f"attempt {d.attempt} failed: {error_text(d.error)}{when}"
        case SucceededEvent():
            return "succeeded, result " + _encode(d.result).decode()
        case FailedEvent():
            return "failed: " + error_text(d.error)
        case CancelledEvent():
            return "cancelled"
        case SnapshotEvent():
            p = d.progress
            text = f"now {d.state}"
            if p is not None and p.current is not None:
                text += f", {_num(p.current)}/{_num(p.total)}"
                text += f" {p.message}" if p.message else ""
            return text
        case GoneEvent():
            return f"gone: {d.reason}"
    return ev.type


def event_line(ev: WatchEvent) -> str:
    ts = getattr(ev.data, "ts", None)
    state = getattr(ev.data, "state", None) or ""
    return f"{_clock(ts):<12} {ev.type:<9} {state:<9} {describe(ev)}".rstrip()


def _ts_seconds(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Rate:
    """Progress per second from the events' own times (not from when they arrive, so a replay
    after a reconnect does not read as a burst), over the last 30 s of the job's time."""

    WINDOW_S = 30.0

    def __init__(self) -> None:
        self.points: deque[tuple[float, float]] = deque()

    def add(self, at: float, current: float) -> None:
        if self.points and current < self.points[-1][1]:
            self.points.clear()  # a new attempt started over
        self.points.append((at, current))
        while self.points and at - self.points[0][0] > self.WINDOW_S and len(self.points) > 2:
            self.points.popleft()

    def per_second(self) -> float | None:
        if len(self.points) < 2:
            return None
        (t0, c0), (t1, c1) = self.points[0], self.points[-1]
        if t1 <= t0 or c1 <= c0:
            return None
        return (c1 - c0) / (t1 - t0)


class CountColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        cur, total = task.fields.get("n_current"), task.fields.get("n_total")
        if cur is None:
            return Text("")
        return Text(f"{_num(cur)}/{_num(total)}" if total is not None else _num(cur))


class PercentColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("    ")
        return Text(f"{task.percentage:>3.0f}%", style="progress.percentage")


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text(f"{rate:.3g}/s" if rate else "", style="progress.data.speed")


class EtaColumn(ProgressColumn):
    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        eta_at = task.fields.get("eta_at")
        if eta_at is None or task.finished:
            return Text("")
        left = max(0, int(eta_at - time.monotonic()))
        return Text(f"ETA {left // 60}:{left % 60:02d}", style="progress.remaining")


class StateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        state = str(task.fields.get("state") or "")
        return Text(state, style=STATE_STYLE.get(state, ""))


class Bar:
    """The live bar of one job on a terminal."""

    def __init__(self, console: Console, job_id: str) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=None, table_column=Column(ratio=2, min_width=10)),
            # fixed widths: the bar does not jump as figures come and go
            PercentColumn(table_column=Column(width=4, justify="right")),
            CountColumn(table_column=Column(min_width=7, justify="right")),
            RateColumn(table_column=Column(width=8, justify="right")),
            EtaColumn(table_column=Column(width=8)),
            StateColumn(table_column=Column(width=9)),
            TextColumn(
                "{task.fields[message]}",
                table_column=Column(ratio=3, no_wrap=True, overflow="ellipsis"),
            ),
            console=console,
            expand=True,
            refresh_per_second=10,
        )
        self.rate = Rate()
        self.task: TaskID = self.progress.add_task(
            escape(job_id[:10]),
            total=None,
            state="…",
            message="connecting",
            n_current=None,
            n_total=None,
            rate=None,
            eta_at=None,
        )

    def __enter__(self) -> Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def note(self, text: str) -> None:
        self.progress.update(self.task, message=escape(text))

    def event(self, ev: WatchEvent) -> None:
        d = ev.data
        if isinstance(d, StatsEvent):
            return  # the firehose's figures: never on a job's stream
        fields: dict[str, Any] = {}
        state = "gone" if isinstance(d, GoneEvent) else d.state
        if state:
            fields["state"] = state
        current: float | None = None
        total: float | None = None
        message: str | None = None  # None: the message shown stays
        if isinstance(d, ProgressEvent):
            current, total, message = d.current, d.total, d.message or ""
            at = _ts_seconds(d.ts)
            if at is not None:
                self.rate.add(at, float(d.current))
        elif isinstance(d, SnapshotEvent) and d.progress is not None:
            current, total = d.progress.current, d.progress.total
            message = d.progress.message or ""
        elif isinstance(d, LogEvent | QueuedEvent) and d.message:
            message = d.message
        elif isinstance(d, RetryingEvent | FailedEvent | GoneEvent):
            message = describe(ev)
        if current is not None:
            fields.update(n_current=current, n_total=total)
            self.progress.update(self.task, total=total, completed=current)
        task = self.progress.tasks[0]
        if ev.type == "succeeded" and task.total is None:
            self.progress.update(self.task, total=1, completed=1)  # done, size unknown: full
        rate = self.rate.per_second()
        fields["rate"] = rate
        cur, tot = task.fields.get("n_current"), task.fields.get("n_total")
        fields["eta_at"] = None
        if rate and cur is not None and tot is not None and state == "running":
            fields["eta_at"] = time.monotonic() + max(0.0, tot - cur) / rate
        if message is not None:
            fields["message"] = escape(message)
        elif task.fields.get("message") == "connecting" or "reconnecting" in str(
            task.fields.get("message")
        ):
            fields["message"] = ""
        self.progress.update(self.task, **fields)


def summary(ev: WatchEvent) -> str:
    """The line under a finished bar: the result, the error, or why the job is gone."""
    d = ev.data
    match d:
        case SucceededEvent():
            return "result " + _encode(d.result).decode()
        case FailedEvent():
            return error_text(d.error)
        case GoneEvent():
            return d.reason
        case SnapshotEvent():
            if d.error is not None and d.state == "failed":
                return error_text(d.error)
            return "result " + _encode(d.result).decode() if d.state == "succeeded" else ""
    return ""


def _progress_text(job: Job) -> str:
    p = job.progress
    if p.current is None:
        return ""
    text = f"{_num(p.current)}/{_num(p.total)}" if p.total is not None else _num(p.current)
    return text + (f" {p.message}" if p.message else "")


def print_job(console: Console, job: Job) -> None:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="dim")
    t.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("task", job.task),
        ("queue", job.queue),
        ("state", job.state),
        ("attempt", f"{job.attempt}/{job.max_attempts}"),
        ("progress", _progress_text(job)),
        ("created", job.created_at or ""),
        ("started", job.started_at or ""),
        ("finished", job.finished_at or ""),
        ("payload", _encode(job.payload).decode()),
    ]
    if job.result is not None:
        rows.append(("result", _encode(job.result).decode()))
    if job.error is not None:
        rows.append(("error", error_text(job.error)))
    for k, v in rows:
        style = STATE_STYLE.get(v, "") if k == "state" else ""
        t.add_row(k, Text(v, style=style))
    console.print(t)


def jobs_table(jobs: list[Job], *, dead: bool = False) -> Table:
    t = Table(box=None, header_style="bold", pad_edge=False)
    t.add_column("id", no_wrap=True)
    t.add_column("task")
    t.add_column("queue")
    t.add_column("state")
    t.add_column("attempt", justify="right")
    if dead:
        t.add_column("finished")
        t.add_column("error", overflow="fold")
    else:
        t.add_column("progress")
        t.add_column("created")
    for j in jobs:
        last = (
            [j.finished_at or "", error_text(j.error) if j.error is not None else ""]
            if dead
            else [_progress_text(j), j.created_at or ""]
        )
        t.add_row(
            j.id,
            j.task,
            j.queue,
            Text(j.state, style=STATE_STYLE.get(j.state, "")),
            f"{j.attempt}/{j.max_attempts}",
            *last,
        )
    return t


# -- commands --------------------------------------------------------------------------------


def queues_table(queues: list[QueueStats]) -> Table:
    t = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("queue", "queued", "running", "scheduled", "dead", "workers"):
        t.add_column(name, justify="left" if name == "queue" else "right")
    t.add_column("paused")
    for q in queues:
        t.add_row(
            q.name,
            *(str(v) for v in (q.queued, q.running, q.scheduled, q.dead, q.workers)),
            "paused" if q.paused else "",
        )
    return t
