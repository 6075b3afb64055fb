"""`tidings`: submit, follow and inspect jobs from a terminal, over the service's HTTP API.

On a terminal `watch` (and `submit --watch`) draws a live progress bar that rides out a
restart of the service; elsewhere it prints one line per event, or with `--json` one JSON
object per event (the SSE `data`, as `service.core.wire.decode_public` reads it).

Exit status: 0 done (for watch: the job succeeded), 1 the job failed, 2 the job was cancelled,
3 the job no longer exists, 4 the service refused the request or could not be reached,
5 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Final, NoReturn

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Column, Table
from rich.text import Text

from service.client import DEFAULT_URL, Client, JobGone, Unreachable
from service.core.errors import TidingsError
from service.core.wire import (
    CancelledEvent,
    FailedEvent,
    GoneEvent,
    Job,
    LogEvent,
    ProgressEvent,
    QueuedEvent,
    RetryingEvent,
    ScheduledEvent,
    SnapshotEvent,
    StartedEvent,
    SucceededEvent,
    WatchEvent,
)

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED, EXIT_GONE, EXIT_ERROR, EXIT_USAGE = 0, 1, 2, 3, 4, 5
EXIT_BY_STATE: Final[dict[str, int]] = {
    "succeeded": EXIT_OK,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "gone": EXIT_GONE,
}
STATE_STYLE: Final[dict[str, str]] = {
    "queued": "cyan",
    "scheduled": "blue",
    "running": "bold",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "gone": "magenta",
}
EPILOG = """\
environment:
  TIDINGS_URL       the service (default http://127.0.0.1:8080)
  TIDINGS_API_KEY   the API key, when the service has auth.api_keys

exit status:
  0 done (watch: the job succeeded)   1 the job failed     2 the job was cancelled
  3 the job no longer exists          4 the service refused or could not be reached
  5 bad usage                         130 interrupted

examples:
  tidings submit demo.count --payload '{"n": 20}' --watch
  JOB=$(tidings submit demo.count --payload '{"n": 5}'); tidings watch "$JOB" --json
  tidings jobs --state failed --limit 10
  tidings serve            # the service itself (python -m service)
  tidings worker --processes 4 --tasks myapp.tasks   # workers (python -m workers)
"""
_encode = msgspec.json.Encoder().encode


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser, *, top: bool) -> None:
    """--url, --api-key and --json, accepted before or after the subcommand."""
    d: Any = None if top else argparse.SUPPRESS
    p.add_argument(
        "--url",
        default=d,
        metavar="URL",
        help=f"the service's base URL (default: $TIDINGS_URL or {DEFAULT_URL})",
    )
    p.add_argument(
        "--api-key",
        default=d,
        metavar="KEY",
        help="API key sent as a Bearer token (default: $TIDINGS_API_KEY)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="machine-readable output: JSON, one object per line",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tidings",
        description="Submit, follow and inspect Tidings jobs over the service's HTTP API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def cmd(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=description or help)
        _common(sp, top=False)
        return sp

    s = cmd(
        "submit",
        "submit a job; print its id (with --watch: follow it to the end)",
        "Submit a job. Prints the job's id, or the job as JSON with --json. With --watch, "
        "follows it like `tidings watch` and exits with the job's outcome.",
    )
    s.add_argument("task", metavar="TASK", help="the task's name, e.g. demo.count")
    s.add_argument(
        "--payload", default="null", metavar="JSON", help="the payload as JSON (default: null)"
    )
    s.add_argument("--queue", metavar="Q", help="queue (default: the task's)")
    s.add_argument("--delay", type=float, default=0.0, metavar="S", help="start after S seconds")
    s.add_argument("--max-attempts", type=int, metavar="N", help="attempts before it fails")
    s.add_argument("--timeout", type=float, metavar="S", help="time limit of one attempt")
    s.add_argument("--idempotency-key", metavar="KEY", help="the same key again: the same job")
    s.add_argument("--watch", action="store_true", help="follow the job until it finishes")

    w = cmd(
        "watch",
        "follow a job's progress until it finishes",
        "Follow a job until it finishes: a live progress bar on a terminal (current/total, "
        "rate, ETA, latest message, state), else one line per event, or JSON lines with "
        "--json. Reconnects by itself, through a restart of the service, with no gap and no "
        "duplicate. Exits 0 succeeded, 1 failed, 2 cancelled, 3 gone.",
    )
    w.add_argument("job_id", metavar="JOB_ID")
    w.add_argument(
        "--last-event-id", metavar="ID", help="resume after this event id (default: from the start)"
    )

    g = cmd("get", "show a job")
    g.add_argument("job_id", metavar="JOB_ID")

    j = cmd("jobs", "list jobs, newest first")
    j.add_argument("--state", help="queued, scheduled, running, succeeded, failed or cancelled")
    j.add_argument("--task", help="only this task")
    j.add_argument("--queue", help="only this queue")
    j.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (default 20)")

    cmd("queues", "queue figures: queued, running, scheduled, dead, workers")

    c = cmd("cancel", "cancel a job (a running one stops within about a second)")
    c.add_argument("job_id", metavar="JOB_ID")
    r = cmd("retry", "queue a failed or cancelled job again")
    r.add_argument("job_id", metavar="JOB_ID")
    d = cmd("dead", "list a queue's dead letters")
    d.add_argument("queue", metavar="QUEUE")

    sub.add_parser(
        "serve",
        help="run the service (python -m service [--config PATH])",
        add_help=False,
    )
    sub.add_parser(
        "worker",
        help="run workers (python -m workers [--tasks MOD ...] [--processes N] ...)",
        add_help=False,
    )
    return p


# -- output ----------------------------------------------------------------------------------


def _num(v: float | None) -> str:
    if v is None:
        return "?"
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _error_text(error: Any) -> str:
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
            return f"attempt {d.attempt} failed: {_error_text(d.error)}{when}"
        case SucceededEvent():
            return "succeeded, result " + _encode(d.result).decode()
        case FailedEvent():
            return "failed: " + _error_text(d.error)
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


def outcome(ev: WatchEvent | None) -> int:
    """The exit status a watch ends with, from its last event."""
    if ev is None:
        return EXIT_OK
    if isinstance(ev.data, SnapshotEvent):
        return EXIT_BY_STATE.get(ev.data.state or "", EXIT_OK)
    return EXIT_BY_STATE.get(ev.type, EXIT_OK)


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
            return _error_text(d.error)
        case GoneEvent():
            return d.reason
        case SnapshotEvent():
            if d.error is not None and d.state == "failed":
                return _error_text(d.error)
            return "result " + _encode(d.result).decode() if d.state == "succeeded" else ""
    return ""


async def follow(
    client: Client, job_id: str, *, last_event_id: str | None, as_json: bool, tty: bool
) -> int:
    """Follow one job to its end; the exit status its outcome gives."""
    last: WatchEvent | None = None
    out = sys.stdout
    if as_json or not tty:
        async with contextlib.aclosing(client.watch(job_id, last_event_id=last_event_id)) as events:
            async for ev in events:
                last = ev
                line = _encode(ev.data).decode() if as_json else event_line(ev)
                out.write(line + "\n")
                out.flush()
        return outcome(last)
    console = Console()
    with Bar(console, job_id) as bar:

        def reconnecting(reason: str, delay: float) -> None:
            bar.note(f"reconnecting in {delay:.1f}s ({reason})")

        async with contextlib.aclosing(
            client.watch(job_id, last_event_id=last_event_id, on_reconnect=reconnecting)
        ) as events:
            async for ev in events:
                last = ev
                bar.event(ev)
    code = outcome(last)
    if last is not None:
        state = (last.data.state if isinstance(last.data, SnapshotEvent) else last.type) or ""
        style = STATE_STYLE.get(state, "")
        console.print(f"[{style}]{escape(state)}[/]  {escape(job_id)}  {escape(summary(last))}")
    return code


def _job_json(job: Job) -> str:
    return _encode(job).decode()


def _progress_text(job: Job) -> str:
    p = job.progress
    if p.current is None:
        return ""
    text = f"{_num(p.current)}/{_num(p.total)}" if p.total is not None else _num(p.current)
    return text + (f" {p.message}" if p.message else "")


def _print_job(console: Console, job: Job) -> None:
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
        rows.append(("error", _error_text(job.error)))
    for k, v in rows:
        style = STATE_STYLE.get(v, "") if k == "state" else ""
        t.add_row(k, Text(v, style=style))
    console.print(t)


def _jobs_table(jobs: list[Job], *, dead: bool = False) -> Table:
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
            [j.finished_at or "", _error_text(j.error) if j.error is not None else ""]
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


async def run(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("TIDINGS_URL") or DEFAULT_URL
    key = args.api_key or os.environ.get("TIDINGS_API_KEY") or None
    tty = sys.stdout.isatty()
    console = Console()
    out = sys.stdout
    async with Client(url, key) as client:
        match args.command:
            case "submit":
                try:
                    payload = msgspec.json.decode(args.payload.encode())
                except msgspec.DecodeError as e:
                    raise UsageError(f"--payload is not JSON: {e}") from e
                job = await client.submit(
                    args.task,
                    payload,
                    queue=args.queue,
                    delay_s=args.delay,
                    max_attempts=args.max_attempts,
                    timeout_s=args.timeout,
                    idempotency_key=args.idempotency_key,
                )
                if args.watch:
                    if not args.json:
                        if tty:
                            console.print(f"submitted [bold]{job.id}[/] ({escape(job.task)})")
                        else:
                            out.write(job.id + "\n")
                            out.flush()
                    return await follow(
                        client, job.id, last_event_id=None, as_json=args.json, tty=tty
                    )
                if args.json:
                    out.write(_job_json(job) + "\n")
                elif tty:
                    console.print(
                        f"submitted [bold]{job.id}[/] ({escape(job.task)} on "
                        f"{escape(job.queue)}, {job.state}); follow it: tidings watch {job.id}"
                    )
                else:
                    out.write(job.id + "\n")
                return EXIT_OK
            case "watch":
                return await follow(
                    client,
                    args.job_id,
                    last_event_id=args.last_event_id,
                    as_json=args.json,
                    tty=tty,
                )
            case "get":
                job = await client.get(args.job_id)
                if args.json:
                    out.write(_job_json(job) + "\n")
                else:
                    _print_job(console, job)
                return EXIT_OK
            case "jobs" | "dead":
                if args.command == "jobs":
                    if args.limit < 1:
                        raise UsageError("--limit must be at least 1")
                    jobs = await client.jobs(
                        state=args.state, task=args.task, queue=args.queue, limit=args.limit
                    )
                else:
                    jobs = await client.dead(args.queue)
                if args.json:
                    for j in jobs:
                        out.write(_job_json(j) + "\n")
                elif jobs:
                    console.print(_jobs_table(jobs, dead=args.command == "dead"))
                else:
                    console.print("no jobs", style="dim")
                return EXIT_OK
            case "queues":
                queues = await client.queues()
                if args.json:
                    for q in queues:
                        out.write(_encode(q).decode() + "\n")
                    return EXIT_OK
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
                console.print(t if queues else Text("no queues", style="dim"))
                return EXIT_OK
            case "cancel" | "retry":
                if args.command == "cancel":
                    job = await client.cancel(args.job_id)
                    said = "cancelled" if job.state == "cancelled" else "cancellation requested"
                else:
                    job = await client.retry(args.job_id)
                    said = f"queued again ({job.state})"
                if args.json:
                    out.write(_job_json(job) + "\n")
                else:
                    console.print(f"{job.id}: {said}")
                return EXIT_OK
    raise UsageError(f"unknown command {args.command!r}")


def _delegate(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """`tidings serve ...` / `tidings worker ...`: the command and the arguments that follow
    (handed as they are to `python -m service` / `python -m workers`)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--url", "--api-key"):
            i += 2
        elif arg == "--json" or arg.startswith(("--url=", "--api-key=")):
            i += 1
        elif arg in ("serve", "worker"):
            return arg, list(argv[i + 1 :])
        else:
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """The `tidings` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    delegated = _delegate(argv)
    if delegated is not None:
        name, rest = delegated
        if name == "serve":
            from service.__main__ import main as service_main

            return service_main(rest)
        from workers.supervisor import main as workers_main

        return workers_main(rest)
    args = build_parser().parse_args(argv)
    return _run_sync(lambda: run(args))


def _run_sync(make: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return asyncio.run(make())
    except KeyboardInterrupt:
        return 130
    except UsageError as e:
        print(f"tidings: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except JobGone as e:
        print(f"tidings: {e.message}", file=sys.stderr)
        return EXIT_GONE
    except Unreachable as e:
        print(f"tidings: {e.message}", file=sys.stderr)
        return EXIT_ERROR
    except TidingsError as e:
        where = f" at {e.path}" if e.path else ""
        print(f"tidings: {e.message}{where} (HTTP {e.status}, {e.code})", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
