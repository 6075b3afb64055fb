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
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, NoReturn

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from service.client import DEFAULT_URL, Client, JobGone, Unreachable
from service.core.errors import TidingsError
from service.core.wire import Job, SnapshotEvent, WatchEvent
from service.terminal import (
    STATE_STYLE,
    Bar,
    event_line,
    jobs_table,
    print_job,
    queues_table,
    summary,
)

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED, EXIT_GONE, EXIT_ERROR, EXIT_USAGE = 0, 1, 2, 3, 4, 5
EXIT_BY_STATE: Final[dict[str, int]] = {
    "succeeded": EXIT_OK,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "gone": EXIT_GONE,
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


def outcome(ev: WatchEvent | None) -> int:
    """The exit status a watch ends with, from its last event."""
    if ev is None:
        return EXIT_OK
    if isinstance(ev.data, SnapshotEvent):
        return EXIT_BY_STATE.get(ev.data.state or "", EXIT_OK)
    return EXIT_BY_STATE.get(ev.type, EXIT_OK)


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
                    print_job(console, job)
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
                    console.print(jobs_table(jobs, dead=args.command == "dead"))
                else:
                    console.print("no jobs", style="dim")
                return EXIT_OK
            case "queues":
                queues = await client.queues()
                if args.json:
                    for q in queues:
                        out.write(_encode(q).decode() + "\n")
                    return EXIT_OK
                console.print(queues_table(queues) if queues else Text("no queues", style="dim"))
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
