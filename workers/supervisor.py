"""`python -m workers`: the supervisor that starts N worker processes and restarts any that dies,
and the entry point of each worker process (`--child`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import structlog

from service.core import config as config_mod
from service.core import logs
from service.core.procs import Child, Supervisor, child_env

log = structlog.get_logger("tidings.worker")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workers", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="config file (default: $TIDINGS_CONFIG or ./config.toml)")
    p.add_argument("--tasks", nargs="+", help="modules that define tasks (default: workers.tasks)")
    p.add_argument("--processes", type=int, help="worker processes (default: workers.processes)")
    p.add_argument(
        "--concurrency", type=int, help="jobs at once per process (default: workers.concurrency)"
    )
    p.add_argument("--queues", help="comma-separated queues (default: workers.queues)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    # the child's number under its supervisor (0..N-1): its metrics port is workers.metrics_port
    # + index, the same across restarts
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def resolve_url(cfg: config_mod.Config) -> str:
    """The Redis URL; "embedded" attaches to the running embedded server, or stops here with
    one clear line: a worker never starts a second, empty server of its own."""
    if cfg.redis.url != "embedded":
        return cfg.redis.url
    from service.core import embedded  # (imports redis: only when there is one to find)

    try:
        return embedded.discover(cfg)
    except embedded.EmbeddedNotRunning as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cfg = config_mod.load_or_exit(args.config)
    logs.setup(cfg.log, process="worker" if args.child else "workers")
    tasks = args.tasks or cfg.workers.tasks
    queues = (
        [q.strip() for q in args.queues.split(",")] if args.queues else list(cfg.workers.queues)
    )
    url = resolve_url(cfg)
    if args.child:
        concurrency = args.concurrency or cfg.workers.concurrency
        return run_child(cfg, url, tasks, queues, concurrency, index=args.index)
    n = args.processes or cfg.workers.processes
    argv_child = [
        sys.executable,
        "-m",
        "workers",
        "--child",
        "--tasks",
        *tasks,
        "--queues",
        ",".join(queues),
    ]
    if args.concurrency:
        argv_child += ["--concurrency", str(args.concurrency)]
    env = child_env(TIDINGS_REDIS_URL=url)
    if args.config:
        env["TIDINGS_CONFIG"] = os.path.abspath(args.config)
    sup = Supervisor(
        [Child(f"worker-{i}", [*argv_child, "--index", str(i)], env=env) for i in range(n)],
        stop_timeout=cfg.workers.grace_s + 15,
    )
    return sup.run()


def run_child(
    cfg: config_mod.Config,
    url: str,
    tasks: list[str],
    queues: list[str],
    concurrency: int,
    *,
    index: int = 0,
) -> int:
    # the worker's own imports: the supervisor above starts its children without them
    from service.core import tracing
    from workers.registry import REGISTRY, load_modules
    from workers.worker import LoopDied, Worker

    load_modules(tasks)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    code = 0
    spans = tracing.from_env("tidings-worker")

    async def go() -> None:
        nonlocal code
        worker = Worker(
            cfg, url, dict(REGISTRY), queues=queues, concurrency=concurrency, tracing=spans
        )
        if cfg.workers.metrics_port:
            port = cfg.workers.metrics_port + index
            try:
                worker.metrics.serve(cfg.workers.metrics_host, port)
                log.info("worker.metrics", url=f"http://{cfg.workers.metrics_host}:{port}/metrics")
            except OSError as e:
                # the jobs matter more than this process's own figures: run on without them
                log.error("worker.metrics_unavailable", port=port, error=str(e))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        hits = 0

        def on_signal() -> None:
            nonlocal hits
            hits += 1
            stop.set()
            if hits > 1:  # second signal: do not wait for the grace period
                for job in list(worker.running.values()):
                    worker.cancel(job, "shutdown")

        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, on_signal)
        try:
            await worker.run(stop)
        except LoopDied:
            code = 1  # the supervisor starts a fresh process
        finally:
            worker.metrics.close()

    asyncio.run(go())
    spans.shutdown()  # export what is pending before the hard exit below
    sys.stderr.flush()
    sys.stdout.flush()
    # threads of plain-def tasks that overran cannot be killed; do not wait for them
    os._exit(code)
